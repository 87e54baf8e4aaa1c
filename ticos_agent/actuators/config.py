"""``[robot]``, ``[actuators.*]``, ``[motions.*]``, ``[emotions.*]`` -> :class:`ActuatorsConfig`.

One actuator is one table; the keys every actuator understands are in :data:`COMMON`, the rest
belong to its driver (``DRIVERS[name].options``)::

    [actuators.head]
    driver = "feetech-sts"     # see ticos_agent/actuators/drivers/
    role = "head"              # which library tracks it plays (default: its name)
    port = "/dev/serial/by-id/usb-1a86_USB_Single_Serial-if00"
    baud = 1000000
    ids = [1, 2]
    min = [-90, -30]           # degrees, one per channel (or one number for all)
    max = [90, 30]
    home = [0, 0]              # the safe state

Without an ``[actuators]`` section the robot is :data:`SIMULATED_ROBOT`: every driver on a
virtual port or mock pins, wired to the default library. Every error is a
:class:`~ticos_agent.errors.ConfigError` naming the dotted key, the bad value and what is
allowed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from . import drivers as _drivers  # noqa: F401 - registers the built-in drivers
from .driver import DRIVERS
from .library import Expression, Motion, parse_library

COMMON = ("driver", "role", "min", "max", "home", "interpolate", "step")
ROBOT_KEYS = ("mouth", "default_library", "name")

#: The robot a laptop gets with no config file: real drivers on simulated devices.
SIMULATED_ROBOT: dict[str, dict[str, Any]] = {
    "head": {"driver": "feetech-sts", "port": "loop://", "ids": [1, 2], "min": [-90, -30], "max": [90, 30], "home": [0, 0]},
    "arm": {"driver": "maestro", "port": "loop://", "channels": [0], "min": -10, "max": 90, "home": 0},
    "face": {"driver": "gpio-rgbled", "red": 17, "green": 27, "blue": 22, "pin_factory": "mock"},
    "mouth": {"driver": "gpio-pwmled", "pin": 18, "pin_factory": "mock"},
}


@dataclass(frozen=True)
class ActuatorConfig:
    name: str
    driver: str
    role: str
    kind: str
    channels: int
    options: dict[str, Any]
    minimum: tuple[float, ...] = ()
    maximum: tuple[float, ...] = ()
    home: tuple[float, ...] = ()
    interpolate: bool = False
    step: float = 0.02
    simulated: bool = False

    def clamp(self, target: tuple[float, ...] | list[float]) -> list[float]:
        if not self.minimum:
            return list(target)
        return [min(max(v, lo), hi) for v, lo, hi in zip(target, self.minimum, self.maximum)]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"driver": self.driver, "role": self.role, **self.options}
        if self.minimum:
            out.update(min=list(self.minimum), max=list(self.maximum), home=list(self.home),
                       interpolate=self.interpolate, step=self.step)
        return out


@dataclass(frozen=True)
class ActuatorsConfig:
    actuators: dict[str, ActuatorConfig] = field(default_factory=dict)
    motions: dict[str, Motion] = field(default_factory=dict)
    emotions: dict[str, Expression] = field(default_factory=dict)
    mouth: str | None = None
    default_robot: bool = False
    default_library: bool = True

    @property
    def simulated(self) -> bool:
        return any(a.simulated for a in self.actuators.values())

    def as_dict(self) -> dict[str, Any]:
        robot: dict[str, Any] = {"default_library": self.default_library}
        if self.mouth:
            robot["mouth"] = self.mouth
        return {
            "robot": robot,
            "actuators": {n: a.as_dict() for n, a in self.actuators.items()},
            "motions": {t: m.as_dict() for t, m in sorted(self.motions.items())},
            "emotions": {t: e.as_dict() for t, e in sorted(self.emotions.items())},
        }


def _table(doc: dict, key: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, value, "a table")
    return value


def parse_actuators_config(doc: dict[str, Any]) -> ActuatorsConfig:
    """Validate the ``robot``, ``actuators``, ``motions`` and ``emotions`` sections of ``doc``."""
    if not isinstance(doc, dict):
        raise ConfigError("(document)", doc, "a TOML document (a table)")
    robot = _table(doc, "robot")
    for k in robot:
        if k not in ROBOT_KEYS:
            raise ConfigError(f"robot.{k}", robot[k], "no such key; allowed: " + ", ".join(ROBOT_KEYS))
    default_library = robot.get("default_library", True)
    if not isinstance(default_library, bool):
        raise ConfigError("robot.default_library", default_library, "true or false")
    default_robot = "actuators" not in doc
    raw = copy.deepcopy(SIMULATED_ROBOT) if default_robot else _table(doc, "actuators")
    actuators = {str(n): parse_actuator(str(n), t) for n, t in raw.items()}
    _check_shared_ports(actuators)

    mouth = robot.get("mouth", "mouth" if default_robot else None)
    if mouth is not None and (not isinstance(mouth, str) or mouth not in actuators):
        raise ConfigError("robot.mouth", mouth, "the name of a configured actuator: " + (", ".join(actuators) or "(none)"))

    motions, emotions, user_m, user_e = parse_library(doc, default_library)
    resolved_m = {}
    for tag, m in motions.items():
        r = _resolve_motion(m, actuators, strict=tag in user_m)
        if r.tracks or r.played:
            resolved_m[tag] = r
    for name, a in actuators.items():  # tags a serial-line MCU plays itself
        for tag, seconds in (a.options.get("motions") or {}).items() if a.driver == "serial-line" else ():
            m = resolved_m.get(tag, Motion(tag))
            resolved_m[tag] = Motion(tag, m.tracks, {**m.played, name: seconds})
    resolved_e = {t: _resolve_expression(e, actuators, strict=t in user_e) for t, e in emotions.items()}
    return ActuatorsConfig(actuators, resolved_m, resolved_e, mouth, default_robot, default_library)


def parse_actuator(name: str, table: Any) -> ActuatorConfig:
    key = f"actuators.{name}"
    if not isinstance(table, dict):
        raise ConfigError(key, table, "a table with driver = ... and the driver's options")
    drv_name = table.get("driver")
    if drv_name not in DRIVERS:
        raise ConfigError(f"{key}.driver", drv_name, "one of " + ", ".join(sorted(DRIVERS)))
    cls = DRIVERS[drv_name]
    options: dict[str, Any] = {}
    for k, v in table.items():
        if k in COMMON:
            continue
        opt = cls.options.get(k)
        if opt is None:
            allowed = ", ".join(list(COMMON) + list(cls.options))
            raise ConfigError(f"{key}.{k}", v, f"no such key for driver {drv_name!r}; allowed: {allowed}")
        options[k] = opt.validate(f"{key}.{k}", v)
    for k, opt in cls.options.items():
        if k not in options:
            if opt.required:
                raise ConfigError(f"{key}.{k}", None, f"{opt.describe()} (required by driver {drv_name!r}: {opt.doc})")
            options[k] = copy.deepcopy(opt.default)
    cls.validate(options, key)
    role = table.get("role", name)
    if not isinstance(role, str) or not role:
        raise ConfigError(f"{key}.role", role, "a role name such as head, arm, face, mouth")
    kind = options.get("kind", cls.kind) if drv_name == "mock" else cls.kind
    channels = cls.channels(options)
    base = dict(name=name, driver=drv_name, role=role, kind=kind, channels=channels, options=options,
                simulated=cls.simulated_for(options))
    if kind == "light":
        for k in ("min", "max", "home", "interpolate", "step"):
            if k in table:
                raise ConfigError(f"{key}.{k}", table[k], f"nothing: {k} applies to servos, not to a light ({drv_name})")
        return ActuatorConfig(**base)
    lo, hi, home = cls.default_limits
    if drv_name == "gpio-servo":
        lo, hi = sorted((options["min_angle"], options["max_angle"]))
        home = min(max(0.0, lo), hi)
    mins = _per_channel(f"{key}.min", table.get("min", lo), channels)
    maxs = _per_channel(f"{key}.max", table.get("max", hi), channels)
    homes = _per_channel(f"{key}.home", table.get("home", home), channels)
    for i in range(channels):
        if mins[i] > maxs[i]:
            raise ConfigError(f"{key}.min", table.get("min"), f"values not above max ({maxs[i]:g} for channel {i})")
        if not mins[i] <= homes[i] <= maxs[i]:
            raise ConfigError(f"{key}.home", table.get("home", home), f"values from min to max ({mins[i]:g}..{maxs[i]:g} for channel {i})")
    interpolate = table.get("interpolate", not cls.timed_moves)
    if not isinstance(interpolate, bool):
        raise ConfigError(f"{key}.interpolate", interpolate, "true or false")
    step = table.get("step", 0.02)
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0.005 <= step <= 0.5:
        raise ConfigError(f"{key}.step", step, "seconds from 0.005 to 0.5 (interpolation step)")
    return ActuatorConfig(**base, minimum=mins, maximum=maxs, home=homes, interpolate=interpolate, step=float(step))


def _per_channel(key: str, value: Any, channels: int) -> tuple[float, ...]:
    expected = f"a finite number or a list of {channels} finite numbers (degrees)"
    values = value if isinstance(value, list) else [value] * channels
    if len(values) != channels or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                      for v in values):
        raise ConfigError(key, value, expected)
    return tuple(float(v) for v in values)


def _check_shared_ports(actuators: dict[str, ActuatorConfig]) -> None:
    seen: dict[str, ActuatorConfig] = {}
    for a in actuators.values():
        port = a.options.get("port")
        if not port or "://" in port:
            continue
        first = seen.setdefault(port, a)
        if first is not a and first.options.get("baud") != a.options.get("baud"):
            raise ConfigError(f"actuators.{a.name}.baud", a.options.get("baud"),
                              f"{first.options.get('baud')} (actuators.{first.name} uses the same port {port})")


def _targets_for(key: str, actuators: dict[str, ActuatorConfig]) -> list[str]:
    if key in actuators:
        return [key]
    return [n for n, a in actuators.items() if a.role == key]


def _resolve_motion(m: Motion, actuators: dict[str, ActuatorConfig], strict: bool) -> Motion:
    tracks = {}
    for key, frames in m.tracks.items():
        names = _targets_for(key, actuators)
        if not names and strict:
            raise ConfigError(f"motions.{m.tag}.{key}", key, "an actuator name or role: " + ", ".join(
                sorted(set(actuators) | {a.role for a in actuators.values()})) or "(no actuators)")
        for n in names:
            a = actuators[n]
            ok = a.kind == "position" or (a.kind == "line" and a.options.get("move"))
            if ok and all(len(f.target) == a.channels for f in frames):
                tracks[n] = frames
            elif strict:
                why = (f"keyframes of {a.channels} value(s)" if ok else f"no keyframes: {n} ({a.driver}) cannot move to positions")
                raise ConfigError(f"motions.{m.tag}.{key}", [list(f.target) for f in frames], why)
    return Motion(m.tag, tracks)


def _resolve_expression(e: Expression, actuators: dict[str, ActuatorConfig], strict: bool) -> Expression:
    pose = {}
    for key, target in e.pose.items():
        names = _targets_for(key, actuators)
        if not names and strict:
            raise ConfigError(f"emotions.{e.tag}.pose.{key}", key, "an actuator name or role: " + ", ".join(sorted(actuators)))
        for n in names:
            a = actuators[n]
            if a.kind != "light" and len(target) == a.channels:
                pose[n] = target
            elif strict:
                raise ConfigError(f"emotions.{e.tag}.pose.{key}", list(target), f"{a.channels} value(s) for a servo actuator")
    return Expression(e.tag, e.color, e.pattern, e.period, e.brightness, e.face, pose)
