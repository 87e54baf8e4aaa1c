"""The actuator system: drivers opened in order, calls turned into commands, outcomes.

Calls: ``motion`` and ``emotion`` plan their steps (:mod:`.plan`) and hand the commands to the
:class:`~.scheduler.Scheduler`, which queues, runs and drops them (see it for the lanes, the
returns to neutral, holding still and the caps). A motion with ``wait = false`` preempts
everything on its actuators; an emotion's expression preempts an earlier expression on its
actuators, its pose an earlier pose.

Safe state: applied at start, at stop, on a fault, and whenever a device comes up later (a
serial port that opens after start, or comes back after an unplug): the driver calls
``on_up`` and the system homes / stops every actuator on it and forgets their positions.
The agent's stop begins with :meth:`halt` (every command dropped, "the agent is stopping",
and the safe state at once); :meth:`stop` then closes the drivers without sending it again,
except to an actuator told something since (the mouth, while the speaker drains).
Barge-in rests lights on the ``neutral`` expression when there is one (else off).

The robot's own work (``ambient``: state expressions, idle motions) is low priority: it starts
only on actuators no call is using, and any later command on them replaces it at once.
``hold(names)`` keeps actuators still until ``release()``: the noisy ones while the user speaks.

Caps (``[robot]``): a command that would put more than ``max_queued`` commands or
``max_queued_seconds`` of planned motion on an actuator, or more than ``max_per_response``
commands of one response in the lanes, is not queued: its outcome is ``busy`` at once. A
flood of calls therefore costs a bounded amount of memory and never delays ``/health``.

Every public method returns an :class:`Outcome` or a plain value; hardware problems become
``failed`` outcomes, never exceptions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from ..arguments import EmotionArgs, MotionArgs
from ..call_needs import INTERRUPTED
from ..errors import ActuatorError, UnknownTag
from .config import ActuatorsConfig
from .driver import ActuatorConfig, Driver, DriverContext
from .lanes import Outcome, is_kind
from .plan import Plan, plan_expression, plan_motion, plan_pose
from .registry import driver_class
from .scheduler import Scheduler

log = logging.getLogger(__name__)


class ActuatorSystem:
    def __init__(self, config: ActuatorsConfig):
        self.config = config
        self.ctx = DriverContext()
        self.drivers: dict[str, Driver] = {n: self._driver(a) for n, a in config.actuators.items()}
        self.scheduler = Scheduler(config, self.drivers)
        self.lanes = self.scheduler.lanes
        self.positions = self.scheduler.positions
        self._loop: asyncio.AbstractEventLoop | None = None
        self._safe_gen: dict[str, int] = {}  # actuator -> device generation its safe state was applied for
        # actuators halt() made safe (with their device's generation then) and nothing has told anything since
        self._at_rest: dict[str, int] = {}
        self.not_shown = 0  # emotion calls no actuator could show
        #: called with ``(tag, intensity)`` when an emotion call is shown (the robot's mood follows it)
        self.on_emotion: Callable[[str, float], None] | None = None
        for n, d in self.drivers.items():
            d.on_up = functools.partial(self._device_up, n)

    def _driver(self, a: ActuatorConfig) -> Driver:
        cls = driver_class(a.driver)
        if cls is None:  # a checked config names registered drivers only
            raise ActuatorError(f"actuator {a.name!r}: no driver {a.driver!r} is registered")
        return cls(a, self.ctx)

    @property
    def busy(self) -> int:
        """Calls answered busy (the robot's caps)."""
        return self.scheduler.busy

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
            self.scheduler.safe(name)
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
        if self.scheduler.shows_expressions:
            return []
        return sorted(t for t, e in self.config.emotions.items() if not e.pose)

    def halt(self) -> int:
        """The agent is stopping: every queued and running command ends ``dropped`` ("the agent
        is stopping", not an interruption: nobody talked over the robot), no return to neutral
        follows, and every actuator gets its safe state now, once. Returns how many commands
        were dropped."""
        count = self.scheduler.stop()
        for name, drv in self.drivers.items():
            if self._at_rest.get(name) != drv.generation:  # (a second halt sends nothing again)
                self.scheduler.safe(name)
                if drv.state == "ok":  # one that is down got nothing: its coming back or stop() does it
                    self._at_rest[name] = drv.generation
        return count

    async def stop(self) -> None:
        self.scheduler.stop()
        for name in reversed(list(self.drivers)):
            drv = self.drivers[name]
            if self._at_rest.get(name) != drv.generation:  # not made safe since, or its device came back
                self.scheduler.safe(name)
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
        cmd = self.scheduler.command("motion", args.motion_tag, plan, response_id, call_id, detail)
        preempt = (lambda c: True) if not args.wait else None
        return await self.scheduler.submit(cmd, preempt)

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
                cmd = self.scheduler.command(kind, args.emotion_tag, plan, response_id, call_id, dict(detail))
                jobs.append(self.scheduler.submit(cmd, functools.partial(is_kind, kind)))
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

    # --- safe state ---------------------------------------------------------------------

    def _device_up(self, name: str, generation: int) -> None:
        """Loop thread: the device of ``name`` opened (late) or came back: apply its safe state."""
        if self._loop is None or self._safe_gen.get(name) == generation:
            return
        drv = self.drivers[name]
        if drv.state != "ok":
            return
        self._safe_gen[name] = generation
        if self.scheduler.stopping:  # nothing runs any more: only the safe state, once
            log.info("actuator %s (%s): device up (open #%d) while stopping: applying the safe state", name,
                     drv.name, generation)
            self.scheduler.safe(name)
            self._at_rest[name] = generation
            return
        self.scheduler.cancel_return(name)
        reason = (f"actuator {name!r} ({drv.name}) lost its device during the command; "
                  "it came back and was put in its safe state")
        for cmd in [c for c in self.lanes[name] if c.state == "running"]:
            self.scheduler.drop(cmd, reason, rest=True, keep={name}, status="failed")
        log.info("actuator %s (%s): device up (open #%d): applying the safe state", name, drv.name, generation)
        self.scheduler.safe(name)
        if self._loop is not None:
            self._loop.call_soon(self.scheduler.pump)

    # --- immediate controls ------------------------------------------------------------

    def interrupt(self, response_id: str | None = None) -> int:
        """Drop the queued and running commands of ``response_id`` (``None``: all); rest the
        actuators they were moving. Returns how many commands were dropped."""
        reason = INTERRUPTED
        count = self.scheduler.drop_where(lambda c: response_id is None or c.response_id == response_id, reason,
                                          rest=True)
        for n, (_, _, origin) in list(self.scheduler.returns.items()):  # a held expression returns to neutral now
            if response_id is None or origin.response_id == response_id:
                self.scheduler.start_return(n)
        if self._loop is not None:
            self._loop.call_soon(self.scheduler.pump)
        return count

    async def ambient(self, tag: str, plan: Plan) -> Outcome:
        """Play the robot's own ``plan`` (a state expression, an idle motion) if no call uses its
        actuators; ``skipped`` otherwise. Any later command on them replaces it at once."""
        detail: dict[str, Any] = {"kind": "ambient", "tag": tag}
        if not plan.actuators:
            return Outcome("not_shown", f"{tag!r} reaches no actuator", detail)
        names = set(plan.actuators)
        # an actuator a call uses, or one holding an emotion for its duration, is left alone
        used = sorted(n for n in names if self.drivers[n].state != "ok" or n in self.scheduler.returns
                      or any(not c.low for c in self.lanes[n]))
        if used or self.scheduler.stopping:
            return Outcome("skipped", f"in use: {', '.join(used)}" if used else "stopping", detail)
        cmd = self.scheduler.command("ambient", tag, Plan(plan.steps, plan.total, plan.actuators), None, None,
                                     detail)
        return await self.scheduler.play_low(cmd)

    def cut_ambient(self) -> int:
        """Stop the robot's own work now (the user speaks); actuators stay where they are."""
        return self.scheduler.drop_where(lambda c: c.kind == "ambient", "cut: the user speaks", rest=False)

    def hold(self, names: Collection[str]) -> None:
        """Keep ``names`` still until :meth:`release` (a running command pauses before its next step)."""
        self.scheduler.hold(names)

    def release(self) -> None:
        self.scheduler.release()

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
            self._at_rest.pop(name, None)

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
