"""Assembly of conversation messages from realtime events.

:class:`Conversations` is the intake's consumer. Items are the conversation's, not the
socket's: every item is kept by its ``item_id`` across connections, so a voice agent that
drops its socket mid-response and continues on a new one continues the same rows.

* a user's spoken turn is stored when its item is created (status ``pending``, empty
  content, so it keeps its place in the conversation) and completed when its transcription
  arrives, whether that is before or after the assistant's response, on this socket or the
  next; a transcription that arrives before its item is stored at once and the item later
  adds nothing; a failed transcription is stored with status ``transcription_failed``;
* assistant text is the ``.done`` transcript (or text), else the item's content in
  ``response.done`` (the whole text, also when deltas were missed or a socket was cut after
  some of them), else the transcript (or text) deltas joined per ``item_id``; stored once per
  item when its response is done, with the response's final status (``completed``,
  ``cancelled``, ``incomplete``, ``failed``);
* when a connection closes, what it left open waits ``grace`` seconds for the voice agent
  to come back and continue it; then (or when the agent stops) assistant text so far is
  stored as ``incomplete`` and pending user turns become ``incomplete``. Continued later
  still, the same rows are updated in place (one row per item, never two);
* the agent's own items (priming, :mod:`ticos_agent.memory.priming`) are not stored, nor the
  items of a silent out-of-band response (``conversation_id: null`` and no audio among its
  output modalities: a side task outside the conversation, such as a mood check; the
  ``response.done`` handlers still get it whole). One the robot speaks aloud (an announcement)
  is stored like any answer: the person heard it;
* an item id met again in another session (both named by the voice agent, e.g. one restarted
  that numbers its items anew) is a new item: it gets its own row, the old session's row is
  left as it was;
* ``session.created`` / ``conversation.created`` name the connection's session
  (``Peer.session``), which groups its messages.

Conversation handlers (``conversation`` topic) get ``(item_id, role, content)`` exactly as
ticos-client called them: ``""`` when a user item appears, the transcript when it is
known, and each assistant delta as it arrives.

A store that is closed (the agent stopping while a socket is still open) is expected: the
conversation goes on as usual without storing, and one warning says so.

What is kept per item (and the readers of an item's content) is in
:mod:`~ticos_agent.conversation_items`; its names are importable from here too.

Runs on the loop thread; state is bounded by count, however long the session:

* items being assembled: ``MAX_OPEN_PER_PEER`` per connection (a voice agent that leaves some
  responses without ``response.done``; one warning says so) and ``MAX_TRACKED`` in all; beyond
  either, the oldest is stored as ``incomplete`` at once and stays open to be continued (its
  row is then updated in place: nothing is lost or stored twice);
* user rows and stored assistant items (what a late transcript or a continued item finds):
  the latest ``MAX_TRACKED`` of each. A transcript for a user item older than that is stored as
  a row of its own; a straggler delta of an older assistant item makes a new row;
* connections within their ``grace``: forgotten when it ends;
* the text of one assistant item: ``MAX_ITEM_CHARS`` (:mod:`~ticos_agent.conversation_items`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping

from .connection import Peer
from .conversation_items import (
    CANCELLED,
    COMPLETED,
    FINAL_STATUSES,
    INCOMPLETE,
    MAX_ITEM_CHARS,
    PENDING,
    TRANSCRIPTION_FAILED,
    AssistantItem,
    Emit,
    MessageLog,
    StoredItem,
    UserRow,
    assistant_content,
    item_role,
    user_content,
)
from .errors import StoreClosed
from .events import Event, response_id_of
from .intake import Handler
from .logs import peer_text, said
from .replies import is_agent_item

__all__ = ["COMPLETED", "FINAL_STATUSES", "INCOMPLETE", "MAX_ITEM_CHARS", "MAX_OPEN_PER_PEER", "MAX_TRACKED",
           "PENDING", "TRANSCRIPTION_FAILED", "Conversations", "Emit", "MessageLog"]

log = logging.getLogger(__name__)

MAX_TRACKED = 2048
MAX_OPEN_PER_PEER = 16  # items one connection has open at once; beyond it the oldest is stored (incomplete)


class Conversations:
    """The intake's consumer. ``store`` may be ``None`` (storage disabled)."""

    def __init__(self, store: MessageLog | None, emit: Emit, *, grace: float,
                 aside: Callable[[str | None, str | None], bool | None],
                 interrupted: Callable[[str | None, str | None], str | None]):
        self.store = store
        self.emit = emit
        self.grace = grace
        self._aside = aside  # Turns.aside: out of band (True: a silent side task), per session
        self._interrupted = interrupted  # Turns.interrupted
        self._users: OrderedDict[str, UserRow] = OrderedDict()
        self._open: dict[str, AssistantItem] = {}
        self._stored: OrderedDict[str, StoredItem] = OrderedDict()
        self._waiting: dict[Peer, asyncio.TimerHandle] = {}  # closed peers within their grace
        self.stored = 0
        self._closed_said = False
        self._open_said = False

    def routes(self) -> Mapping[str, Handler]:
        return {etype: getattr(self, name) for etype, name in _ROUTES.items()}

    def open_items(self) -> int:
        """Assistant items being assembled, over every connection (bounded; for tests, health)."""
        return len(self._open)

    # --- connections ----------------------------------------------------------------------

    def peer_closed(self, peer: Peer) -> None:
        """Give the voice agent ``grace`` seconds to continue what ``peer`` left open."""
        if self.grace <= 0 or not self._owned_by(peer):
            self._expire(peer)
            return
        self._waiting[peer] = asyncio.get_running_loop().call_later(self.grace, self._expire, peer)

    def close(self) -> None:
        """The agent stops: store everything still open now."""
        for handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        for item_id in list(self._open):
            self._flush(item_id, INCOMPLETE, open_again=True)
        for row in self._users.values():
            self._give_up(row)

    def _owned_by(self, peer: Peer) -> bool:
        return (bool(self._open_of(peer))
                or any(r.owner is peer and r.status == PENDING for r in self._users.values()))

    def _expire(self, peer: Peer) -> None:
        self._waiting.pop(peer, None)
        for item_id in self._open_of(peer):
            self._flush(item_id, INCOMPLETE, open_again=True)
        for row in self._users.values():
            if row.owner is peer:
                self._give_up(row)
        if self.store is not None:
            for session in {peer.session, peer.local_session}:
                self.store.session_ended(session)

    def _give_up(self, row: UserRow) -> None:
        if row.status == PENDING:
            row.status = INCOMPLETE
            self._update(row.message_id, status=INCOMPLETE)

    # --- sessions -------------------------------------------------------------------------

    def _session_created(self, event: Event, peer: Peer) -> None:
        sid = event.data["session"].get("id")
        if isinstance(sid, str) and sid:
            peer.name_session(sid)

    def _conversation_created(self, event: Event, peer: Peer) -> None:
        cid = event.data["conversation"].get("id")
        if isinstance(cid, str) and cid and peer.session_id is None:
            peer.name_session(cid)

    # --- user turns -----------------------------------------------------------------------

    def _item_created(self, event: Event, peer: Peer) -> None:
        item = event.data["item"]
        if item.get("type", "message") != "message" or item.get("role") != "user":
            return
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id or is_agent_item(item_id):
            return  # (the agent's own priming item is not something the user said)
        text, has_audio = user_content(item.get("content"))
        row = self._user_row(item_id, peer)
        if row is not None:  # transcription came first, or a repeated/done item event
            row.owner = peer
            if row.status in (PENDING, INCOMPLETE) and text:
                self._finish_user(item_id, text, COMPLETED, peer)
                self._heard(peer, text)
                self.emit(item_id, "user", text)
            return
        if text is not None:
            self._store_user(item_id, text, COMPLETED, peer)
            self._heard(peer, text)
            self.emit(item_id, "user", text)
        elif has_audio:
            self._store_user(item_id, "", PENDING, peer)
            self.emit(item_id, "user", "")

    def _transcription_completed(self, event: Event, peer: Peer) -> None:
        item_id = event.data["item_id"]
        transcript = event.data["transcript"]
        self._finish_user(item_id, transcript, COMPLETED, peer)
        self._heard(peer, transcript)
        self.emit(item_id, "user", transcript)

    @staticmethod
    def _heard(peer: Peer, text: str) -> None:
        log.info("%s heard: %s", peer.name, said(text))

    def _transcription_failed(self, event: Event, peer: Peer) -> None:
        item_id = event.data["item_id"]
        error = event.data.get("error")
        reason = error.get("message") if isinstance(error, dict) else None
        log.warning("%s: did not catch what was said (transcription of %s failed: %s)", peer.name,
                    peer_text(item_id), peer_text(reason or "no reason given"))
        self._finish_user(item_id, "", TRANSCRIPTION_FAILED, peer)

    def _user_row(self, item_id: str, peer: Peer) -> UserRow | None:
        """The row of ``item_id`` in ``peer``'s conversation (``None``: one of another session)."""
        row = self._users.get(item_id)
        return None if row is None or row.owner.other_session(peer) else row

    def _finish_user(self, item_id: str, text: str, status: str, peer: Peer) -> None:
        row = self._user_row(item_id, peer)
        if row is None:
            self._store_user(item_id, text, status, peer)
            return
        row.owner = peer
        if row.status not in (PENDING, INCOMPLETE) and status == TRANSCRIPTION_FAILED:
            return  # a late failure never erases a transcript we have
        row.status = status
        self._update(row.message_id, content=text, status=status)

    def _store_user(self, item_id: str, text: str, status: str, peer: Peer) -> None:
        earlier = self._users.pop(item_id, None)  # another session's row of that id: no longer tracked,
        if earlier is not None:                   # so it is stored incomplete now if still waiting (as
            self._give_up(earlier)                # an assistant item is), and this one is the newest
        message_id = self._add("user", text, item_id, peer.session, status)
        self._users[item_id] = UserRow(message_id, status, peer)
        if len(self._users) > MAX_TRACKED:
            self._users.popitem(last=False)

    # --- assistant turns ------------------------------------------------------------------

    def _is_aside(self, event: Event, peer: Peer) -> bool:  # of a silent side task: not the conversation's
        return self._aside(response_id_of(event), peer.session_id) is True

    def _item(self, item_id: str, response_id: str | None, peer: Peer, role: str = "assistant"
              ) -> AssistantItem | None:
        """The open item ``item_id`` (continued on ``peer`` now), made or opened again as
        needed; ``None`` when it was already stored for good (a straggler)."""
        entry = self._open.get(item_id)
        if entry is not None and entry.owner.other_session(peer):  # another session's, left open
            self._flush(item_id, INCOMPLETE, open_again=False)
            entry = None
        if entry is None:
            stored = self._stored.get(item_id)
            if stored is not None and stored.item.owner.other_session(peer):
                del self._stored[item_id]  # another session's item of that id: this one is new
                stored = None
            if stored is not None:
                if not stored.open_again:
                    return None
                del self._stored[item_id]  # its socket was cut and the voice agent goes on
                entry = stored.item
            else:
                entry = AssistantItem(item_id, response_id, peer, role)
            self._open[item_id] = entry
            mine = self._open_of(peer)
            if len(mine) > MAX_OPEN_PER_PEER:  # a voice agent that does not send every response.done
                self._too_many_open(peer)
                self._flush(mine[0], INCOMPLETE, open_again=True)
            if len(self._open) > MAX_TRACKED:
                self._flush(next(iter(self._open)), INCOMPLETE, open_again=True)
        entry.owner = peer
        if entry.response_id is None:
            entry.response_id = response_id
        return entry

    def _open_of(self, peer: Peer) -> list[str]:
        """The ids of the items open on ``peer``, oldest first."""
        return [i for i, e in self._open.items() if e.owner is peer]

    def _too_many_open(self, peer: Peer) -> None:
        if not self._open_said:
            self._open_said = True
            log.warning("%s has %d assistant items open: some of its responses were never done; the oldest "
                        "open one is stored as incomplete now (continued, its row is updated in place); "
                        "said once", peer.name, MAX_OPEN_PER_PEER + 1)

    def _output_item_added(self, event: Event, peer: Peer) -> None:
        item = event.data["item"]
        item_id = item.get("id")
        if item.get("type") == "message" and isinstance(item_id, str) and not self._is_aside(event, peer):
            self._item(item_id, response_id_of(event), peer, item_role(item))

    def _transcript_delta(self, event: Event, peer: Peer) -> None:
        item_id, delta = event.data["item_id"], event.data["delta"]
        if self._is_aside(event, peer):
            return
        entry = self._item(item_id, response_id_of(event), peer)
        if entry is None:  # a straggler after response.done: the handlers still hear it
            self.emit(item_id, "assistant", delta)
            return
        entry.add(delta)
        self.emit(item_id, entry.role, delta)

    def _transcript_done(self, event: Event, peer: Peer) -> None:
        text = event.data.get("transcript", event.data.get("text"))
        if isinstance(text, str) and not self._is_aside(event, peer):
            entry = self._item(event.data["item_id"], response_id_of(event), peer)
            if entry is not None:
                entry.final = text

    def _response_done(self, event: Event, peer: Peer) -> None:
        response = event.data["response"]
        rid = response["id"]  # a string: events.parse checked it
        aside = self._aside(rid, peer.session_id)
        if aside is True:  # a silent side task: none of it is said
            for gone in [i for i, e in self._open.items() if e.response_id == rid and not e.owner.other_session(peer)]:
                del self._open[gone]  # (its response.created was missed: they were taken in)
            return
        status = response.get("status")
        if status not in FINAL_STATUSES:
            status = COMPLETED if status is None else INCOMPLETE
        # a spoken out-of-band answer: the server goes on with it when talked over
        if status == COMPLETED and aside is False and self._interrupted(rid, peer.session_id):
            status = CANCELLED  # talked over: the robot did not go on with it
        output = response.get("output")
        if isinstance(output, list):  # items that only appear in response.done (no deltas were seen)
            for item in output:
                if not isinstance(item, dict) or item.get("type") != "message":
                    continue
                item_id = item.get("id")
                text = assistant_content(item.get("content"))
                if isinstance(item_id, str) and text:
                    entry = self._item(item_id, rid, peer, item_role(item))
                    if entry is not None and entry.final is None:
                        # the whole text: of an item whose deltas were missed or cut off with a socket
                        entry.final = text
        done = [i for i, e in self._open.items()
                if (e.response_id == rid and not e.owner.other_session(peer))
                or (e.response_id is None and e.owner is peer)]
        for item_id in done:
            self._flush(item_id, status, open_again=False)

    def _flush(self, item_id: str, status: str, *, open_again: bool) -> None:
        entry = self._open.pop(item_id, None)
        if entry is None:
            return
        self._stored[item_id] = StoredItem(entry, status, open_again)
        if len(self._stored) > MAX_TRACKED:
            self._stored.popitem(last=False)
        text = entry.text
        if not text:
            return  # nothing was said (audio without transcript, or cut before any word)
        log.info("%s said: %s%s", entry.owner.name, said(text), "" if status == COMPLETED else f" ({status})")
        if entry.message_id is None:
            entry.message_id = self._add(entry.role, text, item_id, entry.owner.session, status, entry.response_id)
        else:  # stored when its socket was cut; the same row now holds the rest
            self._update(entry.message_id, content=text, status=status)

    # --- the store ------------------------------------------------------------------------

    def _add(self, role: str, content: str, item_id: str, session_id: str | None, status: str,
             response_id: str | None = None) -> str | None:
        """Store a message; its id, or ``None`` when it was not stored (no store, or closed)."""
        if self.store is None:
            return None
        try:
            message_id = self.store.add_message(role=role, content=content, item_id=item_id, session_id=session_id,
                                                status=status, response_id=response_id)
        except StoreClosed as exc:
            self._not_stored(exc, f"the {role} message of item {peer_text(item_id)}")
            return None
        self.stored += 1
        return message_id

    def _update(self, message_id: str | None, *, content: str | None = None, status: str) -> None:
        if self.store is None or message_id is None:
            return
        try:
            self.store.update_message(message_id, content=content, status=status)
        except StoreClosed as exc:
            self._not_stored(exc, f"the {status} update of message {message_id}")

    def _not_stored(self, exc: StoreClosed, what: str) -> None:
        if not self._closed_said:
            self._closed_said = True
            log.warning("%s; conversation messages are not stored from now on (first not stored: %s)", exc, what)


_ROUTES = {
    "session.created": "_session_created",
    "conversation.created": "_conversation_created",
    "conversation.item.created": "_item_created",
    "conversation.item.done": "_item_created",
    "conversation.item.input_audio_transcription.completed": "_transcription_completed",
    "conversation.item.input_audio_transcription.failed": "_transcription_failed",
    "response.output_item.added": "_output_item_added",
    "response.audio_transcript.delta": "_transcript_delta",
    "response.text.delta": "_transcript_delta",
    "response.audio_transcript.done": "_transcript_done",
    "response.text.done": "_transcript_done",
    "response.done": "_response_done",
}
