"""What :class:`~ticos_agent.conversation.Conversations` keeps per item, and how it reads items.

* :class:`AssistantItem`: an assistant (or system) item being assembled: its deltas, its
  ``.done`` text, the connection that continues it and its row once stored;
* :class:`StoredItem`: an assistant item already stored (``open_again`` when its socket was
  cut, not its response);
* :class:`UserRow`: the row of a user's turn and its status;
* the message statuses, :class:`MessageLog` (what a conversation needs of the store) and
  :data:`Emit` (the integrators' ``conversation`` handlers);
* readers of a realtime item's ``content``: :func:`user_content`, :func:`assistant_content`,
  :func:`item_role`.

No state of its own and no I/O; used on the loop thread by the conversation. Bound: an
assistant item keeps at most ``MAX_ITEM_CHARS`` characters; beyond that the rest is not
stored (one warning per item says so). Its log records are the conversation's
(``ticos_agent.conversation``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from .connection import Peer
from .logs import peer_text

log = logging.getLogger(__name__)

MAX_ITEM_CHARS = 256 * 1024  # an assistant message longer than this is cut (and logged)

PENDING = "pending"
COMPLETED = "completed"
INCOMPLETE = "incomplete"
TRANSCRIPTION_FAILED = "transcription_failed"
FINAL_STATUSES = ("completed", "cancelled", "incomplete", "failed")
CANCELLED = "cancelled"


class AssistantItem:
    __slots__ = ("final", "item_id", "message_id", "owner", "parts", "response_id", "role", "size")

    def __init__(self, item_id: str, response_id: str | None, owner: Peer, role: str = "assistant"):
        self.item_id = item_id
        self.response_id = response_id
        self.owner = owner
        self.parts: list[str] = []
        self.final: str | None = None
        self.role = role
        self.size = 0
        self.message_id: str | None = None  # set when it was stored before (cut off, then continued)

    @property
    def text(self) -> str:
        return self.final or "".join(self.parts)

    def add(self, delta: str) -> None:
        if self.size < MAX_ITEM_CHARS:
            self.size += len(delta)
            self.parts.append(delta)
            if self.size >= MAX_ITEM_CHARS:
                log.warning("assistant item %s passed %d characters; the rest is not stored",
                            peer_text(self.item_id), MAX_ITEM_CHARS)


class StoredItem:
    """An assistant item already stored: ``open_again`` when its socket was cut, not its response."""

    __slots__ = ("item", "open_again", "status")

    def __init__(self, item: AssistantItem, status: str, open_again: bool):
        self.item, self.status, self.open_again = item, status, open_again


class UserRow:
    __slots__ = ("message_id", "owner", "status")

    def __init__(self, message_id: str | None, status: str, owner: Peer):
        self.message_id, self.status, self.owner = message_id, status, owner


class MessageLog(Protocol):
    """What a conversation needs of the store."""

    def add_message(self, *, role: str, content: str, item_id: str | None, session_id: str | None = None,
                    status: str = "completed", response_id: str | None = None) -> str: ...

    def update_message(self, message_id: str, *, content: str | None = None, status: str | None = None) -> None: ...

    def session_ended(self, session_id: str) -> None: ...


#: ``emit(item_id, role, content)``: the integrators' ``conversation`` handlers.
Emit = Callable[[str, str, str], object]


def item_role(item: dict[str, Any]) -> str:
    role = item.get("role")
    return role if role in ("assistant", "system") else "assistant"


def user_content(content: Any) -> tuple[str | None, bool]:
    """(text if the item already carries it, whether it is spoken audio)."""
    if not isinstance(content, list):
        return None, False
    texts: list[str] = []
    has_audio = False
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "input_text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_audio":
            has_audio = True
            if isinstance(part.get("transcript"), str):
                texts.append(part["transcript"])
    return ("".join(texts) if texts else None), has_audio


def assistant_content(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    out = []
    for part in content:
        if isinstance(part, dict):
            text = part.get("transcript") if part.get("type") in ("audio", "output_audio") else part.get("text")
            if isinstance(text, str):
                out.append(text)
    return "".join(out)
