"""One peer of ``/realtime`` (or the HTTP intake), and the events the agent sends back."""

from __future__ import annotations

import itertools
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .conversation import Conversation

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("ticos_agent")

_reply_ids = itertools.count(1)


class Connection:
    """One peer of ``/realtime`` (or the HTTP intake), with its own conversation state."""

    _ids = itertools.count(1)

    def __init__(self, agent: Agent, ws: web.WebSocketResponse | None, peer: str):
        self.id = next(self._ids)
        self.name = f"{'ws' if ws is not None else 'http'}#{self.id}({peer})"
        self.ws = ws
        self.conversation = Conversation(agent.store, agent.dispatcher, name=self.name)

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def send_now(self, event: dict) -> bool:
        if not self.open:
            return False
        try:
            await self.ws.send_str(json.dumps(event))
            return True
        except (ConnectionError, RuntimeError) as exc:
            log.warning("could not send %s to %s: %s", event.get("type"), self.name, exc)
            return False


def error_event(code: str, message: str, event_id: str | None = None) -> dict:
    return {"type": "error", "event_id": reply_id(),
            "error": {"type": "invalid_request_error", "code": code, "message": message, "event_id": event_id}}


def function_call_output(call_id: str, result: Any) -> dict:
    return {"type": "conversation.item.create", "event_id": reply_id(),
            "item": {"type": "function_call_output", "call_id": call_id, "output": json.dumps(result, default=str)}}


def reply_id() -> str:
    return f"event_ticos_{next(_reply_ids)}"
