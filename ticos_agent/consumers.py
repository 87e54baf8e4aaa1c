"""The intake's small consumers: audio feed, event log, the voice agent's errors, handlers.

Each takes the one collaborator it needs and routes the event types it uses (see
:mod:`ticos_agent.intake`). The bigger consumers have modules of their own:
:mod:`~ticos_agent.conversation`, :mod:`~ticos_agent.turns`, :mod:`~ticos_agent.calls`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from .connection import Peer
from .dispatch import Dispatcher
from .errors import StoreClosed
from .events import SHAPES, Event, response_id_of
from .intake import EVERY, Handler
from .logs import peer_text

log = logging.getLogger(__name__)


class AudioIn(Protocol):
    def feed(self, audio: str | bytes, *, response_id: str | None, item_id: str | None) -> None: ...


class AudioFeed:
    """``response.audio.delta`` -> the player (which rejects bad deltas with ``BadAudio``)."""

    def __init__(self, player: AudioIn):
        self._player = player

    def routes(self) -> Mapping[str, Handler]:
        return {"response.audio.delta": self._delta}

    def _delta(self, event: Event, peer: Peer) -> None:
        data = event.data
        self._player.feed(data["delta"], response_id=response_id_of(event), item_id=data["item_id"])


class EventRecorder(Protocol):
    def log_event(self, type: str, *, session_id: str | None = None, event_id: str | None = None,
                  item_id: str | None = None, response_id: str | None = None) -> None: ...


#: longest type or id an event-log line keeps (a realtime server's ids are ~30 characters): a
#: frame may be 1 MiB, and a line of it must not cost the card that much
MAX_LOGGED = 128


#: distinct type names the event log keeps per run for types the agent does not act on; a
#: type name is stored once for good (``event_types``), so a peer sending ever new names would
#: grow the database for ever: later ones are logged as ``OTHER_TYPES``
MAX_OTHER_TYPES = 256
OTHER_TYPES = "(other types)"


class EventLog:
    """Every event but the deltas -> one compact row (type and ids, never payloads; each cut to
    ``MAX_LOGGED`` characters, ending with an ellipsis when cut).

    Of the types the agent does not act on, the first ``MAX_OTHER_TYPES`` names of a run are
    kept as they are and later ones logged as ``OTHER_TYPES`` (warned once). A closed store
    (the agent stopping while a socket is still open) is expected: the event is not logged,
    and one warning says so."""

    def __init__(self, store: EventRecorder):
        self._store = store
        self._closed_said = False
        self._other_types: set[str] = set()
        self._others_said = False

    def routes(self) -> Mapping[str, Handler | None]:
        # the known deltas (most frames) do not reach it at all; unknown ones return at once
        return {EVERY: self._record, **dict.fromkeys((t for t in SHAPES if t.endswith(".delta")), None)}

    def _record(self, event: Event, peer: Peer) -> None:
        if event.type.endswith(".delta"):
            return
        data = event.data
        item_id = data.get("item_id")
        if item_id is None and isinstance(data.get("item"), dict):
            item_id = data["item"].get("id")
        response_id = data.get("response_id")
        if response_id is None and isinstance(data.get("response"), dict):
            response_id = data["response"].get("id")
        etype = _cut(event.type)
        if not event.known and etype not in self._other_types:
            etype = self._other_type(etype)
        try:
            self._store.log_event(etype, session_id=peer.session, event_id=_str(event.event_id),
                                  item_id=_str(item_id), response_id=_str(response_id))
        except StoreClosed as exc:
            if not self._closed_said:
                self._closed_said = True
                log.warning("%s; the event log is not written from now on (first not logged: %s)",
                            exc, _cut(event.type))

    def _other_type(self, etype: str) -> str:
        if len(self._other_types) < MAX_OTHER_TYPES:
            self._other_types.add(etype)
            return etype
        if not self._others_said:
            self._others_said = True
            log.warning("the event log has kept %d names of event types the agent does not act on; later "
                        "ones are logged as %r (first: %s)", MAX_OTHER_TYPES, OTHER_TYPES, peer_text(etype))
        return OTHER_TYPES


class PeerErrors:
    """The voice agent's own ``error`` events: logged, never answered with another error."""

    def routes(self) -> Mapping[str, Handler]:
        return {"error": self._error}

    def _error(self, event: Event, peer: Peer) -> None:
        detail = event.data.get("error")
        message = detail.get("message") if isinstance(detail, dict) else detail
        log.warning("%s reported an error: %s", peer.name, peer_text(str(message)))


class IntegratorEvents:
    """Every event -> the integrators' ``event:*`` and ``event:<type>`` handlers (the JSON object)."""

    def __init__(self, dispatcher: Dispatcher):
        self._emit_each = dispatcher.emit_each
        #: event type -> its topics (known types only: bounded)
        self._topics: dict[str, tuple[str, str]] = {}

    def routes(self) -> Mapping[str, Handler]:
        return {EVERY: self._emit}

    def _emit(self, event: Event, peer: Peer) -> None:
        etype = event.type
        topics = self._topics.get(etype)
        if topics is None:
            topics = ("event:*", "event:" + etype)
            if event.known:
                self._topics[etype] = topics
        self._emit_each(topics, event.data)


def _str(value: Any) -> str | None:
    return _cut(value) if isinstance(value, str) else None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LOGGED else text[:MAX_LOGGED - 1] + "\u2026"
