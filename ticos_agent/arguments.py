"""Function-call arguments: a ``function_call`` item decoded, ``motion``/``emotion`` arguments
checked and normalised.

:func:`function_call` decodes the item; :func:`motion_args` and :func:`emotion_args` check
the arguments:

==================  ===========================================================================
field               rule
==================  ===========================================================================
``motion_tag``      required, non-empty string (surrounding blanks stripped)
``speed``           number > 0 and finite, default 1.0; clamped to ``SPEED_RANGE`` (0.1 .. 5.0)
``repeat``          whole number >= 1 (``2.0`` is accepted), default 1; clamped to ``MAX_REPEAT``
``wait``            boolean, default true
``emotion_tag``     required, non-empty string
``intensity``       number, default 1.0; clamped to 0 .. 1
``duration``        number of seconds >= 0, optional; clamped to ``MAX_DURATION`` (300 s)
``fade_in``         number of seconds >= 0, default 0; clamped to ``MAX_DURATION``
==================  ===========================================================================

Wrong types, missing required fields, negative or non-finite numbers are rejected with a
:class:`~ticos_agent.errors.BadArguments` naming the field. Values that are merely too large
are clamped (a robot asked to wave 500 times waves ``MAX_REPEAT`` times) and the clamp is
reported in ``Args.notes``.

The arguments string is decoded as strictly as the frame around it (orjson refuses the same):
``NaN``, ``Infinity`` and numbers beyond a double (``1e400``) are not JSON, and a ``\\u``
escape of half a surrogate pair (``"\\ud800"``) is no text; stdlib ``json`` lets all of them
through. A call whose arguments hold one anywhere (in any function's arguments, in a field no
check above reads) is refused like any other unusable arguments, naming where it is, before a
handler, an actuator, a memory tool or the store sees a value. It is decoded with stdlib
``json`` and hooks, not orjson, so that a whole number keeps every digit (orjson reads one
beyond 64 bits as a float) and this module need not import :mod:`ticos_agent.events`, which
imports it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, overload

from .errors import BadArguments


def json_kind(value: Any) -> str:
    """How an error names a JSON value's type (``"a string"``, ``"an array"``, ...)."""
    if value is None:
        return "null or nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


SPEED_RANGE = (0.1, 5.0)
MAX_REPEAT = 20
MAX_DURATION = 300.0

MOTION_FUNCTIONS = frozenset({"motion", "motion_and_emotion"})
EMOTION_FUNCTIONS = frozenset({"emotion", "motion_and_emotion"})


@dataclass(frozen=True)
class FunctionCall:
    """A ``function_call`` output item, arguments decoded to a dict."""

    name: str
    call_id: str
    arguments: dict[str, Any]
    raw_arguments: str
    item_id: str | None = None
    response_id: str | None = None


@dataclass(frozen=True)
class MotionArgs:
    motion_tag: str
    speed: float = 1.0
    repeat: int = 1
    wait: bool = True
    notes: tuple[str, ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"motion_tag": self.motion_tag, "speed": self.speed, "repeat": self.repeat, "wait": self.wait}


@dataclass(frozen=True)
class EmotionArgs:
    emotion_tag: str
    intensity: float = 1.0
    duration: float | None = None
    fade_in: float = 0.0
    notes: tuple[str, ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "emotion_tag": self.emotion_tag,
            "intensity": self.intensity,
            "duration": self.duration,
            "fade_in": self.fade_in,
        }


def function_call(item: dict[str, Any], response_id: str | None = None) -> FunctionCall:
    """Decode a ``function_call`` item. Raises :class:`BadArguments` when it cannot be used."""
    name = item.get("name")
    call_id = item.get("call_id")
    if not isinstance(name, str) or not name:
        raise BadArguments("function_call item has no string 'name'", field="name")
    if not isinstance(call_id, str) or not call_id:
        raise BadArguments(f"function_call {name!r} has no string 'call_id'", field="call_id")
    raw = item.get("arguments")
    if raw is None or raw == "":
        raw = "{}"
    if isinstance(raw, dict):  # lenient: some relays send the object itself (read again below, as text)
        try:
            raw = json.dumps(raw)
        except (TypeError, ValueError, RecursionError):  # only from Python: a frame holds JSON values
            raise BadArguments(f"{name}: arguments are not plain JSON", field="arguments") from None
    if not isinstance(raw, str):
        raise BadArguments(f"{name}: arguments must be a JSON string, got {json_kind(raw)}", field="arguments")
    odd: list[_NotJson] = []  # what the decoder met that is not JSON; none: nothing to look for

    def not_json(text: str) -> _NotJson:
        odd.append(_NotJson(text))
        return odd[-1]

    def number(text: str) -> float | _NotJson:
        value = float(text)
        return value if math.isfinite(value) else not_json(text)

    try:
        arguments = json.loads(raw, parse_constant=not_json, parse_float=number)
    except (ValueError, RecursionError):
        raise BadArguments(f"{name}: arguments are not valid JSON: {raw[:80]!r}", field="arguments") from None
    if odd or not _utf8(arguments):
        _refuse_not_json(name, arguments)  # walked only to tell where (~15 times the decoding)
    if not isinstance(arguments, dict):
        raise BadArguments(f"{name}: arguments must be a JSON object, got {json_kind(arguments)}", field="arguments")
    item_id = item.get("id") if isinstance(item.get("id"), str) else None
    return FunctionCall(name, call_id, arguments, raw, item_id, response_id)


class _NotJson:
    """What ``NaN``, ``Infinity``, ``-Infinity`` or a number beyond a double decodes to: kept
    as the text it was, so that the refusal can say where it was and what."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # half a surrogate pair: no text (memory.api too)


def _utf8(value: Any) -> bool:
    """Whether every text and key in decoded ``value`` (JSON values only) is UTF-8: no half a
    surrogate pair (at C speed; :func:`_refuse_not_json` then tells where)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):  # (as deep as the decoder went: the walk has no limit)
        return False
    return True


Path = tuple[Any, ...]  # (key or index, the path of the object holding it) ... ``()`` at the top


def _refuse_not_json(name: str, arguments: Any) -> None:
    """Raise :class:`BadArguments` at the first value (in text order) that is not JSON: a
    number a ``_NotJson`` stands in for, or text or a key holding a lone surrogate.
    The field named is the top-level argument it is in."""
    stack: list[tuple[Path, Any]] = [((), arguments)]
    while stack:
        path, value = stack.pop()
        if type(value) is _NotJson:
            why = f"must be a finite number, got {value.text[:40]} (NaN, Infinity and numbers beyond 1.8e308 " \
                  "are not JSON)"
        elif type(value) is str:
            if value.isascii() or (bad := LONE_SURROGATE.search(value)) is None:
                continue
            why = f"is not valid text: a lone surrogate ({_escaped(bad.group())}) at character {bad.start()}"
        elif type(value) is dict:
            for key in value:
                if not key.isascii() and (bad := LONE_SURROGATE.search(key)) is not None:
                    raise BadArguments(f"{name}: {_where(path)} has a key that is not valid text: a lone "
                                       f"surrogate ({_escaped(bad.group())})", field="arguments")
            stack.extend(((key, path), item) for key, item in reversed(value.items()))
            continue
        elif type(value) is list:
            stack.extend(((i, path), item) for i, item in reversed(list(enumerate(value))))
            continue
        else:
            continue
        top = path
        while top and top[1]:
            top = top[1]
        raise BadArguments(f"{name}: {_where(path)} {why}",
                           field=_key_text(top[0]) if top and isinstance(top[0], str) else "arguments")


def _escaped(text: str) -> str:
    """``text`` with a lone surrogate as its ``\\u`` escape (a message is text, and is stored)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


#: The longest a key (``MAX_KEY``) and a place (``MAX_WHERE``) are told in a refusal: the text
#: is the voice agent's, and a refusal is sent back twice, logged and stored.
MAX_KEY, MAX_WHERE = 64, 160


def _key_text(key: str) -> str:
    """A key as a refusal names it: control characters and a lone surrogate escaped (one line,
    UTF-8), cut to ``MAX_KEY`` characters."""
    text = _escaped(json.dumps(key, ensure_ascii=False)[1:-1])
    return text if len(text) <= MAX_KEY else text[:MAX_KEY - 3] + "..."


def _where(path: Path) -> str:
    """``speed``, ``options.speed``, ``tags[2]``, or ``arguments`` (the whole object; ``arguments[0]``);
    a place deeper than ``MAX_WHERE`` characters keeps its start (the argument it is in)."""
    parts: list[str] = []
    while path:
        key, path = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{_key_text(key)}")
    where = "".join(reversed(parts)).lstrip(".")
    where = where if where[:1] not in ("", "[") else "arguments" + where
    return where if len(where) <= MAX_WHERE else where[:MAX_WHERE - 3] + "..."


def motion_args(args: dict[str, Any]) -> MotionArgs:
    notes: list[str] = []
    tag = _tag(args, "motion_tag")
    speed = _number(args, "speed", 1.0, notes, lo=SPEED_RANGE[0], hi=SPEED_RANGE[1], positive=True)
    repeat = _whole(args, "repeat", 1, notes, hi=MAX_REPEAT)
    wait = args.get("wait", True)
    if wait is None:
        wait = True
    if not isinstance(wait, bool):
        raise BadArguments(f"wait must be true or false, got {json_kind(wait)} {wait!r}", field="wait")
    return MotionArgs(tag, speed, repeat, wait, tuple(notes))


def emotion_args(args: dict[str, Any]) -> EmotionArgs:
    notes: list[str] = []
    tag = _tag(args, "emotion_tag")
    intensity = _number(args, "intensity", 1.0, notes, lo=0.0, hi=1.0)
    duration = _number(args, "duration", None, notes, lo=0.0, hi=MAX_DURATION, non_negative=True)
    fade_in = _number(args, "fade_in", 0.0, notes, lo=0.0, hi=MAX_DURATION, non_negative=True)
    return EmotionArgs(tag, intensity, duration, fade_in, tuple(notes))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _tag(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if value is None:
        raise BadArguments(f"{key} is required", field=key)
    if not isinstance(value, str):
        raise BadArguments(f"{key} must be a string, got {json_kind(value)} {_short(value)}", field=key)
    value = value.strip()
    if not value:
        raise BadArguments(f"{key} must not be empty", field=key)
    if len(value) > 64:
        raise BadArguments(f"{key} is longer than 64 characters", field=key)
    return value


@overload
def _number(args: dict[str, Any], key: str, default: float, notes: list[str], *, lo: float, hi: float,
            positive: bool = False, non_negative: bool = False) -> float: ...


@overload
def _number(args: dict[str, Any], key: str, default: None, notes: list[str], *, lo: float, hi: float,
            positive: bool = False, non_negative: bool = False) -> float | None: ...


def _number(args: dict[str, Any], key: str, default: float | None, notes: list[str], *, lo: float, hi: float,
            positive: bool = False, non_negative: bool = False) -> float | None:
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadArguments(f"{key} must be a number, got {json_kind(value)} {_short(value)}", field=key)
    try:
        value = float(value)
    except OverflowError:
        raise BadArguments(f"{key} is out of range", field=key) from None
    if not math.isfinite(value):
        raise BadArguments(f"{key} must be finite, got {_short(value)}", field=key)
    if positive and value <= 0:
        raise BadArguments(f"{key} must be greater than 0, got {_short(value)}", field=key)
    if non_negative and value < 0:
        raise BadArguments(f"{key} must not be negative, got {_short(value)}", field=key)
    if value < lo or value > hi:
        clamped = min(max(value, lo), hi)
        notes.append(f"{key} {value:g} clamped to {clamped:g}")
        value = clamped
    return value


def _whole(args: dict[str, Any], key: str, default: int, notes: list[str], *, hi: int) -> int:
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadArguments(f"{key} must be a whole number, got {json_kind(value)} {_short(value)}", field=key)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise BadArguments(f"{key} must be a whole number, got {_short(value)}", field=key)
        value = int(value)
    if value < 1:
        raise BadArguments(f"{key} must be at least 1, got {_short(value)}", field=key)
    if value > hi:
        notes.append(f"{key} {value} clamped to {hi}")
        value = hi
    return value
