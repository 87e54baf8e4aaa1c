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
    description = "pleased, amused, glad to help"

Both may carry a one-line ``description``: what the tag means, told to the voice agent with
the ``motion``/``emotion`` tools (``ticos-agent tools``). A motion table with only a
description describes a tag a device plays itself (``played_motions``)::

    [motions.spin]
    description = "turn around once, on the spot"

A config's ``[motions.X]`` / ``[emotions.X]`` replaces the default entry ``X`` or adds one;
``[robot] default_library = false`` starts from an empty library.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..options import (
    INVALID,
    Choice,
    Colour,
    Duration,
    Errors,
    Float,
    Invalid,
    Map,
    Option,
    String,
    dump_table,
    parse_table,
    schema_of,
    setting,
)

PATTERNS = ("solid", "pulse", "blink")
MAX_KEYFRAME_T = 60.0  # seconds: the latest a keyframe may be (a typo like 1500 for 1.5 is caught)
MAX_DESCRIPTION = 200  # characters of a motion's or an emotion's description


class Line(String):
    """One line of text (no line breaks), at most ``MAX_DESCRIPTION`` characters; ``""``: none."""

    def describe(self) -> str:
        return f"one line of text, at most {MAX_DESCRIPTION} characters (empty for none)"

    def convert(self, value: Any) -> str | None:
        text = super().convert(value)
        if text is not None and (len(text) > MAX_DESCRIPTION or "\n" in text or "\r" in text):
            raise Invalid
        return text.strip() or None if text is not None else None


#: ``description`` of a motion or an emotion
DESCRIPTION = Line(None, "what the tag means, in one line: the voice agent reads it in the motion/emotion tools",
                   optional=True, example="glad, amused, pleased to help")


class Degrees(Option):
    """A target in degrees: one finite number, or a list of them (one per channel) -> a tuple."""

    expected = "a finite number or a non-empty list of finite numbers (degrees, one per channel)"

    def convert(self, value: Any) -> tuple[float, ...]:
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                 for v in values):
            raise Invalid
        return tuple(float(v) for v in values)

    def dump(self, value: Any) -> Any:
        return list(value) if len(value) > 1 else value[0]


@dataclass(frozen=True)
class Keyframe:
    t: float
    target: tuple[float, ...]


class Keyframes(Option):
    """``[[seconds, target], ...]`` or ``[{t = seconds, target = degrees}, ...]``, in time order."""

    expected = "a non-empty list of keyframes [seconds, target] or {t = seconds, target = degrees}"
    TARGET = Degrees()
    TIME = Duration(minimum=0, maximum=MAX_KEYFRAME_T)

    def convert(self, value: Any) -> tuple[Keyframe, ...]:
        errors = Errors()
        frames: tuple[Keyframe, ...] = self.parse("", value, errors)
        if frames is INVALID:
            raise Invalid
        return frames

    def parse(self, key: str, value: Any, errors: Errors) -> Any:
        if not isinstance(value, list) or not value:
            errors.add(key, value, "a non-empty list of keyframes [seconds, target]")
            return INVALID
        out: list[Keyframe] = []
        last, ok = 0.0, True
        for i, f in enumerate(value):
            fk = f"{key}[{i}]"
            if isinstance(f, dict) and set(f) == {"t", "target"}:
                t, target = f["t"], f["target"]
            elif isinstance(f, list) and len(f) == 2:
                t, target = f
            else:
                errors.add(fk, f, "a keyframe [seconds, target] or {t = seconds, target = degrees}")
                ok = False
                continue
            t = self.TIME.parse(f"{fk}.t", t, errors)
            if t is not INVALID and t < last:
                errors.add(f"{fk}.t", t, f"seconds >= {last:g} (keyframes in time order)")
                t = INVALID
            target = self.TARGET.parse(f"{fk}.target", target, errors)
            if t is INVALID or target is INVALID:
                ok = False
                continue
            last = t
            out.append(Keyframe(t, target))
        return tuple(out) if ok else INVALID

    def dump(self, value: Any) -> Any:
        return [[f.t, self.TARGET.dump(f.target)] for f in value]


#: ``[motions.TAG]``: actuator (or role) = keyframes
TRACKS = Map(Keyframes(), {}, "actuator name or role = [[seconds, target], ...]", what="actuator (or role)",
             example={"head": [[0.25, [0, 15]], [0.5, [0, 0]]]})


@dataclass(frozen=True)
class Motion:
    tag: str
    #: actuator name (or role, before resolution) -> keyframes
    tracks: dict[str, tuple[Keyframe, ...]] = field(default_factory=dict)
    #: actuator -> seconds at speed 1, for tags its device plays itself (``played_motions``)
    played: dict[str, float] = field(default_factory=dict)
    #: what the tag means, for the voice agent (``[motions.TAG] description``)
    description: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The description and keyframes as TOML data (tags a device plays itself come from its own options)."""
        tracks: dict[str, Any] = TRACKS.dump(self.tracks)
        return {"description": self.description, **tracks} if self.description else tracks


@dataclass(frozen=True)
class Expression:
    tag: str
    color: tuple[float, float, float] | None = setting(Colour(None, "shown by every light except the mouth",
                                                              example="#FFC800"))
    pattern: str = setting(Choice(PATTERNS, "solid", "light pattern, one cycle per period"))
    period: float = setting(Duration(1.0, "length of one pattern cycle", minimum=0, exclusive_minimum=True))
    brightness: float = setting(Float(1.0, "light brightness, times the call's intensity", minimum=0, maximum=1))
    face: str | None = setting(String(None, "{face} of serial-line emotion lines (default: the tag)", optional=True,
                                      example="smile"))
    pose: dict[str, tuple[float, ...]] = setting(Map(Degrees(), {}, "actuator (or role) = degrees; amplitude from "
                                                     "home scaled by intensity", what="actuator (or role)",
                                                     example={"head": [0, 8]}))
    description: str | None = setting(DESCRIPTION)

    def as_dict(self) -> dict[str, Any]:
        out = dump_table(self, EXPRESSION)
        return {k: v for k, v in out.items() if v not in ("", {})}


#: ``[emotions.TAG]``: its keys
EXPRESSION = schema_of(Expression)


def _kf(*pairs: tuple[float, Any]) -> list[list[Any]]:
    return [[t, v] for t, v in pairs]


#: The shipped motions, written against the roles head (pan, tilt degrees) and arm (degrees).
DEFAULT_MOTIONS: dict[str, dict[str, Any]] = {
    "nod": {"description": "yes, agreeing, understood",
            "head": _kf((0.25, [0, 15]), (0.5, [0, -10]), (0.75, [0, 10]), (1.0, [0, 0]))},
    "shake": {"description": "no, disagreeing, not sure about that",
              "head": _kf((0.25, [25, 0]), (0.5, [-25, 0]), (0.75, [20, 0]), (1.0, [0, 0]))},
    "wave": {
        "description": "hello or goodbye",
        "arm": _kf((0.3, 70), (0.6, 40), (0.9, 70), (1.2, 40), (1.5, 70), (1.8, 0)),
        "head": _kf((0.4, [10, 5]), (1.8, [0, 0])),
    },
    "bow": {
        "description": "thanks, respect, an apology",
        "head": _kf((0.6, [0, -30]), (1.4, [0, -30]), (2.0, [0, 0])),
        "arm": _kf((0.6, 20), (1.4, 20), (2.0, 0)),
    },
    "dance": {
        "description": "celebrating, music, fun",
        "head": _kf((0.3, [20, 10]), (0.6, [-20, -5]), (0.9, [20, 10]), (1.2, [-20, -5]), (1.6, [0, 0])),
        "arm": _kf((0.3, 60), (0.6, 10), (0.9, 60), (1.2, 10), (1.6, 0)),
    },
}

DEFAULT_EMOTIONS: dict[str, dict[str, Any]] = {
    "happy": {"description": "pleased, amused, glad to help",
              "color": "#FFC800", "pattern": "solid", "brightness": 1.0, "face": "smile", "pose": {"head": [0, 8]}},
    "sad": {"description": "sad, sorry, disappointed",
            "color": "#1E3CFF", "pattern": "pulse", "period": 3.0, "brightness": 0.4, "face": "sad",
            "pose": {"head": [0, -20]}},
    "angry": {"description": "angry, annoyed, frustrated",
              "color": "#FF0000", "pattern": "blink", "period": 0.4, "brightness": 1.0, "face": "angry",
              "pose": {"head": [0, -5]}},
    "surprised": {"description": "surprised, amazed, caught off guard",
                  "color": "#FFFFFF", "pattern": "solid", "brightness": 1.0, "face": "surprised",
                  "pose": {"head": [0, 12]}},
    "thinking": {"description": "thinking it over, unsure, looking something up",
                 "color": "#8000FF", "pattern": "pulse", "period": 2.0, "brightness": 0.6, "face": "thinking",
                 "pose": {"head": [15, 10]}},
    "neutral": {"description": "calm and attentive: the resting expression",
                "color": "#FFFFFF", "pattern": "solid", "brightness": 0.2, "face": "neutral",
                "pose": {"head": [0, 0]}},
}


# --- parsing -------------------------------------------------------------------------------


def parse_motion(tag: str, doc: Any, key: str, errors: Errors) -> Motion | None:
    """``[motions.TAG]``: its ``description`` (optional) and a track per actuator (or role); a
    table with only a description describes a tag a device plays itself."""
    if not isinstance(doc, dict) or not doc:
        errors.add(key, doc, "a table of actuator (or role) = [[seconds, target], ...]")
        return None
    tracks_doc = {k: v for k, v in doc.items() if k != "description"}
    description = DESCRIPTION.parse(f"{key}.description", doc["description"], errors) if "description" in doc \
        else None
    tracks = TRACKS.parse(key, tracks_doc, errors)
    if tracks is INVALID or description is INVALID:
        return None
    return Motion(tag, tracks, description=description)


def parse_expression(tag: str, doc: Any, key: str, errors: Errors) -> Expression | None:
    before = len(errors)
    values = parse_table(key, doc, EXPRESSION, errors)
    return Expression(tag, **values) if len(errors) == before else None


@functools.cache
def _defaults() -> tuple[dict[str, Motion], dict[str, Expression]]:
    errors = Errors()
    motions = {t: parse_motion(t, d, f"motions.{t}", errors) for t, d in DEFAULT_MOTIONS.items()}
    emotions = {t: parse_expression(t, d, f"emotions.{t}", errors) for t, d in DEFAULT_EMOTIONS.items()}
    errors.raise_if_any("the default library")
    return motions, emotions  # type: ignore[return-value]


def parse_library(doc: dict[str, Any], defaults: bool, errors: Errors
                  ) -> tuple[dict[str, Motion], dict[str, Expression], set[str], set[str]]:
    """Merge the defaults (unless disabled) with the document's ``motions``/``emotions``.

    Returns the motions, the emotions and the sets of tags that came from the user (their
    actuator references are checked strictly; the defaults' are skipped when not wired).
    A broken entry is reported into ``errors`` and left out."""
    motions: dict[str, Motion] = {}
    emotions: dict[str, Expression] = {}
    if defaults:
        default_motions, default_emotions = _defaults()
        motions, emotions = dict(default_motions), dict(default_emotions)
    user_m: set[str] = set()
    user_e: set[str] = set()
    _merge_section(doc, "motions", parse_motion, motions, user_m, errors)
    _merge_section(doc, "emotions", parse_expression, emotions, user_e, errors)
    return motions, emotions, user_m, user_e


_Entry = TypeVar("_Entry", Motion, Expression)


def _merge_section(doc: dict[str, Any], section: str, parse: Callable[[str, Any, str, Errors], _Entry | None],
                   target: dict[str, _Entry], user: set[str], errors: Errors) -> None:
    """The ``[section.<tag>]`` entries of ``doc`` into ``target`` (a broken one removes the tag)."""
    raw = doc.get(section, {})
    if not isinstance(raw, dict):
        errors.add(section, raw, f"a table of [{section}.<tag>] entries")
        return
    for tag, entry in raw.items():
        tag = str(tag)
        if not tag.strip() or len(tag) > 64:
            errors.add(f"{section}.{tag}", tag, "a tag of 1 to 64 characters")
            continue
        user.add(tag)
        parsed = parse(tag, entry, f"{section}.{tag}", errors)
        if parsed is not None:
            target[tag] = parsed
        else:
            target.pop(tag, None)
