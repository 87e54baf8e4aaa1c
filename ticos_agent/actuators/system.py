"""The actuator system: drivers opened in order, one command queue per actuator, outcomes.

Scheduling: every actuator has a lane (a deque of commands). A command is appended to the
lanes of all the actuators it uses and starts when it is at the head of all of them, so the
actuators of one command start together and commands never overtake each other on an
actuator. A running command walks its steps against absolute deadlines on the loop's
monotonic clock (``t0 + step.t``), so timing errors never accumulate. ``wait = false``
drops what runs or waits on its actuators first (status ``dropped``, reason "preempted") and
brings the victims' other actuators, which the new command does not use, to rest.

An emotion's command ends once the expression is shown; its return to neutral after
``duration`` is a timer per actuator that starts a low-priority ``return`` command. Any later
command on that actuator cancels the timer or drops the running return (it takes over).

Safe state: applied at start, at stop, on a fault, and whenever a device comes up later (a
serial port that opens after start, or comes back after an unplug): the driver calls
``on_up`` and the system homes / stops every actuator on it and forgets their positions.
Barge-in rests lights on the ``neutral`` expression when there is one (else off).

The robot's own work (``ambient``: state expressions, idle motions) is low priority: it starts
only on actuators no call is using, and any later command on them replaces it at once.
``hold(names)`` keeps actuators still (a running command pauses before its next step and its
clock stops) until ``release()``: the noisy ones while the user speaks.

Caps (``[robot]``): a command that would put more than ``max_queued`` commands or
``max_queued_seconds`` of planned motion on an actuator, or more than ``max_per_response``
commands of one response in the lanes, is not queued: its outcome is ``busy`` at once. A
flood of calls therefore costs a bounded amount of memory and never delays ``/health``.

Every public method returns an :class:`Outcome` or a plain value; hardware problems become
``failed`` outcomes, never exceptions.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import logging
import math
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from ..errors import ActuatorError, UnknownTag
from ..events import EmotionArgs, MotionArgs
from .config import ActuatorsConfig
from .driver import ActuatorConfig, Driver, DriverContext
from .lanes import Command, Outcome, is_kind, over_caps
from .plan import Plan, Step, expression_actuators, neutral_steps, plan_expression, plan_motion, plan_pose, step
from .registry import driver_class

log = logging.getLogger(__name__)


class ActuatorSystem:
    def __init__(self, config: ActuatorsConfig):
        self.config = config
        self.ctx = DriverContext()
        self.drivers: dict[str, Driver] = {n: self._driver(a) for n, a in config.actuators.items()}
        self.lanes: dict[str, collections.deque[Command]] = {n: collections.deque() for n in self.drivers}
        self.positions: dict[str, list[float]] = {n: list(a.home) for n, a in config.actuators.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._safe_gen: dict[str, int] = {}  # actuator -> device generation its safe state was applied for
        self._returns: dict[str, tuple[asyncio.TimerHandle, Plan, Command]] = {}  # pending returns to neutral
        self._shows_expressions = set(expression_actuators(config))
        self.busy = 0  # calls answered busy (the robot's caps)
        self.not_shown = 0  # emotion calls no actuator could show
        self._held: set[str] = set()
        self._unheld = asyncio.Event()
        self._unheld.set()
        #: called with ``(tag, intensity)`` when an emotion call is shown (the robot's mood follows it)
        self.on_emotion: Callable[[str, float], None] | None = None
        for n, d in self.drivers.items():
            d.on_up = functools.partial(self._device_up, n)

    def _driver(self, a: ActuatorConfig) -> Driver:
        cls = driver_class(a.driver)
        if cls is None:  # a checked config names registered drivers only
            raise ActuatorError(f"actuator {a.name!r}: no driver {a.driver!r} is registered")
        return cls(a, self.ctx)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.config.default_robot:
            log.warning("no [actuators] in the config: running the built-in SIMULATED robot (%s); "
                        "nothing physical moves", ", ".join(self.drivers))
        for name, drv in self.drivers.items():
            for problem in type(drv).check_environment(drv.opts):
                log.warning("actuator %s (%s): %s", name, drv.name, problem)
            try:
                await drv.open()
            except Exception as exc:
                drv.disable(f"{type(exc).__name__}: {exc}")
                log.error("actuator %s (%s): disabled: %s", name, drv.name, drv.error)
                continue
            if drv.state == "ok":
                self._safe_gen[name] = drv.generation
            self._safe(name)
            log.info("actuator %s (%s): %s%s%s", name, drv.name, drv.state, " [simulated]" if drv.simulated else "",
                     f": {drv.error}" if drv.error else "")
        if self.simulated:
            log.warning("SIMULATED actuators (no hardware): %s",
                        ", ".join(n for n, d in self.drivers.items() if d.simulated))
        if self.config.unplayable:
            log.warning("motions no actuator can play (calls naming them are answered unknown): %s",
                        ", ".join(self.config.unplayable))
        unseen = self.unshown_emotions()
        if unseen:
            log.warning("emotions no actuator can show (calls naming them are answered not_shown): %s",
                        ", ".join(unseen))

    def unshown_emotions(self) -> list[str]:
        """Emotion tags of the library that reach no actuator (no light or emotion line, no pose)."""
        if self._shows_expressions:
            return []
        return sorted(t for t, e in self.config.emotions.items() if not e.pose)

    async def stop(self) -> None:
        self._stopping = True
        for n in list(self._returns):
            self._cancel_return(n)
        self._drop_where(lambda c: True, "the agent is stopping", rest=False)
        for name in reversed(list(self.drivers)):
            drv = self.drivers[name]
            self._safe(name)
            try:
                await drv.close()
            except Exception as exc:
                log.warning("actuator %s: close failed: %s", name, exc)
            log.info("actuator %s (%s): closed", name, drv.name)

    # --- calls ------------------------------------------------------------------------

    async def motion(self, args: MotionArgs, *, response_id: str | None = None, call_id: str | None = None) -> Outcome:
        detail = {"kind": "motion", "tag": args.motion_tag, "args": args.as_dict(), "notes": list(args.notes)}
        motion = self.config.motions.get(args.motion_tag)
        if motion is None:
            return self._unknown("motion", args.motion_tag, self.known_motions(), detail)
        plan = plan_motion(self.config, motion, args)
        cmd = self._command("motion", args.motion_tag, plan, response_id, call_id, detail)
        preempt = (lambda c: True) if not args.wait else None
        return await self._submit(cmd, preempt)

    async def emotion(self, args: EmotionArgs, *, response_id: str | None = None,
                      call_id: str | None = None) -> Outcome:
        detail = {"kind": "emotion", "tag": args.emotion_tag, "args": args.as_dict(), "notes": list(args.notes)}
        expr = self.config.emotions.get(args.emotion_tag)
        if expr is None:
            return self._unknown("emotion", args.emotion_tag, self.known_emotions(), detail)
        neutral = self.config.emotions.get("neutral")
        jobs: list[Coroutine[Any, Any, Outcome]] = []
        for kind, plan in (("emotion", plan_expression(self.config, expr, args, neutral)),
                           ("pose", plan_pose(self.config, expr, args, neutral))):
            if plan.actuators:
                cmd = self._command(kind, args.emotion_tag, plan, response_id, call_id, dict(detail))
                jobs.append(self._submit(cmd, functools.partial(is_kind, kind)))
        if not jobs:
            reason = (f"emotion {args.emotion_tag!r} reaches no actuator: no light, no MCU with an emotion line "
                      "and no pose for a servo")
            log.warning("%s", reason)
            self.not_shown += 1
            return Outcome("not_shown", reason, {**detail, "actuators": []})
        outcomes = await asyncio.gather(*jobs)
        if self.on_emotion is not None and any(o.status == "done" for o in outcomes):
            self.on_emotion(args.emotion_tag, args.intensity)
        for status in ("failed", "busy", "dropped"):
            bad = [o for o in outcomes if o.status == status]
            if bad:
                return Outcome(status, "; ".join(o.reason or "" for o in bad), self._merge(detail, outcomes))
        return Outcome("done", None, self._merge(detail, outcomes))

    @staticmethod
    def _merge(detail: dict[str, Any], outcomes: list[Outcome]) -> dict[str, Any]:
        out = dict(detail)
        out["actuators"] = [a for o in outcomes for a in o.detail.get("actuators", [])]
        out["elapsed_s"] = max(o.detail.get("elapsed_s", 0.0) for o in outcomes)
        return out

    def _unknown(self, kind: str, tag: str, known: list[str], detail: dict[str, Any]) -> Outcome:
        reason = str(UnknownTag(kind, tag, known))
        log.warning("%s", reason)
        return Outcome("failed", reason, {**detail, "known": known})

    def _command(self, kind: str, tag: str, plan: Plan, response_id: str | None, call_id: str | None,
                 detail: dict[str, Any]) -> Command:
        detail.update(actuators=plan.actuators, planned_s=round(plan.total, 4), response_id=response_id,
                      call_id=call_id)
        return Command(kind, tag, plan, response_id, call_id, asyncio.get_running_loop().create_future(), detail)

    async def _submit(self, cmd: Command, preempt: Callable[[Command], bool] | None) -> Outcome:
        down = [self.drivers[n] for n in cmd.plan.actuators if self.drivers[n].state != "ok"]
        if down:
            reason = "; ".join(f"actuator {d.label!r} ({d.name}) is {d.state}: {d.error or 'no detail'}" for d in down)
            log.warning("%s %r failed: %s", cmd.kind, cmd.tag, reason)
            return Outcome("failed", reason, cmd.detail)
        lanes = set(cmd.plan.actuators)
        for n in lanes:  # a later command replaces a pending or running return to neutral
            self._cancel_return(n)
        self._drop_where(lambda c: c.low and lanes.intersection(c.plan.actuators),
                         f"replaced by {cmd.kind} {cmd.tag!r}", rest=False, quiet=True)
        if preempt is not None:
            # the victims' actuators this command does not use are brought to rest, not frozen mid-pose
            self._drop_where(lambda c: preempt(c) and lanes.intersection(c.plan.actuators),
                             f"preempted by {cmd.kind} {cmd.tag!r}", rest=True, keep=lanes)
        full = over_caps(self.config, self.lanes, cmd)
        if full is not None:
            self.busy += 1
            log.warning("%s %r answered busy: %s", cmd.kind, cmd.tag, full)
            return Outcome("busy", full, cmd.detail)
        for n in cmd.plan.actuators:
            self.lanes[n].append(cmd)
        self._pump()
        try:
            return await asyncio.shield(cmd.future)
        except asyncio.CancelledError:
            self._drop(cmd, "the call was cancelled", rest=True)
            self._pump()
            raise

    # --- scheduling -------------------------------------------------------------------

    def _pump(self) -> None:
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
                self._safe(n)
            outcome = Outcome("failed", reason, cmd.detail)
        cmd.detail.update(elapsed_s=round(loop.time() - t0, 4), late_max_ms=round(late * 1000, 3))
        if outcome.status == "done" and cmd.plan.returns:
            self._schedule_returns(cmd, t0)
        self._finish(cmd, outcome)
        self._pump()

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

    def _drop(self, cmd: Command, reason: str, rest: bool, keep: Collection[str] = (), status: str = "dropped",
              quiet: bool = False) -> bool:
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
                    self._rest(n)
        log.log(logging.DEBUG if quiet else logging.INFO, "%s %r %s: %s", cmd.kind, cmd.tag, status, reason)
        return True

    def _drop_where(self, pred: Callable[[Command], object], reason: str, rest: bool, keep: Collection[str] = (),
                    quiet: bool = False) -> int:
        victims = {id(c): c for lane in self.lanes.values() for c in lane if pred(c)}
        count = sum(self._drop(c, reason, rest, keep, quiet=quiet) for c in victims.values())
        return count

    # --- returns to neutral -------------------------------------------------------------

    def _schedule_returns(self, cmd: Command, t0: float) -> None:
        loop = asyncio.get_running_loop()
        for n, (at, plan) in cmd.plan.returns.items():
            if any(c is not cmd for c in self.lanes[n]):
                continue  # something later is already queued on it: that replaces the return
            self._cancel_return(n)
            handle = loop.call_at(t0 + at, self._start_return, n)
            self._returns[n] = (handle, plan, cmd)

    def _cancel_return(self, name: str) -> None:
        pending = self._returns.pop(name, None)
        if pending is not None:
            pending[0].cancel()

    def _start_return(self, name: str) -> None:
        pending = self._returns.pop(name, None)
        if pending is None or self._stopping:
            return
        handle, plan, origin = pending
        handle.cancel()
        if self.lanes[name] or self.drivers[name].state != "ok":
            return
        detail = {"kind": "return", "tag": origin.tag, "actuators": [name]}
        cmd = Command("return", origin.tag, plan, origin.response_id, origin.call_id,
                       asyncio.get_running_loop().create_future(), detail)
        self.lanes[name].append(cmd)
        self._pump()

    # --- safe state ---------------------------------------------------------------------

    def _device_up(self, name: str, generation: int) -> None:
        """Loop thread: the device of ``name`` opened (late) or came back: apply its safe state."""
        if self._loop is None or self._stopping or self._safe_gen.get(name) == generation:
            return
        drv = self.drivers[name]
        if drv.state != "ok":
            return
        self._safe_gen[name] = generation
        self._cancel_return(name)
        reason = (f"actuator {name!r} ({drv.name}) lost its device during the command; "
                  "it came back and was put in its safe state")
        for cmd in [c for c in self.lanes[name] if c.state == "running"]:
            self._drop(cmd, reason, rest=True, keep={name}, status="failed")
        log.info("actuator %s (%s): device up (open #%d): applying the safe state", name, drv.name, generation)
        self._safe(name)
        if self._loop is not None:
            self._loop.call_soon(self._pump)

    def _rest(self, name: str) -> None:
        """Bring an interrupted actuator to rest: a light shows ``neutral`` if there is one, else the safe state."""
        neutral = self.config.emotions.get("neutral")
        if neutral is None or name not in self._shows_expressions or self.config.actuators[name].kind != "light":
            self._safe(name)
            return
        try:
            for s in neutral_steps(self.config, name, neutral):
                self._exec(s, [])
        except ActuatorError as exc:
            log.debug("actuator %s: neutral not shown: %s", name, exc)

    def _safe(self, name: str) -> None:
        try:
            self.drivers[name].safe()
            self.positions[name] = list(self.config.actuators[name].home)
        except ActuatorError as exc:
            log.debug("actuator %s: safe state not applied: %s", name, exc)

    # --- immediate controls ------------------------------------------------------------

    def interrupt(self, response_id: str | None = None) -> int:
        """Drop the queued and running commands of ``response_id`` (``None``: all); rest the
        actuators they were moving. Returns how many commands were dropped."""
        reason = "interrupted (barge-in or cancelled response)"
        count = self._drop_where(lambda c: response_id is None or c.response_id == response_id, reason, rest=True)
        for n, (_, _, origin) in list(self._returns.items()):  # a held expression returns to neutral now
            if response_id is None or origin.response_id == response_id:
                self._start_return(n)
        if self._loop is not None:
            self._loop.call_soon(self._pump)
        return count

    async def ambient(self, tag: str, plan: Plan) -> Outcome:
        """Play the robot's own ``plan`` (a state expression, an idle motion) if no call uses its
        actuators; ``skipped`` otherwise. Any later command on them replaces it at once."""
        detail: dict[str, Any] = {"kind": "ambient", "tag": tag}
        if not plan.actuators:
            return Outcome("not_shown", f"{tag!r} reaches no actuator", detail)
        names = set(plan.actuators)
        # an actuator a call uses, or one holding an emotion for its duration, is left alone
        used = sorted(n for n in names if self.drivers[n].state != "ok" or n in self._returns
                      or any(not c.low for c in self.lanes[n]))
        if used or self._stopping:
            return Outcome("skipped", f"in use: {', '.join(used)}" if used else "stopping", detail)
        for n in names:
            self._cancel_return(n)
        self._drop_where(lambda c: c.low and bool(names.intersection(c.plan.actuators)),
                         f"replaced by {tag!r}", rest=False, quiet=True)
        cmd = self._command("ambient", tag, Plan(plan.steps, plan.total, plan.actuators), None, None, detail)
        for n in plan.actuators:
            self.lanes[n].append(cmd)
        self._pump()
        return await asyncio.shield(cmd.future)

    def cut_ambient(self) -> int:
        """Stop the robot's own work now (the user speaks); actuators stay where they are."""
        return self._drop_where(lambda c: c.kind == "ambient", "cut: the user speaks", rest=False, quiet=True)

    def hold(self, names: Collection[str]) -> None:
        """Keep ``names`` still until :meth:`release`."""
        self._held = set(names) & set(self.drivers)
        if self._held:
            self._unheld.clear()

    def release(self) -> None:
        self._held = set()
        self._unheld.set()

    def mouth_level(self, level: float) -> None:
        name = self.config.mouth
        if name is None:
            return
        drv = self.drivers[name]
        if drv.state == "ok":
            try:
                drv.mouth(0.0 if level < 0 else 1.0 if level > 1 else float(level))
            except ActuatorError:
                pass

    # --- introspection ----------------------------------------------------------------

    @property
    def simulated(self) -> bool:
        return any(d.simulated for d in self.drivers.values())

    def health(self) -> dict[str, Any]:
        return {
            "simulated": self.simulated,
            "busy": self.busy,
            "not_shown": self.not_shown,
            "unplayable_motions": list(self.config.unplayable),
            "unshown_emotions": self.unshown_emotions(),
            "actuators": {
                n: {"driver": d.name, "state": d.state, "simulated": d.simulated, "error": d.error,
                    "queued": len(self.lanes[n])}
                for n, d in self.drivers.items()
            },
        }

    def known_motions(self) -> list[str]:
        return sorted(self.config.motions)

    def known_emotions(self) -> list[str]:
        return sorted(self.config.emotions)
