"""Realtime frames -> typed, validated events.

:func:`parse` turns one WebSocket frame (``str`` or ``bytes``) or an already-decoded ``dict``
into an :class:`Event`, or raises :class:`~ticos_agent.errors.BadEvent` with a short ``code``
the server sends back to the voice agent. Both spellings of the realtime protocol are
accepted: the GA names (``response.output_audio.delta`` ...) are folded into the beta names
(``response.audio.delta`` ...) so the rest of the agent deals with one vocabulary;
``Event.wire_type`` keeps what was on the wire.

Function-call arguments are normalised here too (:func:`motion_args`, :func:`emotion_args`):

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
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

from .errors import BadArguments, BadEvent

#: GA spelling -> the beta spelling used inside the agent.
GA_ALIASES: dict[str, str] = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}

Types = tuple[type, ...]

_STR: Types = (str,)
_OBJ: Types = (dict,)
_OPT_STR: Types = (str, type(None))
_INT: Types = (int,)

#: For the events the agent acts on: field -> allowed Python types after ``json.loads``.
#: A field missing from the event is an error unless its types admit ``None``.
SHAPES: dict[str, dict[str, Types]] = {
    "session.created": {"session": _OBJ},
    "session.updated": {"session": _OBJ},
    "conversation.created": {"conversation": _OBJ},
    "conversation.item.created": {"item": _OBJ},
    "conversation.item.done": {"item": _OBJ},
    "conversation.item.input_audio_transcription.delta": {"item_id": _STR, "delta": _STR},
    "conversation.item.input_audio_transcription.completed": {"item_id": _STR, "transcript": _STR},
    "conversation.item.input_audio_transcription.failed": {"item_id": _STR},
    "conversation.item.truncated": {"item_id": _STR},
    "conversation.item.deleted": {"item_id": _STR},
    "response.created": {"response": _OBJ},
    "response.done": {"response": _OBJ},
    "response.output_item.added": {"item": _OBJ},
    "response.output_item.done": {"item": _OBJ},
    "response.audio_transcript.delta": {"item_id": _STR, "delta": _STR},
    "response.audio_transcript.done": {"item_id": _STR, "transcript": _OPT_STR},
    "response.text.delta": {"item_id": _STR, "delta": _STR},
    "response.text.done": {"item_id": _STR, "text": _OPT_STR},
    "response.audio.delta": {"item_id": _STR, "delta": _STR},
    "response.audio.done": {"item_id": _STR},
    "response.function_call_arguments.delta": {"call_id": _STR, "delta": _STR},
    "response.function_call_arguments.done": {"call_id": _STR, "arguments": _STR},
    "input_audio_buffer.speech_started": {},
    "input_audio_buffer.speech_stopped": {},
    "input_audio_buffer.committed": {},
    "error": {},  # the voice agent's own error: logged, never answered with another error
}


_OPT_LIST: Types = (list, type(None))

#: Fields inside the objects above that the agent reads: (object, field) -> allowed types.
#: ``None`` in the types means the field may be absent or null.
_ITEM_FIELDS: dict[str, Types] = {"id": _OPT_STR, "type": _OPT_STR, "role": _OPT_STR, "content": _OPT_LIST,
                "call_id": _OPT_STR, "name": _OPT_STR, "status": _OPT_STR}
NESTED: dict[str, dict[str, dict[str, Types]]] = {
    "conversation.item.created": {"item": _ITEM_FIELDS},
    "conversation.item.done": {"item": _ITEM_FIELDS},
    "response.output_item.added": {"item": _ITEM_FIELDS},
    "response.output_item.done": {"item": _ITEM_FIELDS},
    "response.created": {"response": {"id": _STR}},
    "response.done": {"response": {"id": _STR, "status": _OPT_STR, "output": _OPT_LIST}},
    "session.created": {"session": {"id": _OPT_STR}},
    "conversation.created": {"conversation": {"id": _OPT_STR}},
}


class Event:
    """One validated realtime event.

    ``type`` is the beta spelling, ``wire_type`` what arrived, ``data`` the decoded JSON
    object (not copied: treat it as read-only).
    """

    __slots__ = ("data", "event_id", "type", "wire_type")

    def __init__(self, type: str, wire_type: str, data: dict[str, Any], event_id: str | None = None):
        self.type = type
        self.wire_type = wire_type
        self.data = data
        self.event_id = event_id

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def known(self) -> bool:
        """Whether the agent acts on this type (unknown types are counted and ignored)."""
        return self.type in SHAPES

    def __repr__(self) -> str:
        return f"Event({self.wire_type!r}, event_id={self.event_id!r})"


def response_id_of(event: Event) -> str | None:
    """The ``response_id`` an event names (``None`` when it names none)."""
    rid = event.data.get("response_id")
    return rid if isinstance(rid, str) else None


Check = tuple[str, Types]  # (top-level field, allowed types)
NestedCheck = tuple[str, str, Types]  # (object, field inside it, allowed types)


def _checks(etype: str) -> tuple[tuple[Check, ...], tuple[NestedCheck, ...]]:
    """The type checks of one event type: its top-level fields, then the fields inside them."""
    top = tuple(SHAPES[etype].items())
    inner = tuple((outer, key, types) for outer, fields in NESTED.get(etype, {}).items()
                  for key, types in fields.items())
    return top, inner


#: type on the wire (either spelling) -> (beta spelling, top-level checks, nested checks; an
#: outer object is checked before the fields inside it): one look-up per frame
_KNOWN = {wire: (GA_ALIASES.get(wire, wire), *_checks(GA_ALIASES.get(wire, wire)))
          for wire in (*SHAPES, *GA_ALIASES)}

Frame = str | bytes | bytearray | memoryview


def _first_loads(frame: Frame) -> Any:
    """Decode the first frame: orjson loads here, not with the agent (about 1 ms once, and
    0.25 MB an idle agent does not hold); from then on ``_loads`` is ``orjson.loads``."""
    global _loads
    import orjson

    _loads = orjson.loads
    return _loads(frame)


#: JSON text -> value; it raises ``orjson.JSONDecodeError``, a ``json.JSONDecodeError``
_loads: Callable[[Frame], Any] = _first_loads
_TEXT = (str, bytes, bytearray, memoryview)


def parse(frame: Frame | dict[str, Any]) -> Event:
    """Decode and validate one frame. Raises :class:`BadEvent` (never anything else).

    This runs for every frame (tens of thousands a second at full speed): the checks of the
    common case come first and the error messages are made only on the error path."""
    if isinstance(frame, _TEXT):
        try:
            data: Any = _loads(frame)
        except json.JSONDecodeError as exc:
            raise _frame_error(frame, exc) from None
        if type(data) is not dict:
            raise BadEvent(f"event must be a JSON object, got {json_kind(data)}", code="invalid_event")
    elif isinstance(frame, dict):
        data = frame
    else:
        raise BadEvent(f"unsupported frame type {type(frame).__name__}", code="invalid_frame")
    get = data.get
    wire_type = get("type")
    event_id = get("event_id")
    if type(event_id) is not str:
        event_id = None
    if type(wire_type) is not str or not wire_type:
        raise BadEvent("event has no string 'type'", code="missing_type", event_id=event_id)
    known = _KNOWN.get(wire_type)
    if known is None:  # a type the agent does not act on: counted, passed to the handlers
        return Event(wire_type, wire_type, data, event_id)
    etype, top, nested = known
    for key, types in top:
        if not isinstance(get(key), types):
            raise _shape_error(wire_type, None, key, types, get(key), event_id)
    for outer, key, types in nested:
        value = data[outer].get(key)
        if not isinstance(value, types):
            raise _shape_error(wire_type, outer, key, types, value, event_id)
    return Event(etype, wire_type, data, event_id)


def _shape_error(wire_type: str, outer: str | None, key: str, types: Types, value: Any,
                 event_id: str | None) -> BadEvent:
    where = key if outer is None else f"{outer}.{key}"
    want = " or ".join(_TYPE_NAMES[t] for t in types if t is not type(None))
    if outer is None and type(None) in types:
        want += " or null"
    return BadEvent(f"{wire_type}: '{where}' must be {want}, got {json_kind(value)}",
                    code="invalid_shape", event_id=event_id)


def _frame_error(frame: Frame, exc: json.JSONDecodeError) -> BadEvent:
    """Why a frame is not JSON. A NUL is named as such: JSON text never holds a raw one (it
    is always a decoding error), so looking for it waits until decoding failed."""
    if isinstance(frame, str):
        if "\x00" in frame:
            return BadEvent("frame contains a NUL character", code="invalid_frame")
    elif b"\x00" in bytes(frame):
        return BadEvent("frame contains a NUL byte", code="invalid_frame")
    text = str(exc)
    if "depth limit" in text or "recursion" in text:
        return BadEvent("frame is nested too deeply", code="too_deep")
    if "not valid UTF-8" in text:
        return BadEvent(f"frame is not valid UTF-8: {text}", code="invalid_utf8")
    if "byte order mark" in text:  # valid UTF-8, but JSON text never starts with one
        return BadEvent(f"frame starts with a byte order mark (BOM), which JSON text may not: {text}",
                        code="invalid_json")
    if "surrogate" in text:  # a \u escape of half a surrogate pair: no text (the frame itself is UTF-8)
        return BadEvent(f"frame is not valid JSON text: a \\u escape is an unpaired surrogate: {text}",
                        code="invalid_json")
    return BadEvent(f"frame is not valid JSON: {text}", code="invalid_json")


_TYPE_NAMES = {str: "a string", dict: "an object", int: "an integer", list: "an array"}


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


# --- function calls -------------------------------------------------------------------------

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
    if isinstance(raw, dict):  # lenient: some relays send the object itself
        arguments, raw = raw, json.dumps(raw)
    elif isinstance(raw, str):
        try:
            arguments = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadArguments(f"{name}: arguments are not valid JSON: {raw[:80]!r}", field="arguments") from None
    else:
        raise BadArguments(f"{name}: arguments must be a JSON string, got {json_kind(raw)}", field="arguments")
    if not isinstance(arguments, dict):
        raise BadArguments(f"{name}: arguments must be a JSON object, got {json_kind(arguments)}", field="arguments")
    item_id = item.get("id") if isinstance(item.get("id"), str) else None
    return FunctionCall(name, call_id, arguments, raw, item_id, response_id)


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
