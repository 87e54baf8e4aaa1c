"""The writer task of a :class:`~.store.Store`: batched commits and their failures.

:class:`Writer` is the half of ``Store`` that runs in its writer task; ``Store`` (in
``store.py``) holds the queues the enqueue methods fill and starts :meth:`Writer._run`.

The writer commits what has gathered when it is due (when, and why: :mod:`.policy`, whose
:class:`~.policy.CommitPolicy` it inherits), one transaction per ``CHUNK_RECORDS`` records,
the events with one ``executemany`` and the other records with one per kind (in
``KIND_ORDER``). First of all, at start, it queues what the pending file held that the
database lacks; after each commit the file is made to hold exactly what is not committed
(:mod:`.pending`; the copies themselves are a loop timer's, ``Store._spill``).

A failure never ends the task. A batch the database rejects is committed again record by
record, skipping only the rows it rejects. On the TF card, each batch first checks that the
card is still the mounted card (:mod:`.card`); a card that is gone, or an I/O failure on it,
moves the store to the fallback database (``CardKeeper._fall_back``: queued messages whose
ids would collide there are renumbered) and the batch is written there. Any other failure
keeps the batch queued, fails the ``flush()`` calls waiting for it, reopens the connection
and retries with a backoff of up to ``MAX_BACKOFF`` seconds.

Between batches, one step of the work that is due (jobs, a merge chunk, the card check, the
event-log retention, the message index, the session spans), and how long the idle writer
sleeps: :mod:`.idle`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable
from typing import TypeVar

import aiosqlite

from ..errors import StorageError, describe
from .connection import connect, transaction
from .idle import IdleWork
from .location import SaveMode
from .pending import SQL_RESTORE_MESSAGE, missing
from .policy import CommitPolicy
from .writes import (
    DATA_ERRORS,
    SQL_ADD_MEMORY,
    SQL_ADD_MESSAGE,
    SQL_CALL_OUTCOME,
    SQL_LOG_EVENT,
    SQL_RECORD_CALL,
    SQL_UPDATE_MESSAGE,
    EventRow,
    Op,
    Params,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_BACKOFF = 30.0
#: At most this many records per transaction: a backlog after an outage becomes many commits.
CHUNK_RECORDS = 5000


class Writer(IdleWork, CommitPolicy):
    """The writer task's half of :class:`~.store.Store`; not used on its own.

    It works on the state ``Store.__init__`` sets up (the connection ``_db``, ``location``,
    the queues ``_events``/``_ops`` and their counters, the ``flush()`` waiters, the wake-up
    events, the remembered messages, the retention, the card's state) and calls
    ``Store._backlog_shrank()`` after each commit and the :class:`~.card.CardKeeper` methods
    for the card; its work between batches is :class:`~.idle.IdleWork`'s (jobs and the message
    index: :class:`~.indexer.Indexer`'s), when it commits is :class:`~.policy.CommitPolicy`'s.
    """

    async def _run(self) -> None:
        backoff = 0.0
        try:
            while True:
                merging = self._target is not None and not self._closing
                if not self._wake.is_set() and not merging:
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._idle_timeout())
                    except TimeoutError:
                        pass
                if self._wake.is_set():
                    if backoff:
                        try:
                            await asyncio.wait_for(self._kick.wait(), backoff)
                        except TimeoutError:
                            pass
                    elif not merging:  # while merging, a merge chunk is the pause between batches
                        await self._gather()
                    self._wake.clear()
                    self._kick.clear()
                    if self._put_back_waiting:  # (put back sets the wake) queued before this batch
                        await self._restore_pending()
                    if await self._write_chunk():
                        backoff = 0.0
                    else:
                        backoff = min(MAX_BACKOFF, (backoff or 0.5) * 2)
                        self._check_state()
                        if self._closing:
                            return
                        self._wake.set()
                        continue
                if self._closing:
                    if self._target is not None:
                        await self._abandon("the store is closing", closing=True)
                    await self._run_jobs()
                    if not self._events and not self._ops and not self._put_back_waiting:
                        return
                else:
                    await self._idle_step()
                self._check_state()
        finally:
            self._settle_waiters()
            self._settle_jobs()
            self._check_state()

    def _take(self, queue: list[_T], n: int) -> list[_T]:
        if n >= len(queue):
            taken = queue[:]
            queue.clear()
        else:
            taken = queue[:n]
            del queue[:n]
        return taken

    async def _write_chunk(self) -> bool:
        """Commit the oldest ``CHUNK_RECORDS`` queued records (a backlog becomes many commits)."""
        first, lazy = self._first_at, self._lazy_at
        ops = self._take(self._ops, CHUNK_RECORDS)
        events = self._take(self._events, CHUNK_RECORDS - len(ops))
        left = bool(self._ops or self._events)
        # Records enqueued from now on start a new batch (and its clock); a turn that ended
        # is in this batch, unless records were left behind (they keep the oldest clock).
        self._first_at = first if left else None
        self._lazy_at = lazy if left else None
        turn_end, self._turn_end = self._turn_end, self._turn_end and left
        self._inflight = len(events) + len(ops)
        self._batch = (events, ops)  # what a spill during the commit must keep too
        started = time.monotonic()
        try:
            ok = await self._write(events, ops) if self._inflight else True
        except Exception as exc:  # a bug here must not kill the writer
            log.exception("storage: writer failed unexpectedly")
            self._write_errors += 1
            self._failure = describe(exc)
            ok = False
        if self._inflight:  # a decaying peak of how long commits take
            self._commit_time = max(time.monotonic() - started, self._commit_time * 0.8)
        self._inflight = 0
        self._batch = None
        if not ok:
            self._events[:0] = events
            self._ops[:0] = ops
            if first is not None:  # they are still the oldest
                self._first_at = first
            if lazy is not None:
                self._lazy_at = lazy
            self._turn_end = self._turn_end or turn_end
            error = StorageError(f"writing to {self.location.path} failed: {self._failure}")
            waiters, self._waiters = self._waiters, []
            for _, _, waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return False
        if self._events or self._ops or self._put_back_waiting:  # the file holds exactly what is not committed
            if self._pending.holds:
                self._write_pending()
        else:
            self._unspilled_at = None
            self._pending.clear()
        self._ops_out += len(ops)
        self._events_out += len(events)
        self._note_commit(ops)
        self._spans.note(ops)
        self._backlog_shrank()
        if self._on_fallback:  # exact when someone waits for it (a flush, the close)
            await self._refresh_counts(force=bool(self._waiters) or self._closing)
        self._resolve_waiters()
        if self._events or self._ops:
            self._wake.set()
            if self._waiters or self._jobs or self._closing or len(self._events) + len(self._ops) >= CHUNK_RECORDS:
                self._kick.set()  # more to do now: no batch interval in between
        return True

    def _resolve_waiters(self) -> None:
        keep = []
        for waiter in self._waiters:
            ops_mark, events_mark, future = waiter
            if future.done():
                continue
            if ops_mark <= self._ops_out and events_mark <= self._events_out:
                future.set_result(None)
            else:
                keep.append(waiter)
        self._waiters = keep

    def _settle_waiters(self) -> None:
        """The writer is stopping: no ``flush()`` may wait forever."""
        self._resolve_waiters()
        waiters, self._waiters = self._waiters, []
        for _, _, future in waiters:
            if not future.done():
                future.set_exception(StorageError(
                    f"store {self.location.path} is closed with unwritten records"))

    async def _update_one(self, db: aiosqlite.Connection, params: Params) -> bool:
        """One message update; re-inserts the remembered row when it changed none."""
        cursor = await db.execute(SQL_UPDATE_MESSAGE, params)
        if cursor.rowcount > 0:
            return True
        row = self._recent.get(str(params[2]))
        if row is None:
            if self._unknown_updates_logged < 10:
                self._unknown_updates_logged += 1
                log.warning("storage: update of message %r skipped: not in %s and not remembered",
                            params[2], self.location.path)
            return False
        await db.execute(SQL_ADD_MESSAGE, tuple(row))
        log.info("storage: message %s was not in %s; inserted it with its update", params[2], self.location.path)
        return True

    async def _commit(self, events: list[EventRow], ops: list[Op],
                      one_by_one: bool = False) -> tuple[int, int]:
        """One transaction; returns (bad records skipped, updates that found no row)."""
        db = self._db
        bad = missed = 0
        async with transaction(db):
            if one_by_one:
                for sql, params in [(SQL_LOG_EVENT, e) for e in events] + ops:
                    try:
                        if sql is SQL_UPDATE_MESSAGE:
                            missed += not await self._update_one(db, params)
                        else:
                            await db.execute(sql, params)
                    except DATA_ERRORS as exc:
                        bad += 1
                        log.error("storage: skipped a record %r: %s", params[:3], describe(exc))
            else:
                if events:
                    await db.executemany(SQL_LOG_EVENT, events)
                for sql, group in _by_kind(ops):
                    cursor = await db.executemany(sql, group)
                    if sql is SQL_UPDATE_MESSAGE and cursor.rowcount < len(group):
                        # Some found no row: replay them one by one (idempotent) to know which.
                        for params in group:
                            missed += not await self._update_one(db, params)
        self._commits += 1
        return bad, missed

    async def _write(self, events: list[EventRow], ops: list[Op]) -> bool:
        """Commit one batch, falling back or retrying on failure; True when it is on disk."""
        if self._card_ident is not None:
            problem = self._card_gone()  # one os.stat: is the card still the mounted card?
            if problem:
                return await self._fall_back(problem, events, ops, gone=True)
        try:
            try:
                bad, missed = await self._commit(events, ops)
            except DATA_ERRORS:
                bad, missed = await self._commit(events, ops, one_by_one=True)
        except (sqlite3.Error, OSError) as exc:
            self._write_errors += 1
            reason = describe(exc)
            if self.location.mode is SaveMode.EXTERNAL and "locked" not in str(exc) \
                    and self._fallback_path is not None:
                return await self._fall_back(reason, events, ops)
            if self._failure is None:
                log.error("storage: writing to %s failed (%s); will retry", self.location.path, reason)
            self._failure = f"writing to {self.location.path} failed: {reason}"
            await self._reopen()
            return False
        if self._failure is not None:
            log.warning("storage: writing to %s works again", self.location.path)
            self._failure = None
        self._write_errors += bad
        self._skipped += bad + missed
        self._written += len(events) + len(ops) - bad - missed
        return True

    async def _restore_pending(self) -> None:
        """Queue, first, what the pending file held that the database lacks (see :mod:`.pending`)."""
        events, messages = events_in, messages_in = self._restoring  # in the pending file until queued
        try:
            events, messages = await missing(self._db, events, messages)
        except Exception as exc:  # all of it, then: INSERT OR IGNORE keeps the messages once
            log.warning("storage: cannot tell what %s holds that %s lacks (%s); putting all of it back",
                        self._pending.path, self.location.path, describe(exc))
        taken = self._restoring  # (what was put back while missing() ran stays for the next round)
        self._restoring = (taken[0][len(events_in):], taken[1][len(messages_in):])
        self._events[:0] = events
        self._ops[:0] = [(SQL_RESTORE_MESSAGE, m) for m in messages]
        self._events_out += len(events_in) - len(events)  # already in the database: done
        self._ops_out += len(messages_in) - len(messages)
        self._resolve_waiters()
        if events or messages:
            log.warning("storage: putting back %d event-log lines and %d messages from %s: they were waiting for "
                        "their commit when the agent was last stopped", len(events), len(messages), self._pending.path)
            self._queued(False)
        elif not self._events and not self._ops and self._batch is None and not self._put_back_waiting:
            self._pending.clear()

    def _use_connection(self, db: aiosqlite.Connection) -> aiosqlite.Connection:
        """Write to ``db`` from now on (the fallback, the card back); returns the connection
        written to before. What a connection's database was asked is asked again."""
        old, self._db = self._db, db
        self._connection_changed()
        self._spans.new_connection()
        return old

    async def _swap_connection(self, db: aiosqlite.Connection) -> None:
        old = self._use_connection(db)
        try:
            await asyncio.wait_for(old.close(), 2.0)
        except Exception:
            pass

    async def _reopen(self) -> None:
        on_card = self.location.mode is SaveMode.EXTERNAL
        try:
            db, seed = await connect(self.location.path, card=on_card,
                                     card_root=self._card_root if on_card else None,
                                     fallback=self._on_fallback)
        except (sqlite3.Error, OSError):
            return
        self._last_id = max(self._last_id, seed)
        await self._swap_connection(db)


#: The order kinds of records are committed in within one transaction. Regrouping keeps the
#: result: a message's updates follow its insert (its id comes from ``add_message``), a
#: call's record and outcome commute by design, and each kind keeps its own order.
KIND_ORDER = (SQL_RESTORE_MESSAGE, SQL_ADD_MESSAGE, SQL_UPDATE_MESSAGE, SQL_ADD_MEMORY, SQL_RECORD_CALL,
              SQL_CALL_OUTCOME)


def _by_kind(ops: Iterable[Op]) -> list[tuple[str, list[Params]]]:
    """``ops`` as one ``executemany`` group per kind (an interleaved add/update stream would
    otherwise cost a thread round trip per record)."""
    groups: dict[str, list[Params]] = {}
    for sql, params in ops:
        groups.setdefault(sql, []).append(params)
    return [(sql, groups[sql]) for sql in KIND_ORDER if sql in groups] + [
        (sql, g) for sql, g in groups.items() if sql not in KIND_ORDER]
