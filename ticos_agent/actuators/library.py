"""The motion and emotion libraries: data types, the shipped defaults, TOML parsing.

A motion maps a tag to keyframes per actuator (or per *role*: ``head``, ``arm``, ``face``,
``mouth``; an actuator's role is its name unless its table says ``role = "..."``)::

    [motions.wave]
    arm  = [[0.3, 70], [0.6, 40], [0.9, 70], [1.2, 0]]     # [seconds, degrees]
    head = [[0.4, [10, 5]], [1.2, [0, 0]]]                 # one value per channel (pan, tilt)

A keyframe ``[t, target]`` means "be at ``target`` at ``t`` seconds": the command goes out at
the previous keyframe's time with the move time up to ``t`` (bus servos move smoothly;
drivers without move times are interpolated). ``speed`` divides every time, ``repeat`` plays
the whole sequence again.

An emotion maps a tag to an expression::

    [emotions.happy]
    color = "#FFC800"         # or [255, 200, 0]; shown by every light except the mouth
    pattern = "solid"         # solid | pulse | blink, one cycle per `period` seconds
    period = 1.0
    brightness = 1.0          # times the call's intensity
    face = "smile"            # {face} of serial-line `emotion` templates (a face frame)
    pose = { head = [0, 8] }  # degrees; amplitude from home scaled by intensity

A config's ``[motions.X]`` / ``[emotions.X]`` replaces the default entry ``X`` or adds one;
``[robot] default_library = false`` starts from an empty library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

PATTERNS = ("solid", "pulse", "blink")
MAX_KEYFRAME_T = 60.0  # seconds: the latest a keyframe may be (a typo like 1500 for 1.5 is caught)


@dataclass(frozen=True)
class Keyframe:
    t: float
    target: tuple[float, ...]


@dataclass(frozen=True)
class Motion:
    tag: str
    #: actuator name (or role, before resolution) -> keyframes
    tracks: dict[str, tuple[Keyframe, ...]] = field(default_factory=dict)
    #: serial-line actuator -> seconds at speed 1, for tags the MCU plays itself
    played: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: [[f.t, list(f.target) if len(f.target) > 1 else f.target[0]] for f in v]
                               for k, v in self.tracks.items()}
        if self.played:
            out["played_by_mcu"] = dict(self.played)
        return out


@dataclass(frozen=True)
class Expression:
    tag: str
    color: tuple[float, float, float] | None = None  # 0..1 each
    pattern: str = "solid"
    period: float = 1.0
    brightness: float = 1.0
    face: str | None = None
    pose: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pattern": self.pattern, "period": self.period, "brightness": self.brightness}
        if self.color is not None:
            out["color"] = "#%02X%02X%02X" % tuple(round(c * 255) for c in self.color)
        if self.face is not None:
            out["face"] = self.face
        if self.pose:
            out["pose"] = {k: list(v) for k, v in self.pose.items()}
        return out


def _kf(*pairs: tuple[float, Any]) -> list[list[Any]]:
    return [[t, v] for t, v in pairs]


#: The shipped motions, written against the roles head (pan, tilt degrees) and arm (degrees).
DEFAULT_MOTIONS: dict[str, dict[str, Any]] = {
    "nod": {"head": _kf((0.25, [0, 15]), (0.5, [0, -10]), (0.75, [0, 10]), (1.0, [0, 0]))},
    "shake": {"head": _kf((0.25, [25, 0]), (0.5, [-25, 0]), (0.75, [20, 0]), (1.0, [0, 0]))},
    "wave": {
        "arm": _kf((0.3, 70), (0.6, 40), (0.9, 70), (1.2, 40), (1.5, 70), (1.8, 0)),
        "head": _kf((0.4, [10, 5]), (1.8, [0, 0])),
    },
    "bow": {
        "head": _kf((0.6, [0, -30]), (1.4, [0, -30]), (2.0, [0, 0])),
        "arm": _kf((0.6, 20), (1.4, 20), (2.0, 0)),
    },
    "dance": {
        "head": _kf((0.3, [20, 10]), (0.6, [-20, -5]), (0.9, [20, 10]), (1.2, [-20, -5]), (1.6, [0, 0])),
        "arm": _kf((0.3, 60), (0.6, 10), (0.9, 60), (1.2, 10), (1.6, 0)),
    },
}

DEFAULT_EMOTIONS: dict[str, dict[str, Any]] = {
    "happy": {"color": "#FFC800", "pattern": "solid", "brightness": 1.0, "face": "smile", "pose": {"head": [0, 8]}},
    "sad": {"color": "#1E3CFF", "pattern": "pulse", "period": 3.0, "brightness": 0.4, "face": "sad",
            "pose": {"head": [0, -20]}},
    "angry": {"color": "#FF0000", "pattern": "blink", "period": 0.4, "brightness": 1.0, "face": "angry",
              "pose": {"head": [0, -5]}},
    "surprised": {"color": "#FFFFFF", "pattern": "solid", "brightness": 1.0, "face": "surprised",
                  "pose": {"head": [0, 12]}},
    "thinking": {"color": "#8000FF", "pattern": "pulse", "period": 2.0, "brightness": 0.6, "face": "thinking",
                 "pose": {"head": [15, 10]}},
    "neutral": {"color": "#FFFFFF", "pattern": "solid", "brightness": 0.2, "face": "neutral",
                "pose": {"head": [0, 0]}},
}


# --- parsing -------------------------------------------------------------------------------


def _num(key: str, value: Any, expected: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, value, expected)
    return float(value)


def _target(key: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, list) and value:
        return tuple(_num(f"{key}[{i}]", v, "a number of degrees") for i, v in enumerate(value))
    return (_num(key, value, "a number or a list of numbers (one per channel)"),)


def parse_motion(tag: str, doc: Any, key: str) -> Motion:
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(key, doc, "a table of actuator (or role) = [[seconds, target], ...]")
    tracks: dict[str, tuple[Keyframe, ...]] = {}
    for name, frames in doc.items():
        k = f"{key}.{name}"
        if not isinstance(frames, list) or not frames:
            raise ConfigError(k, frames, "a non-empty list of keyframes [seconds, target]")
        out: list[Keyframe] = []
        last = 0.0
        for i, f in enumerate(frames):
            fk = f"{k}[{i}]"
            if isinstance(f, dict):
                unknown = set(f) - {"t", "target"}
                if unknown or "t" not in f or "target" not in f:
                    raise ConfigError(fk, f, "a keyframe {t = seconds, target = degrees} or [seconds, target]")
                t, target = f["t"], f["target"]
            elif isinstance(f, list) and len(f) == 2:
                t, target = f
            else:
                raise ConfigError(fk, f, "a keyframe [seconds, target] or {t = seconds, target = degrees}")
            t = _num(f"{fk}.t", t, f"seconds from 0 to {MAX_KEYFRAME_T:g}")
            if t > MAX_KEYFRAME_T:
                raise ConfigError(f"{fk}.t", t, f"seconds from 0 to {MAX_KEYFRAME_T:g} (keyframe time since the start)")
            if t < last:
                raise ConfigError(f"{fk}.t", t, f"seconds >= {last:g} (keyframes in time order)")
            last = t
            out.append(Keyframe(t, _target(f"{fk}.target", target)))
        tracks[str(name)] = tuple(out)
    return Motion(tag, tracks)


def parse_color(key: str, value: Any) -> tuple[float, float, float]:
    expected = 'a colour "#RRGGBB" or [r, g, b] with 0..255 values'
    if isinstance(value, str):
        s = value.strip().lstrip("#")
        if len(s) != 6:
            raise ConfigError(key, value, expected)
        try:
            rgb = [int(s[i : i + 2], 16) for i in (0, 2, 4)]
        except ValueError:
            raise ConfigError(key, value, expected) from None
    elif isinstance(value, list) and len(value) == 3:
        rgb = [_num(key, v, expected) for v in value]
        if any(v < 0 or v > 255 for v in rgb):
            raise ConfigError(key, value, expected)
    else:
        raise ConfigError(key, value, expected)
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


EXPRESSION_KEYS = ("color", "pattern", "period", "brightness", "face", "pose")


def parse_expression(tag: str, doc: Any, key: str) -> Expression:
    if not isinstance(doc, dict):
        raise ConfigError(key, doc, "a table with " + ", ".join(EXPRESSION_KEYS))
    for k in doc:
        if k not in EXPRESSION_KEYS:
            raise ConfigError(f"{key}.{k}", doc[k], "no such key; allowed: " + ", ".join(EXPRESSION_KEYS))
    color = parse_color(f"{key}.color", doc["color"]) if "color" in doc else None
    pattern = doc.get("pattern", "solid")
    if pattern not in PATTERNS:
        raise ConfigError(f"{key}.pattern", pattern, "one of " + ", ".join(PATTERNS))
    period = _num(f"{key}.period", doc.get("period", 1.0), "seconds > 0")
    if period <= 0:
        raise ConfigError(f"{key}.period", period, "seconds > 0")
    brightness = _num(f"{key}.brightness", doc.get("brightness", 1.0), "a number from 0 to 1")
    if not 0 <= brightness <= 1:
        raise ConfigError(f"{key}.brightness", brightness, "a number from 0 to 1")
    face = doc.get("face")
    if face is not None and not isinstance(face, str):
        raise ConfigError(f"{key}.face", face, "a string (a face frame name for the MCU)")
    pose_doc = doc.get("pose", {})
    if not isinstance(pose_doc, dict):
        raise ConfigError(f"{key}.pose", pose_doc, "a table of actuator (or role) = degrees")
    pose = {str(k): _target(f"{key}.pose.{k}", v) for k, v in pose_doc.items()}
    return Expression(tag, color, pattern, period, brightness, face, pose)


def parse_library(doc: dict[str, Any], defaults: bool) -> tuple[dict[str, Motion], dict[str, Expression], set[str], set[str]]:
    """Merge the defaults (unless disabled) with the document's ``motions``/``emotions``.

    Returns the motions, the emotions and the sets of tags that came from the user (their
    actuator references are checked strictly; the defaults' are skipped when not wired)."""
    motions: dict[str, Motion] = {}
    emotions: dict[str, Expression] = {}
    if defaults:
        motions = {t: parse_motion(t, d, f"motions.{t}") for t, d in DEFAULT_MOTIONS.items()}
        emotions = {t: parse_expression(t, d, f"emotions.{t}") for t, d in DEFAULT_EMOTIONS.items()}
    user_m: set[str] = set()
    user_e: set[str] = set()
    for section, parse, target, user in (
        ("motions", parse_motion, motions, user_m),
        ("emotions", parse_expression, emotions, user_e),
    ):
        raw = doc.get(section, {})
        if not isinstance(raw, dict):
            raise ConfigError(section, raw, f"a table of [{section}.<tag>] entries")
        for tag, entry in raw.items():
            if not str(tag).strip() or len(str(tag)) > 64:
                raise ConfigError(f"{section}.{tag}", tag, "a tag of 1 to 64 characters")
            target[str(tag)] = parse(str(tag), entry, f"{section}.{tag}")
            user.add(str(tag))
    return motions, emotions, user_m, user_e
