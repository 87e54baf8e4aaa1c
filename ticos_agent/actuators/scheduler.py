"""The lanes of the actuators and the commands in them: queueing, running, dropping, returns.

Scheduling: every actuator has a lane (a deque of commands). A command is appended to the
lanes of all the actuators it uses and starts when it is at the head of all of them, so the
actuators of one command start together and commands never overtake each other on an
actuator. A running command walks its steps against absolute deadlines on the loop's
monotonic clock (``t0 + step.t``), so timing errors never accumulate. A preempting command
(``wait = false``) drops what runs or waits on its actuators first (status ``dropped``,
reason "preempted") and brings the victims' other actuators, which the new command does not
use, to rest.

An emotion's command ends once the expression is shown; its return to neutral after
``duration`` is a timer per actuator (:attr:`Scheduler.returns`) that starts a low-priority
``return`` command. Any later command on that actuator cancels the timer or drops the running
return (it takes over). Low-priority work (returns, the robot's ``ambient`` work) never waits
behind a command: any later command on its actuators replaces it at once.

``hold(names)`` keeps actuators still (a running command pauses before its next step and its
clock stops) until ``release()``.

Rest and safe state: an interrupted actuator is brought to rest (a light shows the ``neutral``
expression when there is one, anything else gets its safe state); a command that fails puts
its actuators in their safe state. Either forgets the positions it overwrites.

Caps (``[robot]``, see :func:`.lanes.over_caps`): a command that would put too much on an
actuator or too many commands of one response in the lanes is not queued: its outcome is
``busy`` at once and :attr:`Scheduler.busy` counts it.

Everything here runs on the event loop's thread; :class:`~.system.ActuatorSystem` owns the
drivers and their lifecycle and calls in.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import logging
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ..errors import ActuatorError
from .config import ActuatorsConfig
from .driver import Driver
from .lanes import Command, Outcome, over_caps
from .plan import Plan, Step, expression_actuators, neutral_steps, step

log = logging.getLogger(__name__)

STOPPING = "the agent is stopping"  # the reason of what stop() drops


class Scheduler:
    def __init__(self, config: ActuatorsConfig, drivers: Mapping[str, Driver]):
        self.config = config
        self.drivers = drivers
        self.lanes: dict[str, collections.deque[Command]] = {n: collections.deque() for n in drivers}
        self.positions: dict[str, list[float]] = {n: list(a.home) for n, a in config.actuators.items()}
        #: actuator -> (timer, plan, the command that showed the expression): pending returns to neutral
        self.returns: dict[str, tuple[asyncio.TimerHandle, Plan, Command]] = {}
        self.shows_expressions = set(expression_actuators(config))
        self.stopping = False
        self.busy = 0  # commands answered busy (the robot's caps)
        self._held: set[str] = set()
        self._unheld = asyncio.Event()
        self._unheld.set()

    def command(self, kind: str, tag: str, plan: Plan, response_id: str | None, call_id: str | None,
                detail: dict[str, Any]) -> Command:
        detail.update(actuators=plan.actuators, planned_s=round(plan.total, 4), response_id=response_id,
                      call_id=call_id)
        return Command(kind, tag, plan, response_id, call_id, asyncio.get_running_loop().create_future(), detail)

    async def submit(self, cmd: Command, preempt: Callable[[Command], bool] | None) -> Outcome:
        """Queue a call's ``cmd`` (first dropping what ``preempt`` picks on its actuators) and
        wait for its outcome; ``failed`` or ``busy`` at once when it cannot be queued."""
        if self.stopping:
            return Outcome("dropped", STOPPING, cmd.detail)
        down = [self.drivers[n] for n in cmd.plan.actuators if self.drivers[n].state != "ok"]
        if down:
            reason = "; ".join(f"actuator {d.label!r} ({d.name}) is {d.state}: {d.error or 'no detail'}" for d in down)
            log.warning("%s %r failed: %s", cmd.kind, cmd.tag, reason)
            return Outcome("failed", reason, cmd.detail)
        lanes = self._clear_low(cmd)
        if preempt is not None:
            # the victims' actuators this command does not use are brought to rest, not frozen mid-pose
            self.drop_where(lambda c: preempt(c) and lanes.intersection(c.plan.actuators),
                            f"preempted by {cmd.kind} {cmd.tag!r}", rest=True, keep=lanes)
        full = over_caps(self.config, self.lanes, cmd)
        if full is not None:
            self.busy += 1
            log.warning("%s %r answered busy: %s", cmd.kind, cmd.tag, full)
            return Outcome("busy", full, cmd.detail)
        self._queue(cmd)
        try:
            return await asyncio.shield(cmd.future)
        except asyncio.CancelledError:
            self.drop(cmd, "the call was cancelled", rest=True)
            self.pump()
            raise

    async def play_low(self, cmd: Command) -> Outcome:
        """Queue the robot's own ``cmd`` in place of the low-priority work on its actuators (the
        caller made sure no call uses them) and wait for its outcome."""
        self._clear_low(cmd)
        self._queue(cmd)
        return await asyncio.shield(cmd.future)

    def _clear_low(self, cmd: Command) -> set[str]:
        """Make way on ``cmd``'s actuators: a return to neutral pending or running there and the
        robot's own low-priority work end; returns those actuators' names."""
        lanes = set(cmd.plan.actuators)
        for n in lanes:
            self.cancel_return(n)
        self.drop_where(lambda c: c.low and bool(lanes.intersection(c.plan.actuators)),
                        f"replaced by {cmd.kind} {cmd.tag!r}", rest=False)
        return lanes

    def _queue(self, cmd: Command) -> None:
        for n in cmd.plan.actuators:
            self.lanes[n].append(cmd)
        self.pump()

    def stop(self) -> int:
        """No more returns to neutral and no new commands; everything queued or running is
        dropped where it stands. Returns how many commands were dropped."""
        self.stopping = True
        for n in list(self.returns):
            self.cancel_return(n)
        return self.drop_where(lambda c: True, STOPPING, rest=False)

    # --- running ----------------------------------------------------------------------

    def pump(self) -> None:
        """Start every queued command that is at the head of all its lanes."""
        for lane in self.lanes.values():
            if lane:
                cmd = lane[0]
                if cmd.state == "queued" and all(self.lanes[n][0] is cmd for n in cmd.plan.actuators):
                    cmd.state = "running"
                    cmd.task = asyncio.get_running_loop().create_task(self._run(cmd))

    async def _run(self, cmd: Command) -> None:
        loop = asyncio.get_running_loop()
        faults = {n: self.drivers[n].faults for n in cmd.plan.actuators}
        t0 = loop.time()
        heap = list(cmd.plan.steps)
        heapq.heapify(heap)
        late = 0.0
        try:
            while heap:
                s = heapq.heappop(heap)
                while True:  # wait for the step's time; held still meanwhile, its timeline stops
                    if self._held and self._held.intersection(cmd.plan.actuators):
                        paused = loop.time()
                        while self._held.intersection(cmd.plan.actuators):
                            await self._unheld.wait()
                        t0 += loop.time() - paused
                    delay = t0 + s.t - loop.time()
                    if delay <= 0:
                        break
                    await asyncio.sleep(delay)
                late = max(late, loop.time() - (t0 + s.t))
                self._exec(s, heap)
            delay = t0 + cmd.plan.total - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for n, before in faults.items():
                d = self.drivers[n]
                if d.faults != before or d.state != "ok":
                    raise ActuatorError(
                        f"actuator {n!r} ({d.name}) lost its device during the {cmd.kind}: {d.error or d.state}")
            outcome = Outcome("done", None, cmd.detail)
        except Exception as exc:
            if isinstance(exc, ActuatorError):
                log.warning("%s %r failed: %s", cmd.kind, cmd.tag, exc)
                reason = str(exc)
            else:
                log.exception("%s %r failed in a driver", cmd.kind, cmd.tag)
                reason = f"driver error: {type(exc).__name__}: {exc}"
            for n in cmd.plan.actuators:
                self.safe(n)
            outcome = Outcome("failed", reason, cmd.detail)
        cmd.detail.update(elapsed_s=round(loop.time() - t0, 4), late_max_ms=round(late * 1000, 3))
        if outcome.status == "done" and cmd.plan.returns:
            self._schedule_returns(cmd, t0)
        self._finish(cmd, outcome)
        self.pump()

    def _exec(self, s: Step, heap: list[Step]) -> None:
        a = self.config.actuators[s.actuator]
        drv = self.drivers[s.actuator]
        if s.op == "move":
            targets, seconds = s.args
            if a.interpolate and seconds > a.step:
                start = self.positions[s.actuator]
                n = math.ceil(seconds / a.step - 1e-9)
                dt = seconds / n
                for k in range(n, 1, -1):  # later sub-steps go back on the heap
                    heapq.heappush(heap, step(s.t + (k - 1) * dt, s.actuator, "move",
                                              [p + (q - p) * k / n for p, q in zip(start, targets)], 0.0))
                targets, seconds = [p + (q - p) / n for p, q in zip(start, targets)], dt
            drv.move(targets, seconds)
            self.positions[s.actuator] = list(targets)
        elif s.op == "safe":
            drv.safe()
            self.positions[s.actuator] = list(a.home)
        else:
            getattr(drv, s.op)(*s.args)

    def _finish(self, cmd: Command, outcome: Outcome) -> None:
        if cmd.state == "finished":
            return
        cmd.state = "finished"
        for n in cmd.plan.actuators:
            try:
                self.lanes[n].remove(cmd)
            except ValueError:
                pass
        if not cmd.future.done():
            cmd.future.set_result(outcome)

    # --- dropping ---------------------------------------------------------------------

    def drop(self, cmd: Command, reason: str, rest: bool, keep: Collection[str] = (), status: str = "dropped") -> bool:
        """End ``cmd`` as ``status``; with ``rest``, a running one's actuators (except ``keep``) go to rest."""
        if cmd.state == "finished":
            return False
        running = cmd.state == "running"
        if cmd.task is not None and cmd.task is not asyncio.current_task():
            cmd.task.cancel()
        self._finish(cmd, Outcome(status, reason, cmd.detail))
        if rest and running:
            for n in cmd.plan.actuators:
                if n not in keep:
                    self.rest(n)
        # the call's own line (calls.py) gives the outcome, the reason and how long it took
        log.debug("%s %r %s: %s", cmd.kind, cmd.tag, status, reason)
        return True

    def drop_where(self, pred: Callable[[Command], object], reason: str, rest: bool,
                   keep: Collection[str] = ()) -> int:
        """Drop every queued or running command ``pred`` picks; returns how many."""
        victims = {id(c): c for lane in self.lanes.values() for c in lane if pred(c)}
        count = sum(self.drop(c, reason, rest, keep) for c in victims.values())
        return count

    # --- returns to neutral -------------------------------------------------------------

    def _schedule_returns(self, cmd: Command, t0: float) -> None:
        loop = asyncio.get_running_loop()
        for n, (at, plan) in cmd.plan.returns.items():
            if any(c is not cmd for c in self.lanes[n]):
                continue  # something later is already queued on it: that replaces the return
            self.cancel_return(n)
            handle = loop.call_at(t0 + at, self.start_return, n)
            self.returns[n] = (handle, plan, cmd)

    def cancel_return(self, name: str) -> None:
        pending = self.returns.pop(name, None)
        if pending is not None:
            pending[0].cancel()

    def start_return(self, name: str) -> None:
        """Start the pending return to neutral of ``name`` now (its timer fired, or an interrupt)."""
        pending = self.returns.pop(name, None)
        if pending is None or self.stopping:
            return
        handle, plan, origin = pending
        handle.cancel()
        if self.lanes[name] or self.drivers[name].state != "ok":
            return
        detail = {"kind": "return", "tag": origin.tag, "actuators": [name]}
        cmd = Command("return", origin.tag, plan, origin.response_id, origin.call_id,
                      asyncio.get_running_loop().create_future(), detail)
        self.lanes[name].append(cmd)
        self.pump()

    # --- rest, safe state, hold --------------------------------------------------------

    def rest(self, name: str) -> None:
        """Bring an interrupted actuator to rest: a light shows ``neutral`` if there is one, else the safe state."""
        neutral = self.config.emotions.get("neutral")
        if neutral is None or name not in self.shows_expressions or self.config.actuators[name].kind != "light":
            self.safe(name)
            return
        try:
            for s in neutral_steps(self.config, name, neutral):
                self._exec(s, [])
        except ActuatorError as exc:
            log.debug("actuator %s: neutral not shown: %s", name, exc)

    def safe(self, name: str) -> None:
        """Put ``name`` in its safe state; its position is home again."""
        try:
            self.drivers[name].safe()
            self.positions[name] = list(self.config.actuators[name].home)
        except ActuatorError as exc:
            log.debug("actuator %s: safe state not applied: %s", name, exc)

    def hold(self, names: Collection[str]) -> None:
        """Keep ``names`` still until :meth:`release`."""
        self._held = set(names) & set(self.drivers)
        if self._held:
            self._unheld.clear()

    def release(self) -> None:
        self._held = set()
        self._unheld.set()
