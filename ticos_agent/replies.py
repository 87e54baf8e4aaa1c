"""Events the agent sends to the voice agent: error replies, call outputs, truncation, response.create.

Pure builders of JSON objects (no I/O); each carries a fresh ``event_id`` of the agent's own
(``event_ticos_<n>``), so a voice agent's log can tell them apart from its own events.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

_reply_ids = itertools.count(1)


#: Items the agent creates in the voice agent's conversation start with this (priming, see
#: :mod:`ticos_agent.memory.priming`).
AGENT_ITEM_PREFIX = "ticos_memory_"


def reply_id() -> str:
    return f"event_ticos_{next(_reply_ids)}"


def is_agent_item(item_id: object) -> bool:
    """Whether a conversation item is one the agent created (a priming item)."""
    return isinstance(item_id, str) and item_id.startswith(AGENT_ITEM_PREFIX)


def error_event(code: str, message: str, event_id: str | None = None) -> dict[str, Any]:
    """The wire ``error`` event for a frame the agent could not use (``event_id``: the frame's)."""
    return {"type": "error", "event_id": reply_id(),
            "error": {"type": "invalid_request_error", "code": code, "message": message, "event_id": event_id}}


def function_call_output(call_id: str, result: Any) -> dict[str, Any]:
    """A ``conversation.item.create`` carrying a call's outcome as its ``function_call_output``."""
    return {"type": "conversation.item.create", "event_id": reply_id(),
            "item": {"type": "function_call_output", "call_id": call_id, "output": json.dumps(result, default=str)}}


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    """Tell the voice agent how much of an assistant item was heard before a barge-in."""
    return {"type": "conversation.item.truncate", "event_id": reply_id(),
            "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}


def response_create() -> dict[str, Any]:
    """Ask the voice agent's model to respond now (after an output it must speak about)."""
    return {"type": "response.create", "event_id": reply_id()}
