"""``[robot]``, ``[actuators.*]``, ``[motions.*]``, ``[emotions.*]`` -> :class:`ActuatorsConfig`.

One actuator is one table; the keys every actuator understands are :data:`COMMON`, the rest
belong to its driver (the driver class's ``options``)::

    [actuators.head]
    driver = "feetech-sts"     # see ticos_agent/actuators/drivers/, or an installed plug-in
    role = "head"              # which library tracks it plays (default: its name)
    port = "/dev/serial/by-id/usb-1a86_USB_Single_Serial-if00"
    baud = 1000000
    ids = [1, 2]
    min = [-90, -30]           # degrees, one per channel (or one number for all)
    max = [90, 30]
    home = [0, 0]              # the safe state

What an actuator can do comes from its driver's capabilities (``kind_for``, ``channels``,
``limits_for``, ``follows_keyframes``, ``shows_expressions``, ``played_motions``; see
:mod:`.driver`), never from the driver's name. Without an ``[actuators]`` section the robot is
:data:`SIMULATED_ROBOT`: real drivers on a virtual port or mock pins, wired to the default
library. Every problem, in every actuator, motion and emotion, is reported in one pass as a
:class:`~ticos_agent.errors.ConfigError` naming the dotted key, the bad value and what is
allowed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..options import (
    DERIVED,
    Boolean,
    Duration,
    Errors,
    Integer,
    Invalid,
    Option,
    String,
    did_you_mean,
    dump_table,
    parse_table,
    setting,
)
from .driver import NOISY, STEP, ActuatorConfig, DriverOptions
from .library import Degrees, Expression, Motion, parse_library
from .registry import FAILED, available, driver_class


class DriverName(Option):
    """The name of a driver: built in, or a plug-in from the ``ticos_agent.drivers`` entry points."""

    def describe(self) -> str:
        return "one of " + ", ".join(repr(n) for n in available())

    def convert(self, value: Any) -> str:
        if not isinstance(value, str) or driver_class(value) is None:
            hint = did_you_mean(value, available())
            if isinstance(value, str) and value in FAILED:
                hint += f" (the plug-in {value!r} is installed but failed to load: {FAILED[value]})"
            raise Invalid(hint)
        return value


#: The keys every actuator has (its driver's ``options`` add the rest).
COMMON: dict[str, Option] = {
    "driver": DriverName(doc="what runs it: a driver of ticos_agent/actuators/drivers/ or an installed plug-in"),
    "role": String(DERIVED, "which library tracks it plays: head, arm, face, mouth ... (default: its name)",
                   nonempty=True),
    "min": Degrees(DERIVED, "lowest target, degrees: one number or one per channel (default: the driver's)"),
    "max": Degrees(DERIVED, "highest target, degrees: one number or one per channel (default: the driver's)"),
    "home": Degrees(DERIVED, "the safe state, degrees, from min to max (default: the driver's)"),
    "interpolate": Boolean(DERIVED, "send keyframes in steps (default: true when the hardware takes no move time)"),
    "step": STEP,
    "noisy": NOISY,
}
#: Common keys that only servos (not lights) have.
SERVO_KEYS = ("min", "max", "home", "interpolate", "step")

MOUTH = String(None, 'the actuator that shows the audio\'s loudness (default: "mouth" on the simulated robot)',
               optional=True)
DEFAULT_LIBRARY = Boolean(True, "start from the shipped motions and emotions (false: only the config's)")
NAME = String("", "a name for this robot (informational)")
MAX_QUEUED = Integer(16, "commands waiting or running on one actuator at most; more are answered busy",
                     minimum=1, maximum=1000)
MAX_PER_RESPONSE = Integer(32, "commands of one response waiting or running at most; more are answered busy",
                           minimum=1, maximum=1000)
MAX_QUEUED_SECONDS = Duration(120.0, "planned seconds of motion waiting or running on one actuator at most; "
                                     "a call that would pass it is answered busy", minimum=1, maximum=3600)
#: ``[robot]``
ROBOT: dict[str, Option] = {"mouth": MOUTH, "default_library": DEFAULT_LIBRARY, "name": NAME,
                            "max_queued": MAX_QUEUED, "max_per_response": MAX_PER_RESPONSE,
                            "max_queued_seconds": MAX_QUEUED_SECONDS}

#: The robot a laptop gets with no config file: real drivers on simulated devices.
SIMULATED_ROBOT: dict[str, dict[str, Any]] = {
    "head": {"driver": "feetech-sts", "port": "loop://", "ids": [1, 2],
             "min": [-90, -30], "max": [90, 30], "home": [0, 0]},
    "arm": {"driver": "maestro", "port": "loop://", "channels": [0], "min": -10, "max": 90, "home": 0},
    "face": {"driver": "gpio-rgbled", "red": 17, "green": 27, "blue": 22, "pin_factory": "mock"},
    "mouth": {"driver": "gpio-pwmled", "pin": 18, "pin_factory": "mock"},
}


@dataclass(frozen=True)
class ActuatorsConfig:
    actuators: dict[str, ActuatorConfig] = field(default_factory=dict)
    motions: dict[str, Motion] = field(default_factory=dict)
    emotions: dict[str, Expression] = field(default_factory=dict)
    mouth: str | None = setting(MOUTH)
    default_robot: bool = False
    default_library: bool = setting(DEFAULT_LIBRARY)
    name: str = setting(NAME)
    max_queued: int = setting(MAX_QUEUED)
    max_per_response: int = setting(MAX_PER_RESPONSE)
    max_queued_seconds: float = setting(MAX_QUEUED_SECONDS)
    #: library motions no actuator of this robot can play (left out of ``motions``)
    unplayable: tuple[str, ...] = ()

    @property
    def simulated(self) -> bool:
        return any(a.simulated for a in self.actuators.values())

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        """``robot``, ``actuators``, ``motions`` and ``emotions`` as TOML data that loads back to
        the same robot (motions a device plays itself come from its actuator's options)."""
        return {
            "robot": dump_table(self, ROBOT),
            "actuators": {n: a.as_dict(mask_secrets=mask_secrets) for n, a in self.actuators.items()},
            "motions": {t: m.as_dict() for t, m in sorted(self.motions.items()) if m.tracks or m.description},
            "emotions": {t: e.as_dict() for t, e in sorted(self.emotions.items())},
        }


def parse_actuators_config(doc: dict[str, Any]) -> ActuatorsConfig:
    """Validate the ``robot``, ``actuators``, ``motions`` and ``emotions`` sections of ``doc``.

    Raises :class:`~ticos_agent.errors.ConfigErrors` (a ``ConfigError``) naming every problem."""
    errors = Errors()
    config = parse_actuators(doc, errors)
    errors.raise_if_any("the robot config")
    return config


def parse_actuators(doc: object, errors: Errors) -> ActuatorsConfig:
    """The robot sections of ``doc``, every problem reported into ``errors``."""
    if not isinstance(doc, dict):
        errors.add("(document)", doc, "a TOML document (a table)")
        return ActuatorsConfig()
    robot_table = doc.get("robot", {})
    robot = parse_table("robot", robot_table, ROBOT, errors)
    default_robot = "actuators" not in doc
    raw = copy.deepcopy(SIMULATED_ROBOT) if default_robot else doc["actuators"]
    if not isinstance(raw, dict):
        errors.add("actuators", raw, "a table of [actuators.NAME] tables")
        raw = {}
    actuators: dict[str, ActuatorConfig] = {}
    unresolved: set[str] = set()  # names and roles of broken actuators: references to them are not errors too
    checked: dict[str, DriverOptions] = {}  # name -> options that passed their checks (even if its limits did not)
    for name, table in raw.items():
        a = parse_actuator(str(name), table, errors, checked)
        if a is not None:
            actuators[str(name)] = a
        else:
            unresolved.add(str(name))
            if isinstance(table, dict) and isinstance(table.get("role"), str):
                unresolved.add(table["role"])
    _check_shared_ports(checked, errors)

    given_mouth = isinstance(robot_table, dict) and "mouth" in robot_table
    mouth = robot["mouth"] if given_mouth else ("mouth" if default_robot else None)
    if mouth is not None and not errors.touched("robot.mouth") and mouth not in actuators and mouth not in unresolved:
        errors.add("robot.mouth", mouth, "the name of a configured actuator: " + (", ".join(actuators) or "(none)")
                   + did_you_mean(mouth, actuators))

    motions, emotions, user_m, user_e = parse_library(doc, robot["default_library"], errors)
    resolved_m: dict[str, Motion] = {}
    for tag, m in motions.items():
        r = _resolve_motion(m, actuators, tag in user_m, errors, unresolved)
        if r.tracks:
            resolved_m[tag] = r
    for name, a in actuators.items():  # tags a device plays itself
        for tag, seconds in driver_class(a.driver).played_motions(a.options).items():  # type: ignore[union-attr]
            m = resolved_m.get(tag) or Motion(tag, description=motions[tag].description if tag in motions else None)
            resolved_m[tag] = Motion(tag, m.tracks, {**m.played, name: seconds}, m.description)
    for tag in sorted(user_m):  # a description alone describes a tag a device plays itself
        given = motions.get(tag)
        if given is not None and not given.tracks and tag not in resolved_m:
            errors.add(f"motions.{tag}", given.as_dict(), "keyframes per actuator (or role): [motions.TAG] replaces "
                       "the shipped entry, and a description alone is for a tag an actuator plays itself")
    resolved_e = {t: _resolve_expression(e, actuators, t in user_e, errors, unresolved) for t, e in emotions.items()}
    unplayable = tuple(sorted(t for t in motions if t not in resolved_m))
    return ActuatorsConfig(actuators, resolved_m, resolved_e, mouth, default_robot, robot["default_library"],
                           robot["name"], robot["max_queued"], robot["max_per_response"],
                           robot["max_queued_seconds"], unplayable)


def parse_actuator(name: str, table: Any, errors: Errors,
                   checked: dict[str, DriverOptions] | None = None) -> ActuatorConfig | None:
    """One ``[actuators.NAME]`` table; ``None`` (with the problems in ``errors``) when broken.
    Its driver options, once they pass their checks, are also put in ``checked[name]``."""
    key = f"actuators.{name}"
    if not isinstance(table, dict):
        errors.add(key, table, "a table with driver = ... and the driver's options")
        return None
    if "driver" not in table:
        errors.add(f"{key}.driver", None, f"{COMMON['driver'].describe()} (required)")
        return None
    before = len(errors)
    drv_name = COMMON["driver"].parse(f"{key}.driver", table["driver"], errors)
    cls = driver_class(drv_name)
    if cls is None:
        return None  # its other keys cannot be checked without the driver
    values = parse_table(key, table, {**COMMON, **cls.options}, errors, context=f"driver {drv_name!r}",
                         skip=("driver",))
    options = {k: values[k] for k in cls.options}
    if errors.touched(*(f"{key}.{k}" for k in cls.options)):
        return None
    try:
        cls.validate(options, key)
    except ConfigError as exc:
        errors.extend(exc)
        return None
    if checked is not None:
        checked[name] = options
    kind = cls.kind_for(options)
    channels = cls.channels(options)
    base: dict[str, Any] = {
        "name": name, "driver": drv_name, "role": values["role"] if "role" in table else name, "kind": kind,
        "channels": channels, "options": options, "simulated": cls.simulated_for(options),
        "follows_keyframes": cls.follows_keyframes(options), "shows_expressions": cls.shows_expressions(options),
        "noisy": values["noisy"],
    }
    if kind == "light":
        for k in SERVO_KEYS:
            if k in table:
                errors.add(f"{key}.{k}", table[k], f"nothing: {k} applies to servos, not to a light ({drv_name})")
        return ActuatorConfig(**base) if len(errors) == before else None
    limits = _limits(key, table, values, cls.limits_for(options), channels, errors)
    interpolate = values["interpolate"] if "interpolate" in table else not cls.timed_moves
    if limits is None or len(errors) != before:
        return None
    mins, maxs, homes = limits
    return ActuatorConfig(**base, minimum=mins, maximum=maxs, home=homes, interpolate=interpolate, step=values["step"])


def _limits(key: str, table: dict[str, Any], values: dict[str, Any], defaults: tuple[float, float, float],
            channels: int, errors: Errors) -> tuple[tuple[float, ...], ...] | None:
    """min, max and home per channel (a single number applies to every channel)."""
    out = []
    for k, default in zip(("min", "max", "home"), defaults):
        if errors.touched(f"{key}.{k}"):
            return None
        raw = table.get(k, default)
        v = values[k] if k in table else (float(default),)
        if len(v) == 1 and not isinstance(raw, list):
            v = v * channels
        if len(v) != channels:
            errors.add(f"{key}.{k}", raw, f"a finite number or a list of {channels} finite numbers (degrees)")
            return None
        out.append(v)
    mins, maxs, homes = out
    bad = next((i for i in range(channels) if mins[i] > maxs[i]), None)
    if bad is not None:
        k = "min" if "min" in table or "max" not in table else "max"
        errors.add(f"{key}.{k}", table.get(k, defaults[0 if k == "min" else 1]),
                   f"values with min not above max ({mins[bad]:g} > {maxs[bad]:g} for channel {bad})")
        return None
    bad = next((i for i in range(channels) if not mins[i] <= homes[i] <= maxs[i]), None)
    if bad is not None:
        errors.add(f"{key}.home", table.get("home", defaults[2]),
                   f"values from min to max ({mins[bad]:g}..{maxs[bad]:g} for channel {bad})")
        return None
    return mins, maxs, homes


def _check_shared_ports(options: dict[str, DriverOptions], errors: Errors) -> None:
    """Actuators on one serial port share one link, so they must agree on its speed."""
    seen: dict[str, str] = {}
    for name, o in options.items():
        port = o.get("port")
        if not isinstance(port, str) or "://" in port or "baud" not in o:
            continue
        first = seen.setdefault(port, name)
        if first != name and options[first]["baud"] != o["baud"]:
            errors.add(f"actuators.{name}.baud", o["baud"],
                       f"{options[first]['baud']} (actuators.{first} uses the same port {port})")


def _targets_for(key: str, actuators: dict[str, ActuatorConfig]) -> list[str]:
    if key in actuators:
        return [key]
    return [n for n, a in actuators.items() if a.role == key]


def _no_target(key: str, actuators: dict[str, ActuatorConfig], unresolved: set[str]) -> str:
    known = sorted(set(actuators) | {a.role for a in actuators.values()} | unresolved)
    return "an actuator name or role: " + (", ".join(known) or "(no actuators)") + did_you_mean(key, known)


def _resolve_motion(m: Motion, actuators: dict[str, ActuatorConfig], strict: bool, errors: Errors,
                    unresolved: set[str]) -> Motion:
    """Tracks by role -> tracks by actuator name; a user motion's bad references are errors,
    the default library's are skipped (a robot without an arm still nods)."""
    tracks = {}
    for key, frames in m.tracks.items():
        k = f"motions.{m.tag}.{key}"
        names = _targets_for(key, actuators)
        if not names and strict and key not in unresolved:
            errors.add(k, key, _no_target(key, actuators, unresolved))
        for n in names:
            a = actuators[n]
            if a.follows_keyframes and all(len(f.target) == a.channels for f in frames):
                tracks[n] = frames
            elif strict:
                why = (f"keyframes of {a.channels} value(s)" if a.follows_keyframes
                       else f"no keyframes: {n} ({a.driver}) cannot move to positions")
                errors.add(k, [list(f.target) for f in frames], why)
    return Motion(m.tag, tracks, description=m.description)


def _resolve_expression(e: Expression, actuators: dict[str, ActuatorConfig], strict: bool, errors: Errors,
                        unresolved: set[str]) -> Expression:
    pose = {}
    for key, target in e.pose.items():
        k = f"emotions.{e.tag}.pose.{key}"
        names = _targets_for(key, actuators)
        if not names and strict and key not in unresolved:
            errors.add(k, key, _no_target(key, actuators, unresolved))
        for n in names:
            a = actuators[n]
            if a.follows_keyframes and len(target) == a.channels:
                pose[n] = target
            elif strict:
                why = (f"{a.channels} value(s) for a servo actuator" if a.follows_keyframes
                       else f"no pose: {n} ({a.driver}) cannot move to positions")
                errors.add(k, list(target), why)
    return dataclasses.replace(e, pose=pose)
