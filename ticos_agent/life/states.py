"""The robot's turn states, its idle life and its mood: the intake's ``RobotLife`` consumer.

States, per connection and for the robot as a whole:

===========  ========================================================================
state        when
===========  ========================================================================
idle         nothing going on
listening    the user speaks (``input_audio_buffer.speech_started``)
thinking     the user stopped (``speech_stopped`` / ``committed``) or a response was created,
             and no response audio yet
speaking     response audio arrives and, with audio on, until the speaker has played it (the
             output clock); with audio off, from the first transcript delta to ``response.done``
sleeping     idle for ``life.sleep_after`` seconds
===========  ========================================================================

The robot's state is the busiest of its connections' (listening > speaking > thinking > idle).
An out-of-band response without audio (``conversation_id: null``, a silent side task such as a
mood check) changes no state: the robot is not saying it.
Each change reaches the ``state`` handlers (``agent.on_state``: ``fn(state, previous)``), the
log (one line), the event log (``robot.state.<state>``) and ``/health``, and shows the
state's look (``[states.NAME]``) as *ambient* work on the actuators: low priority, replaced
by any call, never held up by one, and kept at least ``hold`` seconds so a flickering state
does not strobe the LEDs. While the user speaks, the robot's own work stops at once and the
``noisy`` actuators are held still.

Idle life: while idle (slower, or not at all, while sleeping) an idle motion plays now and
then, at a random interval, faster in a strong mood; each time the idle look is shown again,
coloured by the mood (the last emotion, fading with ``life.mood_half_life``).

Runs on the loop thread; the work it starts goes through ``spawn`` and every timer is
cancelled at stop. State is per open connection (its state, and the one timer waiting for the
speaker to drain its response): both go when it closes, however many connections come and go.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..arguments import EmotionArgs, MotionArgs
from ..connection import Peer
from ..errors import StoreClosed
from ..events import Event, response_id_of
from ..intake import Handler
from .config import MOOD_SHOWN, LifeConfig, StateLook, States
from .mood import Mood

if TYPE_CHECKING:  # the actuator modules load only for a robot: a TicosClient without one never does
    from ..actuators.config import ActuatorsConfig
    from ..actuators.plan import Plan

log = logging.getLogger(__name__)

PRIORITY = {"listening": 3, "speaking": 2, "thinking": 1, "idle": 0}
DRAIN_POLL = 0.05  # seconds between looks at the speaker after response.done


class LifeActuators(Protocol):
    config: ActuatorsConfig

    def ambient(self, tag: str, plan: Plan) -> Coroutine[Any, Any, object]: ...

    def cut_ambient(self) -> int: ...

    def hold(self, names: list[str]) -> None: ...

    def release(self) -> None: ...


class Speaker(Protocol):
    @property
    def playing(self) -> bool: ...


class RobotLife:
    def __init__(self, config: LifeConfig, states: States, *, actuators: LifeActuators | None, audio: Speaker | None,
                 emit: Callable[[str, str], object], record: Callable[[str], None] | None,
                 spawn: Callable[[Coroutine[Any, Any, Any]], object],
                 side_task: Callable[[str | None, str | None], bool], mood_path: Path | None = None,
                 rng: random.Random | None = None):
        self.config, self.states = config, states
        self._actuators, self._audio = actuators, audio
        self._emit, self._record, self._spawn = emit, record, spawn
        self._side_task = side_task  # Turns.side_task: a silent out-of-band response, per session
        self._rng = rng or random.Random()
        self.mood = Mood(config.mood_half_life, mood_path)
        self.state = "idle"
        self._peers: dict[Peer, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._since = 0.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._shown_until = 0.0  # the current look stays until then (its hold)
        self._noisy = [n for n, a in actuators.config.actuators.items() if a.noisy] if actuators else []
        self.changes = 0

    def routes(self) -> Mapping[str, Handler]:
        routes: dict[str, Handler] = {
            "input_audio_buffer.speech_started": self._listening,
            "input_audio_buffer.speech_stopped": self._thinking,
            "input_audio_buffer.committed": self._thinking,
            "response.created": self._response_created,
            "response.audio.delta": self._speaking,
            "response.done": self._response_done,
        }
        if self._audio is None:  # no speaker to follow: the response's words stand for its voice
            routes["response.audio_transcript.delta"] = self._speaking
            routes["response.text.delta"] = self._speaking
        return routes

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._since = self._loop.time()
        self.mood.load()
        self._show("idle")
        self._idle_timers()

    def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.mood.save()

    def felt(self, tag: str, intensity: float) -> None:
        """An emotion was shown (a call): it sets the mood."""
        self.mood.feel(tag, intensity)

    def health(self) -> dict[str, Any]:
        since = self._loop.time() - self._since if self._loop else 0.0
        return {"state": self.state, "for_s": round(since, 1), "changes": self.changes,
                "connections": {p.name: s for p, s in self._peers.items()}, "mood": self.mood.as_dict(),
                "held": list(self._noisy) if self.state == "listening" else []}

    # --- events ---------------------------------------------------------------------------

    def _listening(self, event: Event, peer: Peer) -> None:
        self._set(peer, "listening")

    def _thinking(self, event: Event, peer: Peer) -> None:
        self._set(peer, "thinking")

    def _response_created(self, event: Event, peer: Peer) -> None:
        response = event.data["response"]
        if self._side_task(response["id"], peer.session_id):  # a silent side task: nothing to show
            return
        if self._peers.get(peer, "idle") in ("idle", "thinking"):
            self._set(peer, "thinking")

    def _speaking(self, event: Event, peer: Peer) -> None:  # every audio delta: returns at once mostly
        state = self._peers.get(peer)
        # audio of a response the user talks over is flushed; a silent side task's words are not said
        if state != "speaking" and state != "listening" and \
                not self._side_task(response_id_of(event), peer.session_id):
            self._set(peer, "speaking")

    def _response_done(self, event: Event, peer: Peer) -> None:
        response = event.data["response"]
        if self._side_task(response["id"], peer.session_id):
            return  # a silent side task's end: the robot goes on as it was
        if self._peers.get(peer) == "listening":
            return
        if self._audio is not None and self._audio.playing:
            self._after(DRAIN_POLL, f"drain:{peer.id}", lambda: self._response_done(event, peer))
            return
        self._set(peer, "idle")

    def peer_closed(self, peer: Peer) -> None:
        # its response's drain is not waited for any more: it would set the gone peer idle again
        self._cancel(f"drain:{peer.id}")
        if self._peers.pop(peer, None) is not None:
            self._update()

    # --- states ---------------------------------------------------------------------------

    def _set(self, peer: Peer, state: str) -> None:
        if self._peers.get(peer) == state:  # every audio delta says "speaking": nothing changes
            return
        self._peers[peer] = state
        self._update()

    def _update(self, sleeping: bool = False) -> None:
        state = max(self._peers.values(), key=PRIORITY.__getitem__, default="idle")
        if state == "idle" and (sleeping or self.state == "sleeping"):
            state = "sleeping"
        if state == self.state or self._loop is None:
            return
        previous, self.state = self.state, state
        self._since = self._loop.time()
        self.changes += 1
        log.info("robot: %s -> %s", previous, state)
        if self._record is not None:
            try:
                self._record(f"robot.state.{state}")
            except StoreClosed as exc:  # the agent stopping with a socket still open: expected
                self._record = None
                log.warning("%s; robot states are not logged from now on (first not logged: %s)", exc, state)
        self._emit(state, previous)
        if self._actuators is not None:
            if state == "listening":
                self._actuators.cut_ambient()  # the user speaks: the robot's own work stops now
                if self._noisy:
                    self._actuators.hold(self._noisy)
            elif previous == "listening":
                self._actuators.release()
            elif previous in ("idle", "sleeping"):
                self._actuators.cut_ambient()
        self._show(state)
        self._idle_timers()

    def _idle_timers(self) -> None:
        """After a change of state: the way to sleep starts again, and so does idle life."""
        self._cancel("sleep")
        if self.state == "idle" and self.config.sleep_after > 0:
            self._after(self.config.sleep_after, "sleep", lambda: self._update(sleeping=True))
        self._idle_timer()

    def _idle_timer(self) -> None:
        self._cancel("idle")
        if self.state in ("idle", "sleeping") and self.config.idle_motions:
            if self.state == "sleeping" and self.config.sleeping == "stop":
                return
            least, most = self.config.idle_every
            wait = self._rng.uniform(least, most) * (3 if self.state == "sleeping" else 1)
            self._after(wait, "idle", self._idle_motion)

    def _after(self, seconds: float, name: str, fn: Callable[[], None]) -> None:
        if self._loop is None:
            return
        self._cancel(name)

        def fire() -> None:
            self._timers.pop(name, None)
            fn()

        self._timers[name] = self._loop.call_later(seconds, fire)

    def _cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    # --- what the robot shows ---------------------------------------------------------------

    def _show(self, state: str) -> None:
        """Show ``state``'s look now, or once the current look's hold is over."""
        if self._actuators is None or self._loop is None:
            return
        wait = self._shown_until - self._loop.time()
        if wait > 0:
            self._after(wait, "show", lambda: self._show(self.state))
            return
        work = self._look(state)
        if work is None:
            return
        tag, plan, hold = work
        self._shown_until = self._loop.time() + hold
        self._spawn(self._actuators.ambient(tag, plan))

    def _look(self, state: str) -> tuple[str, Plan, float] | None:
        from ..actuators.plan import restrict

        assert self._actuators is not None
        cfg = self._actuators.config
        look = self.states.look(state)
        mood = self.mood.level()
        coloured = look is None or bool(look.emotion)  # a motion or a pose is shown as configured
        if state in ("idle", "sleeping") and self.mood.tag in cfg.emotions and mood >= MOOD_SHOWN and coloured:
            names = look.actuators if look is not None else []
            plan = self._emotion_plan(cfg, self.mood.tag or "", mood * (0.5 if state == "sleeping" else 1.0))
            return f"mood {self.mood.tag}", restrict(plan, names), look.hold if look else 0.5
        if look is None:
            return None
        return f"state {state}", restrict(self._plan(cfg, state, look), look.actuators), look.hold

    def _plan(self, cfg: ActuatorsConfig, state: str, look: StateLook) -> Plan:
        from ..actuators.library import Expression
        from ..actuators.plan import plan_motion, plan_pose

        if look.emotion:
            return self._emotion_plan(cfg, look.emotion, look.intensity)
        if look.motion:
            return plan_motion(cfg, cfg.motions[look.motion], MotionArgs(look.motion))
        pose = Expression(f"state:{state}", pose={n: tuple(v) for n, v in look.pose.items()})
        return plan_pose(cfg, pose, EmotionArgs(f"state:{state}", look.intensity), None)

    @staticmethod
    def _emotion_plan(cfg: ActuatorsConfig, tag: str, intensity: float) -> Plan:
        from ..actuators.plan import Plan, plan_expression, plan_pose

        expr, args = cfg.emotions[tag], EmotionArgs(tag, intensity)
        lights = plan_expression(cfg, expr, args, None)
        pose = plan_pose(cfg, expr, args, None)
        return Plan(sorted(lights.steps + pose.steps), max(lights.total, pose.total),
                    list(dict.fromkeys(lights.actuators + pose.actuators)))

    def _idle_motion(self) -> None:
        if self._actuators is None or self.state not in ("idle", "sleeping"):
            return
        from ..actuators.plan import plan_motion

        cfg = self._actuators.config
        tag = self._rng.choice(self.config.idle_motions)
        speed = (1.0 + self.config.mood_speed * self.mood.level()) * (0.5 if self.state == "sleeping" else 1.0)
        plan = plan_motion(cfg, cfg.motions[tag], MotionArgs(tag, speed=max(0.1, speed)))
        self._spawn(self._actuators.ambient(f"idle {tag}", plan))
        self._show(self.state)  # the idle look again, as the mood has faded since
        self._idle_timer()
