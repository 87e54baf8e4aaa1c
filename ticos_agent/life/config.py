"""``[life]`` and ``[states.NAME]``: how the robot looks alive between and around turns.

::

    [life]
    sleep_after = 300.0          # idle seconds before the robot is sleeping (0: never)
    idle_motions = ["breathe"]   # played now and then while idle, never while listening or speaking
    idle_every = [8.0, 20.0]     # seconds between idle motions, drawn at random in this range
    sleeping = "slow"            # idle life while sleeping: "slow" (3 x the interval, half speed) or "stop"
    mood_half_life = 600.0       # seconds for the mood left by the last emotion to halve
    mood_speed = 0.3             # a full mood plays idle motions up to this much faster

    [states.listening]           # one table per state: idle, listening, thinking, speaking, sleeping
    emotion = "curious"          # an emotion tag shown while in this state, or
    motion = ""                  # a motion tag played when the state begins, or
    pose = {}                    # a pose: actuator name = degrees
    actuators = ["face"]         # only these actuators (default: every one the expression reaches)
    intensity = 1.0
    hold = 0.5                   # the expression stays at least this long (no strobing on flicker)

A state with no table (or an empty one) shows nothing of its own. In ``idle`` (and
``sleeping``) a lasting mood colours what is shown: the mood's emotion at its current level,
when it is stronger than ``MOOD_SHOWN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..options import (
    Choice,
    Duration,
    Errors,
    Float,
    List,
    Map,
    String,
    did_you_mean,
    parse_table,
    schema_of,
    setting,
)

if TYPE_CHECKING:
    from ..actuators.config import ActuatorsConfig

STATES = ("idle", "listening", "thinking", "speaking", "sleeping")
MOOD_SHOWN = 0.1  # a mood weaker than this no longer colours the idle expression


@dataclass(frozen=True)
class LifeConfig:
    """``[life]``: idle life, sleep and a mood that lasts."""

    sleep_after: float = setting(Duration(300.0, "idle seconds before the robot is sleeping (0: never)",
                                          minimum=0, maximum=86400))
    idle_motions: list[str] = setting(List(String(nonempty=True), [], "motion tags played now and then while "
                                           "idle (never while listening or speaking)", min_items=0))
    idle_every: list[float] = setting(List(Duration(minimum=0.05, maximum=3600), [8.0, 20.0],
                                           "seconds between idle motions: [least, most], drawn at random",
                                           min_items=2, max_items=2))
    sleeping: str = setting(Choice(("slow", "stop"), "slow", "idle life while sleeping: slow (3 x the interval, "
                                   "half speed) or stop"))
    mood_half_life: float = setting(Duration(600.0, "seconds for the mood left by the last emotion to halve",
                                             minimum=1, maximum=7 * 86400))
    mood_speed: float = setting(Float(0.3, "a full mood plays idle motions up to this much faster",
                                      minimum=0, maximum=2))


@dataclass(frozen=True)
class StateLook:
    """``[states.NAME]``: what the robot shows in one state."""

    emotion: str = setting(String("", "an emotion tag shown while in this state", optional=True))
    motion: str = setting(String("", "or a motion tag played when the state begins", optional=True))
    pose: dict[str, tuple[float, ...]] = setting(Map(List(Float()), {}, "or a pose: actuator name = degrees "
                                                     "(one per channel)", what="actuator"))
    actuators: list[str] = setting(List(String(nonempty=True), [], "only these actuators (default: every one "
                                        "the expression reaches)", min_items=0))
    intensity: float = setting(Float(1.0, "intensity of the emotion or amplitude of the pose", minimum=0, maximum=1))
    hold: float = setting(Duration(0.5, "the expression stays at least this long (no strobing when a state "
                                        "flickers)", minimum=0, maximum=60))

    @property
    def empty(self) -> bool:
        return not (self.emotion or self.motion or self.pose)


LOOK = schema_of(StateLook)


@dataclass(frozen=True)
class States:
    looks: dict[str, StateLook] = field(default_factory=dict)

    def look(self, state: str) -> StateLook | None:
        look = self.looks.get(state)
        return None if look is None or look.empty else look

    def as_dict(self) -> dict[str, Any]:
        from ..options import dump_table

        return {name: dump_table(look, LOOK) for name, look in self.looks.items()}


def parse_states(doc: object, actuators: ActuatorsConfig | None, life: LifeConfig | None, errors: Errors, *,
                 against_library: bool = True) -> States:
    """Check ``[states.*]`` (and ``life.idle_motions``) against the robot's library and actuators.
    ``against_library=False`` (the library itself has errors): the tables' own keys and values
    only, not whether their tags and poses are in the library."""
    raw = doc.get("states", {}) if isinstance(doc, dict) else {}
    if not isinstance(raw, dict):
        errors.add("states", raw, "a table of [states.NAME] tables, NAME one of " + ", ".join(STATES))
        return States()
    looks: dict[str, StateLook] = {}
    for name, table in raw.items():
        if name not in STATES:
            errors.add(f"states.{name}", "[table]", "one of " + ", ".join(STATES) + did_you_mean(name, STATES))
            continue
        values = parse_table(f"states.{name}", table, LOOK, errors)
        look = StateLook(**values)
        _check(f"states.{name}", look, actuators if against_library else None, errors, against_library)
        looks[name] = look
    if life is not None and actuators is not None and against_library:
        for i, tag in enumerate(life.idle_motions):
            if tag not in actuators.motions:
                errors.add(f"life.idle_motions[{i}]", tag, "a motion tag this robot can play: "
                           + ", ".join(sorted(actuators.motions)) + did_you_mean(tag, actuators.motions))
    return States(looks)


def _check(key: str, look: StateLook, actuators: ActuatorsConfig | None, errors: Errors,
           against_library: bool = True) -> None:
    given = [k for k in ("emotion", "motion", "pose") if getattr(look, k)]
    if len(given) > 1:
        errors.add(key, ", ".join(given), "one of emotion, motion or pose, not several")
    if actuators is None:
        if given and against_library:
            errors.add(key, ", ".join(given), "an [actuators] section (this config drives no robot)")
        return
    if look.emotion and look.emotion not in actuators.emotions:
        errors.add(f"{key}.emotion", look.emotion, "an emotion tag: " + ", ".join(sorted(actuators.emotions))
                   + did_you_mean(look.emotion, actuators.emotions))
    if look.motion and look.motion not in actuators.motions:
        errors.add(f"{key}.motion", look.motion, "a motion tag this robot can play: "
                   + ", ".join(sorted(actuators.motions)) + did_you_mean(look.motion, actuators.motions))
    for name, target in look.pose.items():
        a = actuators.actuators.get(name)
        if a is None or not a.follows_keyframes:
            movable = sorted(n for n, x in actuators.actuators.items() if x.follows_keyframes)
            errors.add(f"{key}.pose.{name}", name, "an actuator that moves to positions: "
                       + (", ".join(movable) or "(none)") + did_you_mean(name, movable))
        elif len(target) != a.channels:
            errors.add(f"{key}.pose.{name}", list(target), f"{a.channels} value(s), degrees")
    for i, name in enumerate(look.actuators):
        if name not in actuators.actuators:
            errors.add(f"{key}.actuators[{i}]", name, "an actuator name: " + ", ".join(actuators.actuators)
                       + did_you_mean(name, actuators.actuators))
