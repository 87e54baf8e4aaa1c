"""The store's memory methods: :class:`~ticos_agent.memory.model.MemoryStore` on SQLite.

Functions of the store (``store``), called from the methods of :class:`~.store.Store` that
:class:`~.memory_methods.Memories` gives it; this module, the search and the memory model
load with the first of them (the last messages, read at start, are in :mod:`.memory_rows`).
All run on the event loop; reads go through the store's connection, writes through
its writer, so they go wherever messages go (the TF card, or the fallback database while it
is away: the merge carries memories and the summarisation mark to the card, see
:mod:`.merge`).

* ``remember`` validates (:func:`check_memory`: a kind of ``KINDS``, content 1 to
  ``MAX_CONTENT`` characters, its other text at most ``MAX_FIELD``, the limits the API, the
  tools and ``memory import`` share; ``confidence``/``importance`` in 0..1; else
  :class:`~ticos_agent.errors.BadMemory`, a ``ValueError``), returns the same memory when an
  identical one (kind, content, user) exists, else queues the row, waits for its commit and
  returns it with its id. The search index follows by trigger (:mod:`.fts`).
* ``recall`` searches (:mod:`.search`): memories, then messages; first asks the writer to
  index the messages committed since its last step (one short step; not while a database
  is still being indexed in the background, when the part above the mark is scanned).
* ``forget`` runs as a writer job: it finds the rows, deletes them with ``secure_delete``
  on (the text is zeroed in the pages, the index's entries go with the rows), optimises the
  memories index (its old segments held the words), clears the text of the memory tools'
  calls (``remember``/``recall``/``forget`` arguments and results) that held those words,
  and checkpoints the WAL with ``TRUNCATE`` so no older page image stays in the ``-wal``
  file. Forgotten messages leave the message index at once on SQLite 3.42+ (FTS5
  ``secure-delete``); before, the index is optimised when it holds at most
  ``OPTIMIZE_MESSAGES`` messages, else their words (not the text) stay in its old segments
  until these merge. It refuses while the TF card is away (the rows on the card cannot be reached; a
  forget that only half happened would come back with the card).
* ``unsummarised``/``mark_summarised``: the mark is a message id (``ticos_state`` row
  ``summarised``): ids grow with time and keep their value on the card, the fallback and
  through the merge, so the mark means the same wherever it is read.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import aiosqlite

from ..errors import BadMemory, StorageError
from ..memory import NAMES as MEMORY_TOOLS
from ..memory.model import KINDS, MAX_CONTENT, MAX_FIELD, Hit, Memory
from . import fts, schema, search
from .connection import transaction
from .fts import MEMORIES_FTS, MESSAGES_FTS, SQL_GET_MARK
from .memory_rows import FINISHED, MemoryRows, message_of
from .spans import SPANS

#: A memory's fields in :class:`Memory`'s order after id, kind, content, datetime.
_FIELDS = ("user_id", "subject", "key", "value", "confidence", "importance", "title", "source")
_COLUMNS = tuple("source_id" if f == "source" else f for f in _FIELDS)
#: Every field of :class:`Memory` -> its column in ``memories``.
FIELD_COLUMNS = {"id": "id", "kind": "type", "content": "content", "datetime": "datetime",
                 **dict(zip(_FIELDS, _COLUMNS))}
#: The fields ``SQL_REMEMBER`` takes, in its order.
REMEMBER_FIELDS = ("kind", "content", "datetime", *_FIELDS)
_SELECT = "id, type, content, datetime, " + ", ".join(_COLUMNS)
SQL_REMEMBER = ("INSERT INTO memories (type, content, datetime, " + ", ".join(_COLUMNS) + ") "
                "VALUES (" + ", ".join("?" * (3 + len(_FIELDS))) + ")")
#: A user's turn whose transcript may still come (a late one fills an ``incomplete`` row too):
#: the summarisation mark waits for it, for at most ``HELD_AT_MOST`` seconds.
HELD = "role = 'user' AND content = '' AND status IN ('pending', 'incomplete') AND datetime > ?"
HELD_AT_MOST = 600
MAX_RECALL = 50
#: Before SQLite 3.42 (no FTS5 secure-delete) the message index is rewritten after a forget
#: (``optimize``) so the words leave it, up to this many messages (a bigger one would block
#: the writer for seconds; its words then go when its segments merge).
OPTIMIZE_MESSAGES = 50_000
log = logging.getLogger(__name__)
_CHUNK = 500


def check_memory(kind: object, content: object, *, confidence: object = None, importance: object = None,
                 **text: object) -> None:
    """Raise :class:`BadMemory` naming the field when a memory cannot be stored."""
    if kind not in KINDS:
        raise BadMemory(f"kind must be one of {', '.join(KINDS)}, not {kind!r}", field="kind")
    if not isinstance(content, str) or not content.strip():
        raise BadMemory("content must be non-empty text", field="content")
    if len(content) > MAX_CONTENT:
        raise BadMemory(f"content is {len(content)} characters long; at most {MAX_CONTENT}", field="content")
    for name, number in (("confidence", confidence), ("importance", importance)):
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
                or not 0 <= number <= 1:
            raise BadMemory(f"{name} must be a number from 0 to 1, not {number!r}", field=name)
    for name, value in text.items():
        if value is not None and not isinstance(value, str):
            raise BadMemory(f"{name} must be text, not {type(value).__name__}", field=name)
        if isinstance(value, str) and len(value) > MAX_FIELD:
            raise BadMemory(f"{name} is {len(value)} characters long; at most {MAX_FIELD}", field=name)


def memory_of(row: Sequence[Any]) -> Memory:
    """A row selected as ``_SELECT`` -> :class:`Memory`."""
    rest = dict(zip(_FIELDS, row[4:]))
    rest["user_id"] = rest["user_id"] or "nobody"
    for name in ("confidence", "importance"):
        rest[name] = None if rest[name] is None else float(rest[name])
    return Memory(id=int(row[0]), kind=str(row[1]), content=str(row[2]), datetime=str(row[3]), **rest)


def numeric_id(message_id: object) -> int:
    """A message id's number (its leading digits; 0 when none)."""
    text = str(message_id)
    digits = len(text) - len(text.lstrip("0123456789"))
    return int(text[:digits]) if digits else 0


async def _mark(store: MemoryRows, db: aiosqlite.Connection | None = None) -> int | None:
    if not await store._has(MESSAGES_FTS, db):
        return None
    rows = await store._rows(SQL_GET_MARK, (), db)
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


# ---------------------------------------------------------------------- writing


async def remember(store: MemoryRows, kind: str, content: str, *, subject: str | None = None, key: str | None = None,
                   value: str | None = None, confidence: float | None = None,
                   importance: float | None = None, title: str | None = None, source: str | None = None,
                   user_id: str = "nobody") -> Memory:
    """:meth:`.memory_methods.Memories.remember`."""
    check_memory(kind, content, confidence=confidence, importance=importance, subject=subject, key=key,
                 value=value, title=title, source=source, user_id=user_id)
    if store._closing:
        raise store._closed_error()
    content = content.strip()
    same = f"SELECT {_SELECT} FROM memories WHERE type = ? AND content = ? AND user_id = ? ORDER BY id DESC LIMIT 1"
    found = await store._rows(same, (kind, content, user_id))
    if found:
        return memory_of(found[0])
    when = schema.now_local()
    numbers = [None if n is None else float(n) for n in (confidence, importance)]
    store._op(SQL_REMEMBER, (kind, content, when, user_id, subject, key, value, *numbers, title, source))
    await store.flush()
    found = await store._rows(f"SELECT {_SELECT} FROM memories WHERE type = ? AND content = ? AND user_id = ? "
                              "AND datetime = ? ORDER BY id DESC LIMIT 1", (kind, content, user_id, when))
    if not found:
        raise StorageError(f"the memory written to {store.location.path} cannot be read back")
    return memory_of(found[0])


async def mark_summarised(store: MemoryRows, upto: int) -> None:
    """:meth:`.memory_methods.Memories.mark_summarised`."""
    if isinstance(upto, bool) or not isinstance(upto, int) or upto < 0:
        raise BadMemory(f"the mark must be a message id from unsummarised(), not {upto!r}", field="upto")
    if store._closing:
        raise store._closed_error()
    store._op(schema.SQL_MARK_SUMMARISED, (upto,))
    await store.flush()


async def forget(store: MemoryRows, *, query: str | None = None, ids: Sequence[int] = (), everything: bool = False,
                 messages: bool = False) -> int:
    """:meth:`.memory_methods.Memories.forget`."""
    if (query is not None) + bool(ids) + bool(everything) != 1:
        raise BadMemory("forget needs exactly one of query, ids or everything", field="query")
    terms = search.words(query) if query is not None else None
    wanted = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise BadMemory(f"memory ids are whole numbers, not {i!r}", field="ids")
        wanted.append(i)

    async def job(db: aiosqlite.Connection) -> int:
        if store._on_fallback:
            raise StorageError("the TF card is away (the store writes to its fallback database): memories "
                               "on the card cannot be forgotten now; try again once it is back")
        return await _forget(store, db, terms, wanted, messages)

    return int(await store._job(job))


async def _forget(store: MemoryRows, db: aiosqlite.Connection, terms: list[str] | None, ids: list[int],
                  messages: bool) -> int:
    indexed = await store._has(MEMORIES_FTS, db)
    everything = terms is None and not ids
    if terms is not None:
        sql, params = search.memory_ids(terms, indexed, ("content", "title"))
        mem = sorted({int(r[0]) for r in await store._rows(sql, params, db)})
    elif ids:
        mem = sorted({int(r[0]) for i in range(0, len(ids), _CHUNK) for r in await store._rows(
            f"SELECT id FROM memories WHERE id IN ({','.join('?' * len(ids[i:i + _CHUNK]))})",
            ids[i:i + _CHUNK], db)})
    else:
        mem = [int(r[0]) for r in await store._rows("SELECT id FROM memories", (), db)]
    found: set[int] = set()
    if messages and terms is not None:
        for sql, params in search.message_rowids(terms, await _mark(store, db)):
            found.update(int(r[0]) for r in await store._rows(sql, params, db))
    elif messages and everything:
        found.update(int(r[0]) for r in await store._rows("SELECT rowid FROM messages", (), db))
    rowids = sorted(found)
    was = (await store._rows("PRAGMA secure_delete", (), db))[0][0]
    await db.execute("PRAGMA secure_delete = ON")
    try:
        async with transaction(db):
            for i in range(0, len(mem), _CHUNK):
                part = mem[i:i + _CHUNK]
                await db.execute(f"DELETE FROM memories WHERE id IN ({','.join('?' * len(part))})", part)
            for i in range(0, len(rowids), _CHUNK):
                part = rowids[i:i + _CHUNK]
                marks = ",".join("?" * len(part))
                for (mid,) in await store._rows(f"SELECT id FROM messages WHERE rowid IN ({marks})", part, db):
                    _forget_recent(store, str(mid))
                await db.execute(f"DELETE FROM messages WHERE rowid IN ({marks})", part)
            await _scrub_calls(store, db, terms, everything)
            if messages and everything:  # no session has messages now; one with calls keeps its span
                await db.execute(f"UPDATE {SPANS} SET first_message = NULL, last_message = NULL")
                await db.execute(f"DELETE FROM {SPANS} WHERE first_call IS NULL")
            if mem and indexed:
                await db.execute(f"INSERT INTO {MEMORIES_FTS} ({MEMORIES_FTS}) VALUES ('optimize')")
            if rowids and not fts.secure_delete_supported():
                mark = await _mark(store, db)
                if mark is not None and mark <= OPTIMIZE_MESSAGES:
                    await db.execute(f"INSERT INTO {MESSAGES_FTS} ({MESSAGES_FTS}) VALUES ('optimize')")
                elif mark:
                    log.info("storage: the forgotten messages' words stay in old segments of the message "
                             "index of %s until they merge (SQLite %s has no FTS5 secure-delete)",
                             store.location.path, sqlite3.sqlite_version)
    finally:
        await db.execute(f"PRAGMA secure_delete = {int(was)}")
    try:
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except aiosqlite.Error:
        pass  # a reader holds it; the next checkpoint overwrites those frames
    return len(mem) + len(rowids)


async def _scrub_calls(store: MemoryRows, db: aiosqlite.Connection, terms: list[str] | None, everything: bool) -> None:
    if terms is None and not everything:
        return
    names = ",".join(f"'{n}'" for n in MEMORY_TOOLS)
    sql = f"UPDATE function_calls SET arguments = '{{}}', result = NULL WHERE name IN ({names})"
    params: list[Any] = []
    if terms is not None:
        both = []
        for column in ("arguments", "result"):
            both.append("(" + " AND ".join(f"{column} LIKE ? ESCAPE '\\'" for _ in terms) + ")")
            params += [search.like(t) for t in terms]
        sql += " AND (" + " OR ".join(both) + ")"
    await db.execute(sql, params)


def _forget_recent(store: MemoryRows, message_id: str) -> None:
    row = store._recent.pop(message_id, None)
    if row is not None:
        store._recent_chars -= len(row[2]) if isinstance(row[2], str) else 0


# ---------------------------------------------------------------------- reading


async def recall(store: MemoryRows, query: str, *, limit: int = 5, messages: bool = True, memories: bool = True
                 ) -> list[Hit]:
    """:meth:`.memory_methods.Memories.recall`."""
    terms = search.words(query)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RECALL:
        raise BadMemory(f"limit must be a whole number from 1 to {MAX_RECALL}, not {limit!r}", field="limit")
    hits: list[Hit] = []
    if memories:
        if await store._has(MEMORIES_FTS):
            ranked: list[tuple[Any, ...]] = []
            for any_word in (False, True):
                sql, params = search.memories_by_index(terms, limit, any_word)
                ranked += await store._rows(sql, params)
                if len(ranked) >= limit or len(terms) == 1:
                    break
            hits += [search.memory_hit(r, rank) for r, rank in search.scaled(ranked, 4)]
        else:
            sql, params = search.memories_by_scan(terms, limit * search.OVERFETCH, ("content", "title"))
            hits += [search.memory_hit(r, search.share(terms, r[2])) for r in await store._rows(sql, params)]
    if messages:
        await _catch_up(store)
        mark = await _mark(store)
        found: list[Hit] = []
        if mark is not None:
            ranked = []
            for any_word in (False, True):
                for above in search.windows(mark):
                    sql, params = search.messages_by_index(terms, limit, any_word, above)
                    ranked += await store._rows(sql, params)
                    if len({r[0] for r in ranked}) >= limit:
                        break
                if len({r[0] for r in ranked}) >= limit or len(terms) == 1:
                    break
            found += [search.message_hit(r, search.share(terms, r[2])) for r in ranked]
        sql, params = search.messages_by_scan(terms, limit * search.OVERFETCH, mark or 0)
        found += [search.message_hit(r, search.share(terms, r[2])) for r in await store._rows(sql, params)]
        hits += found
    return search.best(hits, limit)


async def _catch_up(store: MemoryRows) -> None:
    """Commit what is queued and index what is new (not during a background build, when
    the part above the mark is scanned)."""
    if store._closing:
        return
    if store._on_fallback or store._fts_behind or (store._fts_known and store._fts_upto is None):
        if store._ops_in > store._ops_out:
            await store.flush()
    elif store._fts_pending or store._ops_in > store._ops_out or not store._fts_known:
        await store._job(store._index_step)


async def latest_memory(store: MemoryRows, kind: str = "long_term") -> Memory | None:
    rows = await store._rows(f"SELECT {_SELECT} FROM memories WHERE type = ? ORDER BY id DESC LIMIT 1", (kind,))
    return memory_of(rows[0]) if rows else None


async def facts(store: MemoryRows, limit: int = 50) -> list[Memory]:
    """:meth:`.memory_methods.Memories.facts`."""
    rows = await store._rows(f"SELECT {_SELECT} FROM memories WHERE type = 'fact' ORDER BY id DESC LIMIT ?",
                             (max(0, int(limit)),))
    return [memory_of(r) for r in rows]


async def unsummarised(store: MemoryRows, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` finished messages after the mark, oldest first, and the new mark;
    they stop before a user's turn still waiting for its transcript (``HELD``), so the
    mark never passes it."""
    got = await store._rows(schema.SQL_GET_SUMMARISED)
    mark = int(got[0][0]) if got and got[0][0] is not None else 0
    start = await store._rows("SELECT rowid FROM messages WHERE id = ?", (str(mark),)) if mark else []
    first = start[0][0] if start else 0
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - HELD_AT_MOST))
    held = await store._rows(f"SELECT MIN(rowid) FROM messages WHERE rowid > ? AND {HELD}", (first, since))
    before = held[0][0] if held and held[0][0] is not None else -1
    rows = await store._rows(f"SELECT id, role, content, datetime FROM messages WHERE rowid > ? AND {FINISHED} "
                             "AND CAST(id AS INTEGER) > ? AND (? < 0 OR rowid < ?) ORDER BY rowid LIMIT ?",
                            (first, mark, before, before, max(0, int(limit))))
    if not rows:
        return [], None
    return [message_of(r) for r in rows], max(numeric_id(r[0]) for r in rows)
