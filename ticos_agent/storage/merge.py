"""Merging EXTERNAL mode's fallback database into the TF card when the card is back.

The fallback database (``<internal dir>/ticos-fallback.db``, :func:`.location.fallback_path`)
holds only rows waiting for the card. :class:`Merger` moves them there, oldest first, a
chunk at a time, each chunk in two steps:

1. one card transaction (``synchronous=FULL``) inserts the chunk and records in the card's
   ``ticos_merged`` table, per table and *epoch* of the fallback, the highest fallback
   rowid merged;
2. one fallback transaction deletes those rows (a table that became empty gets a new epoch
   in the same transaction).

So a row leaves the fallback only after the card committed it, and a merge interrupted
between the two steps (the card pulled again, the process killed) adds nothing twice:
:meth:`Merger.begin` reads the card's marks first and only deletes the fallback rows at or
below them. That needs fallback rowids never to be reused within an epoch: rows leave a
fallback table only from the bottom (merged here, or pruned by the event-log retention,
which on the fallback always keeps a table's newest row), and a table emptied here gets a
new epoch, so a mark never covers a row written after it.

Rows keep their order: the card receives them in fallback rowid order after what it
already had (the writer keeps writing new records to the fallback until it is empty, then
switches). Per table:

* ``messages`` keep their id. When the card already has that id for the *same* message
  (same role, datetime, item id and session: a card row updated while the card was away)
  its content and status are updated; a *different* message with that id (another run's
  clock) is inserted under a new id from ``rename`` (the writer makes its queued updates
  follow it).
* ``memories`` and ``events`` get new ids on the card (their ids are per-database
  counters); every other field is kept (a memory's schema-4 fields too).
* the summarisation mark (``ticos_state``, a message id: the same on both) becomes the
  larger of the two, with each chunk and when the merge ends.
* ``function_calls`` are merged by session and ``call_id`` (a row without a session: to the
  card's newest call of that id, as the writer does): the fields the card lacks are filled,
  and an outcome (``finished`` set) in the fallback wins.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiosqlite

from .schema import BUSY_TIMEOUT_MS, EVENT_LOG, MEMORY_COLUMNS, SQL_GET_SUMMARISED, SQL_MARK_SUMMARISED
from .writes import CALL_KEY, ID_BATCH, MERGE_CHUNK, NEWEST_SESSION, SQL_ADD_MESSAGE

log = logging.getLogger(__name__)

#: The tables merged, in this order within a chunk.
TABLES = ("messages", "memories", "function_calls", "events")
#: In the fallback database: the current epoch of each table.
EPOCHS = "ticos_fallback_epochs"
#: In the card database: how far each fallback table (by epoch) has been merged.
MARKS = "ticos_merged"
#: One row as read: its values.
Row = tuple[Any, ...]

_MESSAGE_FIELDS = "id, role, content, item_id, user_id, datetime, session_id, status, response_id"
_SELECT = {
    "messages": _MESSAGE_FIELDS,
    "memories": ", ".join(MEMORY_COLUMNS[1:]),
    "function_calls": "call_id, name, arguments, session_id, response_id, item_id, status, result, created, finished",
    "events": "ts, type, session_id, event_id, item_id, response_id",
}
_ADD_MEMORY = (f"INSERT INTO memories ({', '.join(MEMORY_COLUMNS[1:])}) "
               f"VALUES ({', '.join('?' * len(MEMORY_COLUMNS[1:]))})")
#: Where a table's rows are kept, where that is not the table itself: ``events`` is a view
#: (schema 5; its ``rowid`` column is the id).
_STORED = {"events": EVENT_LOG}
_ADD_EVENT = "INSERT INTO events (ts, type, session_id, event_id, item_id, response_id) VALUES (?, ?, ?, ?, ?, ?)"
_UPDATE_COPY = "UPDATE messages SET content = ?, status = COALESCE(?, status) WHERE id = ?"
_MERGE_CALL = (
    "INSERT INTO function_calls (call_id, name, arguments, session_id, response_id, item_id, status, result, "
    f"created, finished) VALUES (?1, ?2, ?3, COALESCE(?4, {NEWEST_SESSION}), ?5, ?6, ?7, ?8, ?9, ?10) "
    f"ON CONFLICT({CALL_KEY}) DO UPDATE SET "
    "name = COALESCE(name, excluded.name), arguments = COALESCE(arguments, excluded.arguments), "
    "response_id = COALESCE(response_id, excluded.response_id), item_id = COALESCE(item_id, excluded.item_id), "
    "created = COALESCE(created, excluded.created), "
    "status = CASE WHEN excluded.finished IS NOT NULL OR finished IS NULL "
    "THEN COALESCE(excluded.status, status) ELSE status END, "
    "result = CASE WHEN excluded.finished IS NOT NULL THEN excluded.result ELSE result END, "
    "finished = COALESCE(excluded.finished, finished)"
)
_CREATE_MARKS = (f"CREATE TABLE IF NOT EXISTS {MARKS} (source TEXT NOT NULL, tbl TEXT NOT NULL, "
                 "upto INTEGER NOT NULL, merged TEXT, PRIMARY KEY (source, tbl))")
_SET_MARK = (f"INSERT INTO {MARKS} (source, tbl, upto, merged) VALUES (?, ?, ?, ?) "
             "ON CONFLICT(source, tbl) DO UPDATE SET upto = excluded.upto, merged = excluded.merged")


def new_epoch() -> str:
    return uuid.uuid4().hex


def prepare_fallback(path: str) -> None:
    """Give a fallback database its epochs table (blocking; after :func:`.schema.prepare`)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {EPOCHS} (tbl TEXT PRIMARY KEY, epoch TEXT NOT NULL)")
        conn.executemany(f"INSERT OR IGNORE INTO {EPOCHS} (tbl, epoch) VALUES (?, ?)",
                         [(table, new_epoch()) for table in TABLES])
    finally:
        conn.close()


_COUNT = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in TABLES)
_ANY = "SELECT " + " OR ".join(f"EXISTS (SELECT 1 FROM {t})" for t in TABLES)


async def fallback_counts(db: aiosqlite.Connection) -> dict[str, int]:
    """Rows per table in a fallback database (``function_calls`` is reported as ``calls``)."""
    async with db.execute(_COUNT) as cursor:
        row = await cursor.fetchone()
    counts = tuple(row) if row is not None else (0,) * len(TABLES)
    return {("calls" if t == "function_calls" else t): int(n) for t, n in zip(TABLES, counts)}


def count_rows(conn: sqlite3.Connection) -> dict[str, int]:
    """:func:`fallback_counts` on a plain (read-only) connection; missing tables count 0."""
    out = {}
    for table in TABLES:
        try:
            n = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:
            n = 0
        out["calls" if table == "function_calls" else table] = int(n)
    return out


class Merger:
    """Moves the rows of the fallback connection ``fallback`` into the card connection ``card``.

    ``rename(old_id) -> new_id`` gives a message that collides with a different card message
    a new id. Call :meth:`begin` once, then :meth:`step` until it reports the fallback empty,
    then :meth:`forget_marks`. Every method raises the ``sqlite3.Error``/``OSError`` of
    either database untouched; the caller abandons the merge then (nothing is lost, see the
    module docstring) and starts a new ``Merger`` later.
    """

    def __init__(self, fallback: aiosqlite.Connection, card: aiosqlite.Connection, *,
                 rename: Callable[[str], str], chunk: int = MERGE_CHUNK):
        self.fallback = fallback
        self.card = card
        self.rename = rename
        self.chunk = chunk
        self.epochs: dict[str, str] = {}
        self.seen: set[str] = set()
        self.merged = 0        # rows now on the card
        self.renamed = 0       # messages given a new id
        self.already = 0       # rows found already merged (an earlier merge was interrupted)

    async def begin(self) -> None:
        """Read the epochs and the card's marks; drop the fallback rows the card already has."""
        async with self.fallback.execute(f"SELECT tbl, epoch FROM {EPOCHS}") as cursor:
            self.epochs = {t: e for t, e in await cursor.fetchall() if t in TABLES}
        for table in TABLES:
            if table not in self.epochs:  # a fallback made by hand: give it an epoch
                self.epochs[table] = new_epoch()
                await self.fallback.execute(f"INSERT OR REPLACE INTO {EPOCHS} (tbl, epoch) VALUES (?, ?)",
                                            (table, self.epochs[table]))
        self.seen.update(self.epochs.values())
        async with self.card.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                     (MARKS,)) as cursor:
            if await cursor.fetchone() is None:
                return
        marks = {}
        for table, epoch in self.epochs.items():
            async with self.card.execute(f"SELECT upto FROM {MARKS} WHERE source = ? AND tbl = ?",
                                         (epoch, table)) as cursor:
                row = await cursor.fetchone()
            if row is not None:
                marks[table] = int(row[0])
        if marks:
            self.already = await self._drop(marks)
            if self.already:
                log.info("storage: %d fallback rows were already on the TF card (an earlier merge was "
                         "interrupted); removed them from the fallback", self.already)

    async def step(self) -> tuple[int, bool]:
        """Merge one chunk; returns (rows merged, whether the fallback is now empty)."""
        budget, chunk = self.chunk, {}
        rows: list[Row]
        for table in TABLES:
            if budget <= 0:
                break
            async with self.fallback.execute(
                    f"SELECT rowid, {_SELECT[table]} FROM {table} ORDER BY rowid LIMIT ?", (budget,)) as cursor:
                rows = [tuple(row) for row in await cursor.fetchall()]
            if rows:
                chunk[table] = rows
                budget -= len(rows)
        merged = 0
        if chunk:
            marks = await self._to_card(chunk)
            merged = sum(len(part) for part in chunk.values())
            self.merged += merged
            await self._drop(marks)
        async with self.fallback.execute(_ANY) as cursor:
            any_left = await cursor.fetchone()
        return merged, not (any_left is not None and any_left[0])

    async def forget_marks(self) -> None:
        """Once the fallback is empty: remove this merge's marks from the card (they cover no row)."""
        if not self.seen:
            return
        seen = sorted(self.seen)
        db = self.card
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(_CREATE_MARKS)
            await db.execute(f"DELETE FROM {MARKS} WHERE source IN ({','.join('?' * len(seen))})", seen)
            await self._carry_summarised()
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise

    # ------------------------------------------------------------------ the two steps

    async def _to_card(self, chunk: dict[str, list[Row]]) -> dict[str, int]:
        db = self.card
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        marks = {}
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(_CREATE_MARKS)
            for table, rows in chunk.items():
                values = [row[1:] for row in rows]
                if table == "messages":
                    await self._messages(values)
                elif table == "memories":
                    await db.executemany(_ADD_MEMORY, values)
                elif table == "function_calls":
                    await db.executemany(_MERGE_CALL, values)
                else:
                    await db.executemany(_ADD_EVENT, values)
                marks[table] = int(rows[-1][0])
                await db.execute(_SET_MARK, (self.epochs[table], table, marks[table], now))
            await self._carry_summarised()
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise
        return marks

    async def _carry_summarised(self) -> None:
        """The card's summarisation mark becomes at least the fallback's (in the card's
        transaction; a database without the state table has no mark)."""
        try:
            async with self.fallback.execute(SQL_GET_SUMMARISED) as cursor:
                row = await cursor.fetchone()
        except sqlite3.OperationalError:
            return
        if row is not None and row[0] is not None:
            await self.card.execute(SQL_MARK_SUMMARISED, (int(row[0]),))

    async def _messages(self, rows: list[Row]) -> None:
        db = self.card
        existing: dict[str, Row] = {}
        ids = [row[0] for row in rows]
        for i in range(0, len(ids), ID_BATCH):
            part = ids[i:i + ID_BATCH]
            async with db.execute("SELECT id, role, datetime, item_id, session_id FROM messages "
                                  f"WHERE id IN ({','.join('?' * len(part))})", part) as cursor:
                for found in await cursor.fetchall():
                    existing[found[0]] = tuple(found[1:])
        inserts: list[Row] = []
        updates: list[Row] = []
        for row in rows:
            mid, role, content, item_id, _user, dt, session_id, status, _resp = row
            other = existing.get(mid)
            if other is None:
                inserts.append(row)
            elif other == (role, dt, item_id, session_id):
                updates.append((content, status, mid))  # the card's row, changed while it was away
            else:
                new = self.rename(mid)
                self.renamed += 1
                log.info("storage: fallback message %s collides with another message on the TF card; "
                         "merged as %s", mid, new)
                inserts.append((new,) + tuple(row[1:]))
        if inserts:
            await db.executemany(SQL_ADD_MESSAGE, inserts)
        if updates:
            await db.executemany(_UPDATE_COPY, updates)

    async def _drop(self, marks: dict[str, int]) -> int:
        """Delete the fallback rows at or below ``marks``; a table left empty gets a new epoch."""
        db = self.fallback
        dropped, epochs = 0, {}
        await db.execute("BEGIN IMMEDIATE")
        try:
            for table, upto in marks.items():
                cursor = await db.execute(f"DELETE FROM {_STORED.get(table, table)} WHERE rowid <= ?", (upto,))
                dropped += max(cursor.rowcount, 0)
                async with db.execute(f"SELECT EXISTS (SELECT 1 FROM {table})") as check:
                    exists = await check.fetchone()
                    if exists is None or not exists[0]:
                        epochs[table] = new_epoch()
                        await db.execute(f"UPDATE {EPOCHS} SET epoch = ? WHERE tbl = ?", (epochs[table], table))
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise
        self.epochs.update(epochs)
        self.seen.update(epochs.values())
        return dropped


async def _rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.execute("ROLLBACK")
    except Exception:
        pass
