"""Priming: tell a voice agent that connects what the robot remembers.

With ``[memory] prime = "user"`` or ``"system"``, :class:`Primer` sends each voice agent's
socket one ``conversation.item.create`` when it opens, and again after a ``session.created``
that names a new session on it (a voice agent may open a new upstream session on the same
socket); the ``session.created`` that follows the opening of a socket is the session the
item went to, so it is not sent twice. The item::

    {"type": "conversation.item.create", "event_id": "event_ticos_7",
     "item": {"id": "ticos_memory_1a2b3c4d", "type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "<what the robot remembers>"}]}}

``role`` is ``user`` (as ticos-client's ``send_user_prompt_update`` did; it also sent an
assistant "OK" with a ``previous_item_id`` the Realtime API does not know, which is left
out here) or ``system``. The text holds the latest ``long_term`` memory, the facts (newest
first, at most ``MAX_FACTS``) and, with ``prime_rounds``, the last rounds; when there is none
of these nothing is sent. A socket that closes before the send is harmless (the send
returns 0).

The item's id starts with :data:`ticos_agent.replies.AGENT_ITEM_PREFIX`: the voice agent echoes it as a
``conversation.item.created``, and the conversation does not store it as something the user
said (:func:`ticos_agent.replies.is_agent_item`).

Thread and timing: the handlers run on the loop in the intake's path and only spawn the
send; the store's reads happen in that task.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from ..connection import Peer, Send
from ..events import Event
from ..intake import Handler
from ..replies import AGENT_ITEM_PREFIX, reply_id
from .model import Memory

log = logging.getLogger(__name__)

__all__ = ["MAX_FACTS", "MAX_TEXT", "Primer"]

MAX_FACTS = 30
MAX_TEXT = 12000  # characters of one priming text


class Remembered(Protocol):
    async def flush(self) -> None: ...

    async def latest_memory(self, kind: str = "long_term") -> Memory | None: ...

    async def facts(self, limit: int = 50) -> list[Memory]: ...

    async def recent_messages(self, count: int) -> list[dict[str, Any]]: ...


async def memory_text(store: Remembered, *, rounds: int = 0) -> str:
    """What the robot remembers, as the voice agent is told (``""`` when nothing)."""
    latest = await store.latest_memory("long_term")
    facts = await store.facts(MAX_FACTS)
    recent: list[dict[str, Any]] = []
    if rounds > 0:
        await store.flush()  # the last words are committed, so they are read
        recent = await store.recent_messages(rounds * 2)
    parts = []
    if latest is not None and latest.content.strip():
        parts.append("What you remember from earlier conversations with the user:\n" + latest.content.strip())
    if facts:
        parts.append("Facts you know:\n" + "\n".join(f"- {f.content.strip()}" for f in facts if f.content.strip()))
    lines = [f"{m.get('role', '?')}: {m['content']}" for m in recent if m.get("content")]
    if lines:
        parts.append("The last exchanges:\n" + "\n".join(lines))
    text = "\n\n".join(parts)
    return text[:MAX_TEXT]


def priming_item(text: str, role: str) -> dict[str, Any]:
    """The ``conversation.item.create`` carrying ``text`` as a ``role`` message."""
    return {"type": "conversation.item.create", "event_id": reply_id(),
            "item": {"id": AGENT_ITEM_PREFIX + secrets.token_hex(4), "type": "message", "role": role,
                     "content": [{"type": "input_text", "text": text}]}}


class Primer:
    """The intake's consumer that primes each socket peer; ``role`` is ``user`` or ``system``."""

    def __init__(self, store: Remembered, *, role: str, rounds: int, send: Send,
                 spawn: Callable[[Coroutine[Any, Any, Any]], object]):
        if role not in ("user", "system"):
            raise ValueError(f"role must be 'user' or 'system', not {role!r}")
        self._store = store
        self.role = role
        self.rounds = rounds
        self._send = send
        self._spawn = spawn
        self._sessions: dict[Peer, str | None] = {}  # the session each peer was primed for (None: at connect)
        self.sent = 0

    def routes(self) -> Mapping[str, Handler]:
        return {"session.created": self._session_created}

    def peer_opened(self, peer: Peer) -> None:
        if peer.ws is None:
            return
        self._sessions[peer] = None
        self._spawn(self._prime(peer, "connected"))

    def peer_closed(self, peer: Peer) -> None:
        self._sessions.pop(peer, None)

    def _session_created(self, event: Event, peer: Peer) -> None:
        if peer.ws is None or event.data["session"].get("type") == "transcription":
            return
        sid = event.data["session"].get("id")
        session = sid if isinstance(sid, str) else ""
        if peer in self._sessions:
            primed = self._sessions[peer]
            if primed is None or primed == session:  # the session primed at connect, or a repeat
                self._sessions[peer] = session
                return
        self._sessions[peer] = session
        self._spawn(self._prime(peer, "session.created"))

    async def _prime(self, peer: Peer, why: str) -> None:
        try:
            text = await memory_text(self._store, rounds=self.rounds)
        except Exception as exc:
            log.warning("memory: could not read what to prime %s with: %s", peer.name, exc)
            return
        if not text:
            log.info("memory: nothing remembered yet to prime %s with", peer.name)
            return
        if await self._send(priming_item(text, self.role), peer):
            self.sent += 1
            log.info("memory: %s %s: primed with what the robot remembers (%s item, %d characters)", why,
                     peer.name, self.role, len(text))
