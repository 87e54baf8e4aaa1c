"""The Store: one aiosqlite connection, one writer task, small batched commits.

Writes are enqueued synchronously on the event loop thread and cost a tuple append; the
writer task commits whatever has gathered every ``batch_interval`` seconds (0.05 s by
default), one transaction per batch, with ``executemany``. ``await flush()`` returns once
everything enqueued before it is committed; ``await close()`` flushes and closes.

When a write fails on the TF card (card pulled out, full, turned read-only, or any other
SQLite I/O failure), the batch is kept, the internal database is opened (and migrated) and
the batch is written there; ``health()`` then reports ``state: "degraded"`` with the reason,
and one WARNING names both paths. Failures at the internal location are retried with a
backoff. Nothing raises into the event loop; a row the database rejects (a constraint, a
value SQLite cannot store) is logged, counted in ``write_errors`` and skipped alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time

import aiosqlite

from ..errors import StorageError
from . import queries, schema
from .connection import connect, describe
from .location import DEFAULT_DB_FILENAME, Location, SaveMode, resolve_location
from .writes import (
    DATA_ERRORS, SQL_ADD_MEMORY, SQL_ADD_MESSAGE, SQL_CALL_OUTCOME, SQL_LOG_EVENT, SQL_RECORD_CALL,
    SQL_UPDATE_MESSAGE,
)

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 500_000
MAX_BACKOFF = 30.0


async def open_store(
    mode: SaveMode | str,
    *,
    tf_root: str | os.PathLike | None = None,
    internal_dir: str | os.PathLike | None = None,
    db_filename: str = DEFAULT_DB_FILENAME,
    batch_interval: float = 0.05,
) -> "Store":
    """Open the database for ``mode`` and start its writer; call on the running event loop.

    EXTERNAL falls back to INTERNAL (``Location.degraded`` says why, a WARNING names both
    paths) when no card is mounted, the card directory cannot be created or written, the
    card is mounted read-only or full, or the file there cannot be opened as a database.
    Raises :class:`StorageError` (path and reason) when even the internal database fails.
    """
    loc = resolve_location(mode, tf_root=tf_root, internal_dir=internal_dir, db_filename=db_filename)
    options = dict(batch_interval=batch_interval, internal_dir=internal_dir, db_filename=db_filename)
    if loc.degraded:
        log.warning("storage: %s; using internal database %s", loc.degraded, loc.path)
    if loc.mode is SaveMode.EXTERNAL:
        try:
            db, seed = await connect(loc.path, card=True)
            return Store(db, loc, last_message_id=seed, **options)
        except (sqlite3.Error, OSError) as exc:
            internal = resolve_location(SaveMode.INTERNAL, internal_dir=internal_dir, db_filename=db_filename)
            reason = f"cannot use TF card database {loc.path}: {describe(exc)}"
            log.warning("storage: %s; falling back to internal database %s", reason, internal.path)
            loc = loc.fallen_back(internal.path, reason)
    try:
        db, seed = await connect(loc.path)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open database {loc.path}: {describe(exc)}") from exc
    return Store(db, loc, last_message_id=seed, **options)


class Store:
    """Conversation messages, memories, function calls and the event log of one database.

    Create it with :func:`open_store`. ``location`` is the :class:`Location` in use (it
    changes when a runtime failure moves the store to the internal fallback).
    """

    def __init__(self, db: aiosqlite.Connection, location: Location, *, last_message_id: int = 0,
                 batch_interval: float = 0.05, internal_dir: str | os.PathLike | None = None,
                 db_filename: str = DEFAULT_DB_FILENAME):
        self._db = db
        self.location = location
        self._last_id = last_message_id
        self._interval = batch_interval
        self._internal_dir = internal_dir
        self._db_filename = db_filename
        self._events: list[tuple] = []
        self._ops: list[tuple[str, tuple]] = []
        self._waiters: list[asyncio.Future] = []
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()
        self._inflight = 0
        self._written = 0
        self._write_errors = 0
        self._dropped_events = 0
        self._failure: str | None = None
        self._id_remap: dict[str, str] = {}
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ticos-storage-writer")

    # ----------------------------------------------------------------- enqueue (sync, cheap)

    def _closed_error(self) -> StorageError:
        return StorageError(f"store {self.location.path} is closed")

    def _next_id(self) -> str:
        mid = int(time.time())
        if mid <= self._last_id:
            mid = self._last_id + 1
        self._last_id = mid
        return str(mid)

    def add_message(self, *, role: str, content: str, item_id: str | None, session_id: str | None = None,
                    status: str = "completed", response_id: str | None = None,
                    user_id: str = "nobody") -> str:
        """Queue a conversation message; returns its id (the SDK's time-based scheme, unique)."""
        if self._closing:
            raise self._closed_error()
        message_id = self._next_id()
        self._ops.append((SQL_ADD_MESSAGE, (message_id, role, content, item_id, user_id,
                                            schema.now_local(), session_id, status, response_id)))
        self._wake.set()
        return message_id

    def update_message(self, message_id: str, *, content: str | None = None,
                       status: str | None = None) -> None:
        """Queue a change of a message's content and/or status (``None`` keeps the old value)."""
        if self._closing:
            raise self._closed_error()
        message_id = self._id_remap.get(message_id, message_id)
        self._ops.append((SQL_UPDATE_MESSAGE, (content, status, message_id)))
        self._wake.set()

    def add_memory(self, type: str, content: str, user_id: str = "nobody") -> None:
        """Queue a memory (``short_term`` or ``long_term`` in the SDK's terms)."""
        if self._closing:
            raise self._closed_error()
        self._ops.append((SQL_ADD_MEMORY, (type, content, user_id, schema.now_local())))
        self._wake.set()

    def record_call(self, *, call_id: str, name: str, arguments: str, session_id: str | None = None,
                    response_id: str | None = None, item_id: str | None = None,
                    status: str = "received") -> None:
        """Queue a function call as received (``arguments`` is the JSON string as sent)."""
        if self._closing:
            raise self._closed_error()
        self._ops.append((SQL_RECORD_CALL, (call_id, name, arguments, session_id, response_id, item_id,
                                            status, schema.now_local())))
        self._wake.set()

    def set_call_outcome(self, call_id: str, status: str, result: dict | str | None) -> None:
        """Queue a call's final status and result (stored as JSON text; ``None`` as NULL)."""
        if self._closing:
            raise self._closed_error()
        text = None if result is None else json.dumps(result, default=str, ensure_ascii=False)
        self._ops.append((SQL_CALL_OUTCOME, (call_id, status, text, schema.now_local())))
        self._wake.set()

    def log_event(self, type: str, *, session_id: str | None = None, event_id: str | None = None,
                  item_id: str | None = None, response_id: str | None = None,
                  ts: float | None = None) -> None:
        """Queue one line of the compact event log (ids only, never payloads).

        While writes are failing, at most ``MAX_PENDING_EVENTS`` lines wait; later ones are
        dropped and counted in ``health()["dropped_events"]``.
        """
        if self._closing:
            raise self._closed_error()
        events = self._events
        if len(events) >= MAX_PENDING_EVENTS:
            self._dropped_events += 1
            return
        events.append((time.time() if ts is None else ts, type, session_id, event_id, item_id, response_id))
        self._wake.set()

    # ----------------------------------------------------------------- flush, close, health

    async def flush(self) -> None:
        """Wait until everything enqueued so far is committed.

        Raises :class:`StorageError` when it could not be written anywhere (the records stay
        queued and are retried).
        """
        if self._task.done():
            if self._events or self._ops:
                raise StorageError(f"store {self.location.path} is closed with unwritten records")
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._kick.set()
        self._wake.set()
        await waiter

    async def close(self) -> None:
        """Flush, stop the writer and close the connection; never raises.

        Records that could not be written anywhere are reported in an ERROR log line.
        """
        if self._closing:
            await asyncio.shield(self._task)
            return
        self._closing = True
        self._kick.set()
        self._wake.set()
        await asyncio.shield(self._task)
        lost = len(self._events) + len(self._ops)
        if lost:
            log.error("storage: closed %s with %d records not written", self.location.path, lost)
        try:
            await self._db.close()
        except Exception as exc:
            log.warning("storage: closing %s: %s", self.location.path, describe(exc))

    def health(self) -> dict:
        """Where the data goes and how writing is going, for ``/health``."""
        reason = self._failure or self.location.degraded
        return {
            "path": str(self.location.path),
            "mode": self.location.mode.value,
            "requested": self.location.requested.value,
            "state": "degraded" if reason else "ok",
            "reason": reason,
            "pending": len(self._events) + len(self._ops) + self._inflight,
            "written": self._written,
            "write_errors": self._write_errors,
            "dropped_events": self._dropped_events,
        }

    # ----------------------------------------------------------------- reads

    async def _read(self, query: queries.Query):
        if query.sql is None:
            return query.empty()
        try:
            async with self._db.execute(query.sql, query.params) as cursor:
                rows = await cursor.fetchall()
        except (sqlite3.Error, ValueError) as exc:
            raise StorageError(f"reading {self.location.path} failed: {describe(exc)}") from exc
        return query.result(rows)

    async def messages(self, limit: int = 50, offset: int = 0, session_id: str | None = None) -> list[dict]:
        """Committed messages, newest first (see :func:`queries.read_messages` for the fields)."""
        return await self._read(queries.messages_query(limit=limit, offset=offset, session_id=session_id))

    async def memories(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Committed memories, newest first."""
        return await self._read(queries.memories_query(limit=limit, offset=offset))

    async def calls(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Committed function calls, newest first."""
        return await self._read(queries.calls_query(limit=limit, offset=offset))

    async def events(self, limit: int = 100, offset: int = 0, session_id: str | None = None) -> list[dict]:
        """The committed event log, newest first."""
        return await self._read(queries.events_query(limit=limit, offset=offset, session_id=session_id))

    async def count_messages(self, session_id: str | None = None) -> int:
        """How many committed messages (of one session)."""
        return await self._read(queries.count_messages_query(session_id=session_id))

    # ----------------------------------------------------------------- the writer

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            await self._wake.wait()
            if backoff or not (self._kick.is_set() or self._closing):
                try:
                    await asyncio.wait_for(self._kick.wait(), backoff or self._interval)
                except TimeoutError:
                    pass
            self._wake.clear()
            self._kick.clear()
            events, self._events = self._events, []
            ops, self._ops = self._ops, []
            waiters, self._waiters = self._waiters, []
            self._inflight = len(events) + len(ops)
            try:
                ok = await self._write(events, ops) if self._inflight else True
            except Exception as exc:  # a bug here must not kill the writer
                log.exception("storage: writer failed unexpectedly")
                self._write_errors += 1
                self._failure = describe(exc)
                ok = False
            self._inflight = 0
            if ok:
                backoff = 0.0
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            else:
                self._events[:0] = events
                self._ops[:0] = ops
                error = StorageError(f"writing to {self.location.path} failed: {self._failure}")
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                backoff = min(MAX_BACKOFF, (backoff or 0.5) * 2)
                if self._closing:
                    return
                self._wake.set()
            if self._closing and not self._events and not self._ops:
                return

    async def _commit(self, events: list[tuple], ops: list[tuple[str, tuple]], one_by_one: bool = False) -> None:
        db = self._db
        await db.execute("BEGIN")
        try:
            if one_by_one:
                for sql, params in [(SQL_LOG_EVENT, e) for e in events] + ops:
                    try:
                        await db.execute(sql, params)
                    except DATA_ERRORS as exc:
                        self._write_errors += 1
                        log.error("storage: skipped a record %r: %s", params[:3], describe(exc))
            else:
                if events:
                    await db.executemany(SQL_LOG_EVENT, events)
                start = 0
                for i in range(1, len(ops) + 1):
                    if i == len(ops) or ops[i][0] is not ops[start][0]:
                        await db.executemany(ops[start][0], [p for _, p in ops[start:i]])
                        start = i
            await db.execute("COMMIT")
        except BaseException:
            try:
                await db.execute("ROLLBACK")
            except Exception:
                pass
            raise

    async def _write(self, events: list[tuple], ops: list[tuple[str, tuple]]) -> bool:
        """Commit one batch, falling back or retrying on failure; True when it is on disk."""
        try:
            try:
                await self._commit(events, ops)
            except DATA_ERRORS:
                await self._commit(events, ops, one_by_one=True)
        except (sqlite3.Error, OSError) as exc:
            self._write_errors += 1
            reason = describe(exc)
            if self.location.mode is SaveMode.EXTERNAL and "locked" not in str(exc):
                return await self._fall_back(reason, events, ops)
            if self._failure is None:
                log.error("storage: writing to %s failed (%s); will retry", self.location.path, reason)
            self._failure = f"writing to {self.location.path} failed: {reason}"
            await self._reopen()
            return False
        if self._failure is not None:
            log.warning("storage: writing to %s works again", self.location.path)
            self._failure = None
        self._written += len(events) + len(ops)
        return True

    async def _swap_connection(self, db: aiosqlite.Connection) -> None:
        old, self._db = self._db, db
        try:
            await asyncio.wait_for(old.close(), 2.0)
        except Exception:
            pass

    async def _reopen(self) -> None:
        try:
            db, seed = await connect(self.location.path)
        except (sqlite3.Error, OSError):
            return
        self._last_id = max(self._last_id, seed)
        await self._swap_connection(db)

    async def _fall_back(self, reason: str, events: list[tuple], ops: list[tuple[str, tuple]]) -> bool:
        card_path = self.location.path
        internal = resolve_location(SaveMode.INTERNAL, internal_dir=self._internal_dir,
                                    db_filename=self._db_filename)
        try:
            db, seed = await connect(internal.path)
        except (sqlite3.Error, OSError) as exc:
            first = self._failure is None
            self._failure = (f"writing to {card_path} failed ({reason}) and the internal fallback "
                             f"{internal.path} failed too ({describe(exc)})")
            if first:
                log.error("storage: %s; will retry", self._failure)
            return False
        log.warning("storage: writing to TF card database %s failed (%s); falling back to internal "
                    "database %s", card_path, reason, internal.path)
        self.location = self.location.fallen_back(internal.path, f"writing to {card_path} failed: {reason}")
        self._failure = None
        self._renumber(seed, ops)
        await self._swap_connection(db)
        return await self._write(events, ops)

    def _renumber(self, seed: int, ops: list[tuple[str, tuple]]) -> None:
        """Give queued messages new ids where they would collide with the fallback's rows."""
        self._last_id = max(self._last_id, seed)
        for pending in (ops, self._ops):
            for i, (sql, params) in enumerate(pending):
                if sql is SQL_ADD_MESSAGE and params[0].isdigit() and int(params[0]) <= seed:
                    new_id = self._next_id()
                    self._id_remap[params[0]] = new_id
                    pending[i] = (sql, (new_id,) + params[1:])
                elif sql is SQL_UPDATE_MESSAGE and params[2] in self._id_remap:
                    pending[i] = (sql, params[:2] + (self._id_remap[params[2]],))
