"""Assembly of conversation messages from realtime events.

:class:`Conversations` is the intake's consumer; it keeps one :class:`Conversation` (the
assembly state) per connection, plus one for HTTP-posted events, and stores what is still
open as ``incomplete`` when the connection closes. A conversation turns items, transcripts
and transcript deltas into stored messages:

* a user's spoken turn is stored when its item is created (status ``pending``, empty
  content, so it keeps its place in the conversation) and completed when its transcription
  arrives, whether that is before or after the assistant's response (``incomplete`` if the
  connection ends first); a transcription that
  arrives before its item is stored at once and the item later adds nothing; a failed
  transcription is stored with status ``transcription_failed``;
* assistant text is the transcript (or text) deltas joined per ``item_id``, or the ``.done``
  transcript when deltas are missing, stored once per item when its response is done, with
  the response's final status (``completed``, ``cancelled``, ``incomplete``, ``failed``);
  whatever is still open when the connection closes is stored as ``incomplete``;
* ``session.created`` / ``conversation.created`` name the connection's session
  (``Peer.session``), which groups its messages.

Conversation handlers (``conversation`` topic) get ``(item_id, role, content)`` exactly as
ticos-client called them: ``""`` when a user item appears, the transcript when it is
known, and each assistant delta as it arrives.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .connection import Peer
from .events import Event, response_id_of
from .intake import Handler
from .logs import peer_text, said

log = logging.getLogger(__name__)

MAX_TRACKED = 2048
MAX_ITEM_CHARS = 256 * 1024  # an assistant message longer than this is cut (and logged)

PENDING = "pending"
COMPLETED = "completed"
TRANSCRIPTION_FAILED = "transcription_failed"
FINAL_STATUSES = ("completed", "cancelled", "incomplete", "failed")


class _AssistantItem:
    __slots__ = ("final", "item_id", "parts", "response_id", "role", "size")

    def __init__(self, item_id: str, response_id: str | None, role: str = "assistant"):
        self.item_id = item_id
        self.response_id = response_id
        self.parts: list[str] = []
        self.final: str | None = None
        self.role = role
        self.size = 0

    @property
    def text(self) -> str:
        return self.final or "".join(self.parts)


class MessageLog(Protocol):
    """What a conversation needs of the store."""

    def add_message(self, *, role: str, content: str, item_id: str | None, session_id: str | None = None,
                    status: str = "completed", response_id: str | None = None) -> str: ...

    def update_message(self, message_id: str, *, content: str | None = None, status: str | None = None) -> None: ...


#: ``emit(item_id, role, content)``: the integrators' ``conversation`` handlers.
Emit = Callable[[str, str, str], object]


class Conversations:
    """The intake's consumer: one :class:`Conversation` per peer, created on its first event."""

    def __init__(self, store: MessageLog | None, emit: Emit):
        self._store = store
        self._emit = emit
        self._by_peer: dict[Peer, Conversation] = {}

    def routes(self) -> Mapping[str, Handler]:
        return dict.fromkeys(_ROUTES, self._route)

    def of(self, peer: Peer) -> Conversation:
        conv = self._by_peer.get(peer)
        if conv is None:
            conv = self._by_peer[peer] = Conversation(self._store, self._emit, peer)
        return conv

    def open_items(self) -> int:
        """Assistant items being assembled, over every connection (bounded; for tests, health)."""
        return sum(len(c._assistant) for c in self._by_peer.values())

    def _route(self, event: Event, peer: Peer) -> None:
        _ROUTES[event.type](self.of(peer), event)

    def peer_closed(self, peer: Peer) -> None:
        conv = self._by_peer.pop(peer, None)
        if conv is not None:
            conv.close()


class Conversation:
    """Assembly state of one connection. ``store`` may be ``None`` (storage disabled)."""

    def __init__(self, store: MessageLog | None, emit: Emit, peer: Peer):
        self.store = store
        self.emit = emit
        self.peer = peer
        # item_id -> message id of user rows already stored (bounded)
        self._user_rows: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        self._assistant: dict[str, _AssistantItem] = {}
        self._stored_assistant: OrderedDict[str, None] = OrderedDict()  # item ids already stored
        self.stored = 0

    @property
    def session(self) -> str:
        return self.peer.session

    def _session_created(self, event: Event) -> None:
        sid = event.data["session"].get("id")
        if isinstance(sid, str) and sid:
            self.peer.session_id = sid

    def _conversation_created(self, event: Event) -> None:
        cid = event.data["conversation"].get("id")
        if isinstance(cid, str) and cid and self.peer.session_id is None:
            self.peer.session_id = cid

    # --- user turns ---------------------------------------------------------------------

    def _item_created(self, event: Event) -> None:
        item = event.data["item"]
        if item.get("type", "message") != "message" or item.get("role") != "user":
            return
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            return
        text, has_audio = _user_content(item.get("content"))
        row = self._user_rows.get(item_id)
        if row is not None:  # transcription came first, or a repeated/done item event
            if row[1] == PENDING and text:
                self._finish_user(item_id, text, COMPLETED)
                self._heard(text)
                self.emit(item_id, "user", text)
            return
        if text is not None:
            self._store_user(item_id, text, COMPLETED)
            self._heard(text)
            self.emit(item_id, "user", text)
        elif has_audio:
            self._store_user(item_id, "", PENDING)
            self.emit(item_id, "user", "")

    def _transcription_completed(self, event: Event) -> None:
        item_id = event.data["item_id"]
        transcript = event.data["transcript"]
        self._finish_user(item_id, transcript, COMPLETED)
        self._heard(transcript)
        self.emit(item_id, "user", transcript)

    def _heard(self, text: str) -> None:
        log.info("%s heard: %s", self.peer.name, said(text))

    def _transcription_failed(self, event: Event) -> None:
        item_id = event.data["item_id"]
        error = event.data.get("error")
        reason = error.get("message") if isinstance(error, dict) else None
        log.warning("%s: did not catch what was said (transcription of %s failed: %s)", self.peer.name,
                    peer_text(item_id), peer_text(reason or "no reason given"))
        self._finish_user(item_id, "", TRANSCRIPTION_FAILED)

    def _finish_user(self, item_id: str, text: str, status: str) -> None:
        row = self._user_rows.get(item_id)
        if row is None:
            self._store_user(item_id, text, status)
            return
        message_id, old_status = row
        if old_status != PENDING and status == TRANSCRIPTION_FAILED:
            return  # a late failure never erases a transcript we have
        self._user_rows[item_id] = (message_id, status)
        if self.store is not None and message_id is not None:
            self.store.update_message(message_id, content=text, status=status)

    def _store_user(self, item_id: str, text: str, status: str) -> None:
        message_id: str | None = None
        if self.store is not None:
            message_id = self.store.add_message(
                role="user", content=text, item_id=item_id, session_id=self.session, status=status
            )
            self.stored += 1
        self._user_rows[item_id] = (message_id, status)
        if len(self._user_rows) > MAX_TRACKED:
            self._user_rows.popitem(last=False)

    # --- assistant turns ----------------------------------------------------------------

    def _output_item_added(self, event: Event) -> None:
        item = event.data["item"]
        item_id = item.get("id")
        if (item.get("type") == "message" and isinstance(item_id, str) and item_id not in self._assistant
                and item_id not in self._stored_assistant):
            self._assistant[item_id] = _AssistantItem(item_id, response_id_of(event), _role(item))
            self._evict()

    def _assistant_item(self, event: Event) -> _AssistantItem:
        item_id = event.data["item_id"]
        entry = self._assistant.get(item_id)
        if entry is None:
            entry = self._assistant[item_id] = _AssistantItem(item_id, response_id_of(event))
            self._evict()
        elif entry.response_id is None:
            entry.response_id = response_id_of(event)
        return entry

    def _evict(self) -> None:
        if len(self._assistant) > MAX_TRACKED:  # a peer that never sends response.done
            self._flush_item(next(iter(self._assistant)), "incomplete")

    def _transcript_delta(self, event: Event) -> None:
        delta = event.data["delta"]
        if event.data["item_id"] in self._stored_assistant:  # a straggler after response.done
            self.emit(event.data["item_id"], "assistant", delta)
            return
        entry = self._assistant_item(event)
        if entry.size < MAX_ITEM_CHARS:
            entry.size += len(delta)
            entry.parts.append(delta)
            if entry.size >= MAX_ITEM_CHARS:
                log.warning("assistant item %s passed %d characters; the rest is not stored", peer_text(entry.item_id),
                            MAX_ITEM_CHARS)
        self.emit(entry.item_id, entry.role, delta)

    def _transcript_done(self, event: Event) -> None:
        text = event.data.get("transcript", event.data.get("text"))
        if isinstance(text, str) and event.data["item_id"] not in self._stored_assistant:
            self._assistant_item(event).final = text

    def _response_done(self, event: Event) -> None:
        response = event.data["response"]
        rid = response["id"]  # a string: events.parse checked it
        status = response.get("status")
        if status not in FINAL_STATUSES:
            status = "completed" if status is None else "incomplete"
        # items that only appear in response.done (no deltas were seen)
        output = response.get("output")
        if isinstance(output, list):
            for item in output:
                if not isinstance(item, dict) or item.get("type") != "message":
                    continue
                item_id = item.get("id")
                if not isinstance(item_id, str):
                    continue
                text = _assistant_content(item.get("content"))
                if item_id not in self._assistant and item_id not in self._stored_assistant and text:
                    entry = self._assistant[item_id] = _AssistantItem(item_id, rid, _role(item))
                    entry.final = text
        for item_id in [i for i, e in self._assistant.items() if e.response_id in (rid, None)]:
            self._flush_item(item_id, status)

    def _flush_item(self, item_id: str, status: str) -> None:
        entry = self._assistant.pop(item_id, None)
        if entry is None:
            return
        self._stored_assistant[item_id] = None
        if len(self._stored_assistant) > MAX_TRACKED:
            self._stored_assistant.popitem(last=False)
        text = entry.text
        if not text:
            return  # nothing was said (audio without transcript, or cut before any word)
        log.info("%s said: %s%s", self.peer.name, said(text), "" if status == COMPLETED else f" ({status})")
        if self.store is not None:
            self.store.add_message(
                role=entry.role, content=text, item_id=item_id, session_id=self.session,
                status=status, response_id=entry.response_id,
            )
            self.stored += 1

    def close(self) -> None:
        """The connection ended: store what is still open as ``incomplete`` (assistant text
        so far; user turns whose transcription never came)."""
        for item_id in list(self._assistant):
            self._flush_item(item_id, "incomplete")
        for item_id, (message_id, status) in list(self._user_rows.items()):
            if status == PENDING:
                self._user_rows[item_id] = (message_id, "incomplete")
                if self.store is not None and message_id is not None:
                    self.store.update_message(message_id, status="incomplete")


def _role(item: dict[str, Any]) -> str:
    role = item.get("role")
    return role if role in ("assistant", "system") else "assistant"


def _user_content(content: Any) -> tuple[str | None, bool]:
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


def _assistant_content(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    out = []
    for part in content:
        if isinstance(part, dict):
            text = part.get("transcript") if part.get("type") in ("audio", "output_audio") else part.get("text")
            if isinstance(text, str):
                out.append(text)
    return "".join(out)


_ROUTES = {
    "session.created": Conversation._session_created,
    "conversation.created": Conversation._conversation_created,
    "conversation.item.created": Conversation._item_created,
    "conversation.item.done": Conversation._item_created,
    "conversation.item.input_audio_transcription.completed": Conversation._transcription_completed,
    "conversation.item.input_audio_transcription.failed": Conversation._transcription_failed,
    "response.output_item.added": Conversation._output_item_added,
    "response.audio_transcript.delta": Conversation._transcript_delta,
    "response.text.delta": Conversation._transcript_delta,
    "response.audio_transcript.done": Conversation._transcript_done,
    "response.text.done": Conversation._transcript_done,
    "response.done": Conversation._response_done,
}
