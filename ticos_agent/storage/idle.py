"""The writer's work between batches, and when it is due: part of :class:`~.writer.Writer`.

:class:`IdleWork` runs in the writer task, between batches (so it never races a batch's
transaction), one step at a time, in this order of precedence: the jobs whose records are
committed (:mod:`.indexer`); while a card that came back is being merged, one merge chunk
(:mod:`.merge`); on the card, when idle, the card check every ``probe_interval`` seconds;
otherwise event-log rows older than the retention are deleted, ``PRUNE_CHUNK`` ids per
commit, at open and every ``PRUNE_EVERY`` seconds (on the fallback a table's newest row is
always kept, so its rowids are never reused); when due, a step of the message index
(:mod:`.indexer`); and the session spans due to close or open again (:mod:`.spans`).
:meth:`IdleWork._idle_timeout` is how long the idle writer may sleep before one of them is
due (``None``: until woken). Nothing here is timed while the store closes; the prune and the
spans wait while writes are failing.
"""

from __future__ import annotations

import logging
import time

from ..errors import describe
from .indexer import Indexer
from .schema import EVENT_LOG

log = logging.getLogger(__name__)

#: Event-log retention: at open and then every PRUNE_EVERY seconds, PRUNE_CHUNK ids per commit.
PRUNE_EVERY = 300.0
PRUNE_CHUNK = 5000


class IdleWork(Indexer):
    """The writer's steps between batches and their timers; part of ``Store``."""

    def _prune_timeout(self) -> float | None:
        if self._retention is None or self._closing:
            return None
        if self._prune_more:
            return 0.0
        return max(0.0, self._next_prune - time.monotonic())

    def _spans_wait(self) -> float | None:
        return None if self._closing or self._failure is not None else self._spans.wait()

    def _idle_timeout(self) -> float | None:
        """How long until some idle work is due (``None``: nothing is, sleep until woken)."""
        timeout = self._prune_timeout()
        if self._card_ident is not None and not self._closing:
            check = max(0.0, self._next_card_check - time.monotonic())
            timeout = check if timeout is None else min(timeout, check)
        for wait in (self._index_wait(), self._spans_wait()):
            if wait is not None:
                timeout = wait if timeout is None else min(timeout, wait)
        return timeout

    async def _idle_step(self) -> None:
        """One step of what is due, if anything (the writer's queue is committed or waits)."""
        if self._jobs_ready():
            await self._run_jobs()
        elif self._target is not None:
            await self._merge_step()
        elif self._card_check_due():
            await self._idle_card_check()
        elif self._failure is None and self._prune_timeout() == 0.0:
            await self._prune_chunk()
        elif self._index_due():
            await self._index_step()
        elif self._spans_wait() == 0.0:
            await self._spans.step(self._db)

    async def _prune_chunk(self) -> None:
        """Remove at most ``PRUNE_CHUNK`` event-log rows older than the retention (one commit)."""
        if self._retention is None:
            return
        cutoff = time.time() - self._retention * 86400.0
        # The fallback keeps its newest event: its rowids must never be reused (see .merge).
        keep = f" AND id < (SELECT MAX(id) FROM {EVENT_LOG})" if self._on_fallback else ""
        try:
            async with self._db.execute(
                    f"SELECT id, (ts IS NULL OR ts < ?) FROM {EVENT_LOG} WHERE 1{keep} ORDER BY id LIMIT 1",
                    (cutoff,)) as cursor:
                oldest = await cursor.fetchone()
            if oldest is None or not oldest[1]:
                self._prune_more = False
                self._next_prune = time.monotonic() + self._prune_every
                return
            # A window of ids from the oldest: a few pages of the table, never a whole scan.
            cursor = await self._db.execute(
                f"DELETE FROM {EVENT_LOG} WHERE id >= ? AND id < ? AND (ts IS NULL OR ts < ?)" + keep,
                (oldest[0], oldest[0] + PRUNE_CHUNK, cutoff))
            self._events_pruned += max(cursor.rowcount, 0)
            self._prune_more = True
        except Exception as exc:
            log.warning("storage: pruning old events in %s failed: %s", self.location.path,
                        describe(exc))
            self._prune_more = False
            self._next_prune = time.monotonic() + self._prune_every
