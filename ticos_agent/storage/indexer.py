"""The writer's other work on its connection: jobs, and keeping the message index in step.

Part of :class:`~.store.Store` (like :class:`~.writer.Writer`, it works on the state
``Store.__init__`` sets up; :meth:`Indexer._init_indexer` adds its own). Everything here runs
in the writer task, between batches, so it never races a batch's transaction.

* **Jobs** (:meth:`Indexer._job`): a coroutine given the writer's connection, run once every
  record enqueued before it is committed (a ``forget`` deletes with ``secure_delete`` and
  checkpoints; a search asks for the index to catch up first). On the TF card the card
  check runs first, so a job runs wherever records go. A job's error goes to its caller
  (an ``sqlite3``/``OSError`` as :class:`StorageError`); a closing store fails the jobs left.
* **The message index** (:mod:`.fts`): messages enter ``messages_fts`` in batches, not per
  commit (an FTS5 segment per commit would cost pages on every turn): one step of at most
  ``INDEX_CHUNK`` messages once ``INDEX_BATCH`` messages were committed since the last, or
  ``INDEX_IDLE`` seconds after the last commit, and step after step while a database that
  had no index is being caught up (the writer's batches still go first, a step is short).
  Not on the fallback database (it is emptied into the card, which indexes what it gets).
  A failing step is logged once and retried after ``INDEX_RETRY`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite

from ..errors import StorageError, TicosError, describe
from .connection import transaction
from .fts import INDEX_CHUNK, MESSAGES_FTS, SQL_ABOVE, SQL_CHUNK_END, SQL_GET_MARK, SQL_INDEX_RANGE, SQL_SET_MARK
from .state import StoreState
from .writes import SQL_ADD_MESSAGE, Op

log = logging.getLogger(__name__)

#: Index the new messages once this many were committed since the last step...
INDEX_BATCH = 256
#: ... or once nothing was committed for this long (seconds).
INDEX_IDLE = 30.0
INDEX_RETRY = 60.0

Job = Callable[[aiosqlite.Connection], Awaitable[Any]]


class Indexer(StoreState):
    """Jobs and the message index; part of ``Store``."""

    _jobs: list[tuple[int, int, Job, asyncio.Future[Any]]]
    _fts_known: bool        # the connection in use was asked whether it has the index
    _fts_upto: int | None   # the index's mark there (None: no index)
    _fts_behind: bool       # messages above the mark remain after the last step
    _fts_pending: int       # messages committed since the last step
    _fts_quiet_since: float
    _fts_retry_at: float
    _fts_steps: int
    _fts_failed: bool

    def _init_indexer(self) -> None:
        self._jobs = []
        self._fts_known = False
        self._fts_upto = None
        self._fts_behind = False
        self._fts_pending = 0
        self._fts_quiet_since = time.monotonic()
        self._fts_retry_at = 0.0
        self._fts_steps = 0
        self._fts_failed = False

    # ------------------------------------------------------------------ jobs

    async def _job(self, job: Job) -> Any:
        """Run ``job(connection)`` in the writer once what was enqueued before is committed."""
        if self._closing:
            raise self._closed_error()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.append((self._ops_in, self._events_in, job, future))
        self._commit_now()
        return await future

    def _jobs_ready(self) -> bool:
        return bool(self._jobs) and self._jobs[0][0] <= self._ops_out and self._jobs[0][1] <= self._events_out

    async def _run_jobs(self) -> None:
        while self._jobs_ready():
            _, _, job, future = self._jobs.pop(0)
            if future.done():
                continue
            if self._card_ident is not None:
                problem = self._card_gone()
                if problem:
                    await self._fall_back(problem, [], [], gone=True)
            error: BaseException | None = None
            try:
                result = await job(self._db)
            except TicosError as exc:
                error = exc
            except (sqlite3.Error, OSError, ValueError) as exc:
                error = StorageError(f"{self.location.path}: {describe(exc)}")
            except Exception as exc:  # a bug in a job must not kill the writer
                log.exception("storage: a job failed unexpectedly")
                error = StorageError(describe(exc))
            if future.done():  # its caller gave up waiting
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def _settle_jobs(self) -> None:
        jobs, self._jobs = self._jobs, []
        for _, _, _, future in jobs:
            if not future.done():
                future.set_exception(self._closed_error())

    # ------------------------------------------------------------------ the message index

    def _note_commit(self, ops: list[Op]) -> None:
        """After a batch: count its new messages (the index's backlog)."""
        added = sum(1 for sql, _ in ops if sql is SQL_ADD_MESSAGE)
        if added:
            self._fts_pending += added
        self._fts_quiet_since = time.monotonic()

    def _index_wait(self) -> float | None:
        """Seconds until the next index step is due (``None``: none is)."""
        if self._closing or self._failure is not None or self._on_fallback or self._target is not None:
            return None
        now = time.monotonic()
        if now < self._fts_retry_at:
            return self._fts_retry_at - now
        if not self._fts_known:
            return 0.0
        if self._fts_upto is None:
            return None
        if self._fts_behind or self._fts_pending >= INDEX_BATCH:
            return 0.0
        if self._fts_pending:
            return max(0.0, self._fts_quiet_since + INDEX_IDLE - now)
        return None

    def _index_due(self) -> bool:
        return self._index_wait() == 0.0

    def _connection_changed(self) -> None:
        """The writer's connection was swapped (fallback, card back, reopen): ask it again."""
        self._fts_known = False
        self._fts_upto = None
        self._fts_behind = False
        self._fts_pending = 0

    async def _index_step(self, db: aiosqlite.Connection | None = None) -> bool:
        """Index the next chunk of messages; True when the index now reaches the newest."""
        db = db or self._db
        try:
            if not self._fts_known:
                async with db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (MESSAGES_FTS,)) as cursor:
                    exists = await cursor.fetchone() is not None
                self._fts_known = True
                self._fts_upto = None
                if not exists:
                    return False
                self._fts_upto = 0
                self._fts_behind = True
            async with transaction(db):
                async with db.execute(SQL_GET_MARK) as cursor:
                    row = await cursor.fetchone()
                upto = int(row[0]) if row is not None and row[0] is not None else 0
                async with db.execute(SQL_CHUNK_END, (upto, INDEX_CHUNK)) as cursor:
                    got = await cursor.fetchone()
                end = int(got[0]) if got is not None and got[0] is not None else None
                above = False
                if end is not None:
                    await db.execute(SQL_INDEX_RANGE, (upto, end))
                    await db.execute(SQL_SET_MARK, (end,))
                    async with db.execute(SQL_ABOVE, (end,)) as cursor:
                        above = await cursor.fetchone() is not None
        except (sqlite3.Error, OSError) as exc:
            if not self._fts_failed:
                log.warning("storage: indexing messages in %s failed (%s); retrying in %g s",
                            self.location.path, describe(exc), INDEX_RETRY)
            self._fts_failed = True
            self._fts_retry_at = time.monotonic() + INDEX_RETRY
            return False
        if self._fts_failed:
            log.info("storage: indexing messages in %s works again", self.location.path)
            self._fts_failed = False
        if end is not None:
            self._fts_steps += 1
            if self._fts_behind and not above:
                log.info("storage: the message index of %s caught up (rowid %d)", self.location.path, end)
        self._fts_upto = end if end is not None else upto
        self._fts_behind = above
        self._fts_pending = 0
        return not above
