"""The read queries, written once, used by the async :class:`Store` and the offline reader.

Each builder returns a :class:`Query` (SQL, parameters and how to turn rows into dicts). The
builders take the set of columns a table actually has, so a ticos-client database that was
never migrated (version 0 or 1) reads fine: missing columns come back as ``None`` and missing
tables as no rows. The ``read_*`` functions run a query on a plain ``sqlite3`` connection.

Lists are newest first (``ORDER BY rowid DESC``); ``limit`` is capped at :data:`MAX_LIMIT`.

The inspector's filtered reads are :mod:`.finder`'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .schema import CALL_COLUMNS, EVENT_COLUMNS, MEMORY_COLUMNS, MESSAGE_COLUMNS, table_columns
from .spans import has_spans, of_session

MAX_LIMIT = 500

#: table -> columns for a database at the current schema version (the Store's case).
FULL_SCHEMA: dict[str, frozenset[str]] = {
    "messages": frozenset(MESSAGE_COLUMNS),
    "memories": frozenset(MEMORY_COLUMNS),
    "function_calls": frozenset(CALL_COLUMNS),
    "events": frozenset(EVENT_COLUMNS),
}


@dataclass(frozen=True)
class Query:
    """One read: ``sql`` and ``params`` to run, ``columns`` naming the result's fields.

    ``sql`` is ``None`` when the table is missing; the answer is then empty (or 0).
    """

    sql: str | None
    params: tuple[Any, ...]
    columns: tuple[str, ...]
    scalar: bool = False

    def result(self, rows: Iterable[tuple[Any, ...]]) -> Any:
        """Rows -> list of dicts (or the single number of a count)."""
        if self.scalar:
            got = list(rows)
            return int(got[0][0]) if got and got[0][0] is not None else 0
        return [dict(zip(self.columns, row)) for row in rows]

    def empty(self) -> Any:
        return 0 if self.scalar else []


def _page(limit: int, offset: int) -> tuple[int, int]:
    return max(0, min(int(limit), MAX_LIMIT)), max(0, int(offset))


Present = frozenset[str] | set[str]
Row = dict[str, Any]


def select_columns(columns: tuple[str, ...], present: Present) -> str:
    return ", ".join(c if c in present else f"NULL AS {c}" for c in columns)


def _list(table: str, columns: tuple[str, ...], present: Present, limit: int, offset: int,
          session_id: str | None = None, spans: bool = True) -> Query:
    if not present:
        return Query(None, (), columns)
    limit, offset = _page(limit, offset)
    where, params = "", ()  # type: tuple[str, tuple[Any, ...]]
    if session_id is not None:
        if "session_id" not in present:
            return Query(None, (), columns)
        where, found = of_session(table, session_id, spans)
        where, params = " WHERE " + where, tuple(found)
    sql = f"SELECT {select_columns(columns, present)} FROM {table}{where} ORDER BY rowid DESC LIMIT ? OFFSET ?"
    return Query(sql, params + (limit, offset), columns)


def messages_query(present: Present = FULL_SCHEMA["messages"], limit: int = 50, offset: int = 0,
                   session_id: str | None = None, spans: bool = True) -> Query:
    """Messages, newest first, optionally of one session (through its span when the database
    has ``spans``, see :mod:`.spans`)."""
    return _list("messages", MESSAGE_COLUMNS, present, limit, offset, session_id, spans)


def memories_query(present: Present = FULL_SCHEMA["memories"], limit: int = 50, offset: int = 0) -> Query:
    """Memories, newest first."""
    return _list("memories", MEMORY_COLUMNS, present, limit, offset)


def calls_query(present: Present = FULL_SCHEMA["function_calls"], limit: int = 50, offset: int = 0) -> Query:
    """Function calls, newest first; ``result`` is the stored JSON text."""
    return _list("function_calls", CALL_COLUMNS, present, limit, offset)


def events_query(present: Present = FULL_SCHEMA["events"], limit: int = 100, offset: int = 0,
                 session_id: str | None = None) -> Query:
    """The compact event log, newest first, optionally of one session."""
    return _list("events", EVENT_COLUMNS, present, limit, offset, session_id)


def count_messages_query(present: Present = FULL_SCHEMA["messages"], session_id: str | None = None,
                         spans: bool = True) -> Query:
    """How many messages (of one session)."""
    if not present or (session_id is not None and "session_id" not in present):
        return Query(None, (), (), scalar=True)
    if session_id is None:
        return Query("SELECT COUNT(*) FROM messages", (), (), scalar=True)
    where, params = of_session("messages", session_id, spans)
    return Query(f"SELECT COUNT(*) FROM messages WHERE {where}", tuple(params), (), scalar=True)


def _run(conn: sqlite3.Connection, query: Query) -> Any:
    if query.sql is None:
        return query.empty()
    return query.result(conn.execute(query.sql, query.params).fetchall())


def read_messages(conn: sqlite3.Connection, limit: int = 50, offset: int = 0,
                  session_id: str | None = None) -> list[Row]:
    """Messages on a plain connection: dicts with ``id, role, content, item_id, user_id,
    datetime, session_id, status, response_id``, newest first."""
    rows: list[Row] = _run(conn, messages_query(table_columns(conn, "messages"), limit, offset, session_id,
                                                has_spans(conn)))
    return rows


def read_memories(conn: sqlite3.Connection, limit: int = 50, offset: int = 0) -> list[Row]:
    """Memories on a plain connection: dicts with ``id, type, content, user_id, datetime``."""
    rows: list[Row] = _run(conn, memories_query(table_columns(conn, "memories"), limit, offset))
    return rows


def read_calls(conn: sqlite3.Connection, limit: int = 50, offset: int = 0) -> list[Row]:
    """Function calls on a plain connection (empty for a ticos-client database)."""
    rows: list[Row] = _run(conn, calls_query(table_columns(conn, "function_calls"), limit, offset))
    return rows


def read_events(conn: sqlite3.Connection, limit: int = 100, offset: int = 0,
                session_id: str | None = None) -> list[Row]:
    """The event log on a plain connection (empty for a ticos-client database)."""
    rows: list[Row] = _run(conn, events_query(table_columns(conn, "events"), limit, offset, session_id))
    return rows


def count_messages(conn: sqlite3.Connection, session_id: str | None = None) -> int:
    """How many messages (of one session) on a plain connection."""
    return int(_run(conn, count_messages_query(table_columns(conn, "messages"), session_id, has_spans(conn))))


# ----------------------------------------------------------------- streaming every row

MAX_PAGE = 10_000


def _iter(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], page: int,
          session_id: str | None = None) -> Iterator[Row]:
    """Every row of ``table``, oldest first, ``page`` rows per query (keyset paging on rowid)."""
    present = table_columns(conn, table)
    if not present or (session_id is not None and "session_id" not in present):
        return
    page = max(1, min(int(page), MAX_PAGE))
    where, extra = "", ()  # type: tuple[str, tuple[Any, ...]]
    if session_id is not None:
        where, found = of_session(table, session_id, has_spans(conn))
        where, extra = " AND " + where, tuple(found)
    sql = (f"SELECT rowid, {select_columns(columns, present)} FROM {table} WHERE rowid > ?{where} "
           "ORDER BY rowid LIMIT ?")
    last = None
    while True:
        rows = conn.execute(sql, (last if last is not None else -(1 << 63),) + extra + (page,)).fetchall()
        for row in rows:
            yield dict(zip(columns, row[1:]))
        if len(rows) < page:
            return
        last = rows[-1][0]


def iter_messages(conn: sqlite3.Connection, session_id: str | None = None, page: int = 500) -> Iterator[Row]:
    """Every message (of one session), oldest first; the fields of :func:`read_messages`."""
    return _iter(conn, "messages", MESSAGE_COLUMNS, page, session_id)


def iter_memories(conn: sqlite3.Connection, page: int = 500) -> Iterator[Row]:
    """Every memory, oldest first; the fields of :func:`read_memories`."""
    return _iter(conn, "memories", MEMORY_COLUMNS, page)


def iter_calls(conn: sqlite3.Connection, page: int = 500) -> Iterator[Row]:
    """Every function call, oldest first; the fields of :func:`read_calls`."""
    return _iter(conn, "function_calls", CALL_COLUMNS, page)


def iter_events(conn: sqlite3.Connection, session_id: str | None = None, page: int = 500) -> Iterator[Row]:
    """The whole event log (of one session), oldest first; the fields of :func:`read_events`."""
    return _iter(conn, "events", EVENT_COLUMNS, page, session_id)
