"""The intake: frame -> parsed event -> routing table -> consumers.

Every frame from the voice agent, on a socket or ``POST /v1/events``, goes through
:meth:`Intake.ingest`, on the event loop thread:

1. :func:`ticos_agent.events.parse` decodes and validates it (both spellings folded into
   one); a bad frame becomes an ``error`` reply and one log line, and the socket stays open;
2. the routing table names the consumers of the event's type and those that take every
   event (``"*"``), in the order they were added;
3. each consumer's handler runs with ``(event, peer)``. A consumer that raises
   :class:`~ticos_agent.errors.BadEvent` (an unusable audio delta or function call) does not
   stop the others: the first such error is answered once they all ran. Any other exception
   is a bug of that consumer: it is logged with the consumer's name and the event, and
   answered as ``internal_error``; the intake goes on.

A consumer is any object with a ``routes()`` method returning ``{event type: handler}``
(beta spelling, or ``"*"``; a type mapped to ``None`` is one its ``"*"`` handler is not
called for, so a consumer of every event does not pay a call for the frequent types it
ignores, the audio deltas say), and optionally ``peer_opened(peer)`` (a voice agent's socket
opened; the server calls it before the first frame) and ``peer_closed(peer)`` to drop
per-connection state. The agent wires them (see :mod:`ticos_agent.agent`); none of them sees
the agent.

Timing budget: ``ingest`` runs on the loop for every frame (tens of thousands a second at
full speed), so handlers only queue work (storage batches, actuator commands, the handler
thread) and return; nothing here blocks or awaits.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from .connection import Peer
from .errors import BadEvent
from .events import SHAPES, Event, parse
from .logs import peer_text
from .replies import error_event

log = logging.getLogger(__name__)

Handler = Callable[[Event, Peer], None]
EVERY = "*"


class Consumer(Protocol):
    def routes(self) -> Mapping[str, Handler | None]: ...


@runtime_checkable
class PeerAware(Protocol):
    def peer_closed(self, peer: Peer) -> None: ...


@runtime_checkable
class PeerGreeter(Protocol):
    def peer_opened(self, peer: Peer) -> None: ...


class Intake:
    """The routing table and the per-frame path. ``counters`` gets ``events``, ``errors``
    (frames answered with an error) and ``ignored`` (types the agent does not act on)."""

    def __init__(self, counters: Counter[str]):
        self.counters = counters
        self._consumers: list[tuple[str, Mapping[str, Handler | None]]] = []
        self._peer_aware: list[PeerAware] = []
        self._greeters: list[PeerGreeter] = []
        self._table: dict[str, tuple[tuple[str, Handler], ...]] = {}
        self._every: tuple[tuple[str, Handler], ...] = ()

    # --- the table ------------------------------------------------------------------------

    def add(self, consumer: Consumer, name: str | None = None) -> Callable[[], None]:
        """Route the event types ``consumer.routes()`` names to it; returns the undo."""
        label = name or type(consumer).__name__
        entry = (label, dict(consumer.routes()))
        for etype in entry[1]:
            if etype != EVERY and etype not in SHAPES:
                raise ValueError(
                    f"{label}: no such event type {etype!r} (use the beta spelling; known: see events.SHAPES)")
        self._consumers.append(entry)
        takes = sorted(etype for etype, handler in entry[1].items() if handler is not None)
        log.debug("%s takes %s", label, ", ".join(takes) or "nothing")
        if isinstance(consumer, PeerAware):
            self._peer_aware.append(consumer)
        if isinstance(consumer, PeerGreeter):
            self._greeters.append(consumer)
        self._rebuild()

        def remove() -> None:
            if entry in self._consumers:
                self._consumers.remove(entry)
                if isinstance(consumer, PeerAware) and consumer in self._peer_aware:
                    self._peer_aware.remove(consumer)
                if isinstance(consumer, PeerGreeter) and consumer in self._greeters:
                    self._greeters.remove(consumer)
                self._rebuild()

        return remove

    def _rebuild(self) -> None:
        named = {etype for _, routes in self._consumers for etype in routes if etype != EVERY}
        self._every = tuple((label, every) for label, routes in self._consumers
                            if (every := routes.get(EVERY)) is not None)
        self._table = {etype: self._chain(etype) for etype in named}

    def _chain(self, etype: str) -> tuple[tuple[str, Handler], ...]:
        """Who gets an event of ``etype`` (a type some consumer names): each consumer in turn,
        its handler of that type, then its ``"*"`` handler unless it maps the type to ``None``."""
        chain: list[tuple[str, Handler]] = []
        for label, routes in self._consumers:
            own = routes.get(etype)
            if own is not None:
                chain.append((label, own))
            every = routes.get(EVERY)
            if every is not None and (own is not None or etype not in routes):
                chain.append((label, every))
        return tuple(chain)

    def consumers_of(self, event_type: str) -> list[str]:
        """Names of the consumers an event of this type reaches, in order (for docs and tests)."""
        return [label for label, _ in self._table.get(event_type, self._every)]

    # --- frames ---------------------------------------------------------------------------

    def ingest(self, frame: str | bytes | bytearray | dict[str, Any], peer: Peer) -> dict[str, Any] | None:
        """Handle one frame from ``peer``. Returns the ``error`` event to send back, or ``None``."""
        counters = self.counters
        counters["events"] += 1
        try:
            event = parse(frame)
        except BadEvent as exc:
            return self._bad(exc, peer)
        chain = self._table.get(event.type)
        if chain is None:
            if event.type not in SHAPES:
                counters["ignored"] += 1
            chain = self._every
        error: BadEvent | None = None
        for label, handler in chain:
            try:
                handler(event, peer)
            except BadEvent as exc:
                error = error or exc
            except Exception as exc:  # a consumer's bug must not cost the others this event
                log.exception("%s failed on %s from %s", label, peer_text(repr(event)), peer.name)
                error = error or BadEvent(f"internal error: {type(exc).__name__}", code="internal_error")
        if error is None:
            return None
        if error.event_id is None:
            error.event_id = event.event_id
        return self._bad(error, peer)

    def _bad(self, exc: BadEvent, peer: Peer) -> dict[str, Any]:
        self.counters["errors"] += 1
        log.warning("%s: rejected frame: %s (%s)", peer.name, peer_text(str(exc), 300), exc.code)
        return error_event(exc.code, str(exc), exc.event_id)

    def peer_opened(self, peer: Peer) -> None:
        """A voice agent's socket is open: the consumers that greet a peer do (nothing blocks)."""
        for consumer in self._greeters:
            try:
                consumer.peer_opened(peer)
            except Exception:
                log.exception("%s failed greeting %s", type(consumer).__name__, peer.name)

    def peer_closed(self, peer: Peer) -> None:
        """The peer is gone: each consumer stores what it still held for it and forgets it."""
        for consumer in self._peer_aware:
            try:
                consumer.peer_closed(peer)
            except Exception:
                log.exception("%s failed closing %s", type(consumer).__name__, peer.name)
