"""What a :class:`~.store.Store` reports: its committed rows, and ``health()``.

Part of :class:`~.store.Store`. :class:`Reads` has the read methods (``messages``,
``memories``, ``calls``, ``events``, ``count_messages``: the newest committed rows, on the
store's connection) and :meth:`Reads.health`. Their queries are :mod:`.queries`', which loads
with the first read (a robot rarely reads): the methods import it, not this module.

Thread and timing: on the loop, as the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .memory_rows import MemoryRows

if TYPE_CHECKING:
    from .queries import Query


class Reads(MemoryRows):
    """The store's reads and ``health()``; part of ``Store``."""

    def health(self) -> dict[str, Any]:
        """Where the data goes and how writing is going, for ``/health``.

        ``written``: records committed; ``commits``: transactions that wrote them;
        ``skipped``: records given up (rejected by the database, or an update of a message
        that exists nowhere); ``events_pruned``: event log rows removed by the retention.

        EXTERNAL mode also reports the card (``None`` otherwise): ``fallback_rows``, how many
        rows wait in the fallback database (its counts are refreshed at most once a second
        while writing there); ``fallback``: its ``path``, ``rows`` per table (``messages``,
        ``memories``, ``calls``, ``events``), ``merging`` (a card that came back is being
        filled) and ``merged`` (rows moved to the card since open); ``card``: ``in_use``,
        ``problem`` (why it is not in use, from the last check or probe), ``losses`` and
        ``returns`` since open, ``probes`` made and the current ``probe_interval_s``.
        On the card, each call also makes the writer's cheap check (one ``os.stat``): a card
        that is gone is reported at once, and the writer falls back without waiting for a
        write or its next idle check.
        """
        reason = None
        if self._failure is None and self._card_ident is not None and self._watch is not None \
                and not self._closing:
            reason = self._watch.gone(self.location.path, self._card_ident, self._card_mount)
            if reason:
                self._next_card_check = 0.0  # the writer checks again and falls back now
                self._commit_now()
        reason = reason or self._state_now()[1]
        card = self._card_health() if self._watch is not None else {"fallback_rows": 0, "fallback": None, "card": None}
        return {
            "path": str(self.location.path),
            "mode": self.location.mode.value,
            "requested": self.location.requested.value,
            "state": "degraded" if reason else "ok",
            "reason": reason,
            "pending": len(self._events) + len(self._ops) + self._inflight,
            "written": self._written,
            "commits": self._commits,
            "skipped": self._skipped,
            "write_errors": self._write_errors,
            "dropped_events": self._dropped_events,
            "events_pruned": self._events_pruned,
            **card,
        }

    async def _read(self, query: Query) -> Any:
        if query.sql is None:
            return query.empty()
        return query.result(await self._rows(query.sql, query.params))

    async def messages(self, limit: int = 50, offset: int = 0,
                       session_id: str | None = None) -> list[dict[str, Any]]:
        """Committed messages, newest first (see :func:`.queries.read_messages` for the fields)."""
        from . import queries  # the read queries load with the first read (a robot rarely reads)

        return _dicts(await self._read(queries.messages_query(limit=limit, offset=offset, session_id=session_id)))

    async def memories(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Committed memories, newest first."""
        from . import queries

        return _dicts(await self._read(queries.memories_query(limit=limit, offset=offset)))

    async def calls(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Committed function calls, newest first."""
        from . import queries

        return _dicts(await self._read(queries.calls_query(limit=limit, offset=offset)))

    async def events(self, limit: int = 100, offset: int = 0,
                     session_id: str | None = None) -> list[dict[str, Any]]:
        """The committed event log, newest first."""
        from . import queries

        return _dicts(await self._read(queries.events_query(limit=limit, offset=offset, session_id=session_id)))

    async def count_messages(self, session_id: str | None = None) -> int:
        """How many committed messages (of one session)."""
        from . import queries

        return int(await self._read(queries.count_messages_query(session_id=session_id)))


def _dicts(rows: Any) -> list[dict[str, Any]]:
    return list(rows)
