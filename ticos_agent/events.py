"""Realtime frames -> typed, validated events.

:func:`parse` turns one WebSocket frame (``str`` or ``bytes``) or an already-decoded ``dict``
into an :class:`Event`, or raises :class:`~ticos_agent.errors.BadEvent` with a short ``code``
the server sends back to the voice agent. Both spellings of the realtime protocol are
accepted: the GA names (``response.output_audio.delta`` ...) are folded into the beta names
(``response.audio.delta`` ...) so the rest of the agent deals with one vocabulary;
``Event.wire_type`` keeps what was on the wire.

Function-call arguments are checked in :mod:`ticos_agent.arguments`; their names are
re-exported here, where drivers written before that split import them from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .arguments import EMOTION_FUNCTIONS as EMOTION_FUNCTIONS  # re-exported: see the docstring
from .arguments import MAX_DURATION as MAX_DURATION
from .arguments import MAX_REPEAT as MAX_REPEAT
from .arguments import MOTION_FUNCTIONS as MOTION_FUNCTIONS
from .arguments import SPEED_RANGE as SPEED_RANGE
from .arguments import EmotionArgs as EmotionArgs
from .arguments import FunctionCall as FunctionCall
from .arguments import MotionArgs as MotionArgs
from .arguments import emotion_args as emotion_args
from .arguments import function_call as function_call
from .arguments import json_kind as json_kind
from .arguments import motion_args as motion_args
from .errors import BadEvent

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


def out_of_band(response: dict[str, Any]) -> bool:
    """Whether a ``response`` object (of ``response.created`` / ``response.done``) is outside the
    conversation: created with ``conversation: "none"``, which the server tells by a
    ``conversation_id`` of ``null`` (a response of the conversation has its id; a sender that
    gives no ``conversation_id`` at all is taken as in the conversation). Its items are not the
    conversation's, and turn detection does not cancel it when the user talks."""
    return "conversation_id" in response and response["conversation_id"] is None


def side_task(response: dict[str, Any]) -> bool:
    """Whether a ``response`` object is a silent side task: out of band and without audio. Every
    consumer asks :meth:`ticos_agent.turns.Turns.side_task` (what ``response.created``, or
    ``response.done`` when that was missed, said, per session)."""
    return out_of_band(response) and not spoken(response)


def spoken(response: dict[str, Any]) -> bool:
    """Whether a ``response`` object may carry audio: its ``output_modalities`` (GA) or
    ``modalities`` (beta) name ``audio``, or it names none (then it may)."""
    modalities = response.get("output_modalities", response.get("modalities"))
    return not isinstance(modalities, list) or "audio" in modalities


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


_TYPE_NAMES = {str: "a string", dict: "an object", int: "an integer", list: "an array"}


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
