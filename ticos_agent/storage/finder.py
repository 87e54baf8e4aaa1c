"""The offline inspector's filtered reads: :class:`Finder`, its :class:`Window` and the
:class:`Kind` of each table.

:class:`Finder` is the offline inspector's filtered reading (a :class:`Window`: a time range,
a session, a role, a text) of a database it may not change, so it cannot add an index. It
stays fast on a card with a million rows by using what the writer guarantees: rows are
appended, so a table's rowid order is its time order, and a time range becomes a rowid range
found by binary search (about 25 point reads). Rows whose time is out of that order (a clock
set back) are still filtered exactly by their time but may be missed by the range. Sessions use
the session spans (:mod:`.spans`; a database from before schema 6, its session indexes);
``grep`` uses an FTS5 index over ``messages`` when the database has one made by someone else
(``content='messages'``), a scan otherwise. ``grep`` finds its text anywhere, inside words
too, which a word index cannot promise: the agent's own index (:mod:`.fts`, recognised by its
mark, the messages it covers) serves searches by words (``Store.recall``) and is not used here.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .fts import find_messages_index
from .queries import MAX_PAGE, Row, select_columns
from .schema import CALL_COLUMNS, EVENT_COLUMNS, MEMORY_COLUMNS, MESSAGE_COLUMNS, table_columns
from .search import like
from .spans import SPANS, has_spans, of_session


@dataclass(frozen=True)
class Kind:
    """One kind of row: its table and fields, the field with its time (``epoch``: seconds since
    1970, else local ``YYYY-MM-DD HH:MM:SS`` text), the fields ``grep`` searches, and SQL for
    its role (``None``: such rows have no role)."""

    name: str
    table: str
    columns: tuple[str, ...]
    time: str
    epoch: bool
    text: tuple[str, ...]
    role: str | None


_EVENT_ROLE = ("(CASE WHEN type LIKE 'input_audio_buffer.%' OR type LIKE 'conversation.item.input_audio%' "
               "THEN 'user' WHEN type LIKE 'response.%' THEN 'assistant' ELSE 'system' END)")

MESSAGES = Kind("messages", "messages", MESSAGE_COLUMNS, "datetime", False, ("content",), "role")
MEMORIES = Kind("memories", "memories", MEMORY_COLUMNS, "datetime", False,
                ("type", "content", "title", "subject", "key", "value"), None)
CALLS = Kind("calls", "function_calls", CALL_COLUMNS, "created", False, ("name", "arguments", "result"),
             "'assistant'")
EVENTS = Kind("events", "events", EVENT_COLUMNS, "ts", True, ("type", "event_id", "item_id", "response_id"),
              _EVENT_ROLE)
KINDS: dict[str, Kind] = {k.name: k for k in (MESSAGES, MEMORIES, CALLS, EVENTS)}


@dataclass(frozen=True)
class Window:
    """Which rows to read; every field left ``None`` (or ``False``) selects all.

    ``since <= time < until`` in local text (messages, memories, calls) and ``since_ts`` /
    ``until_ts`` in epoch seconds (the event log) for the same range; ``session`` when
    ``by_session`` (``None`` then means the rows without a session); ``role``; ``grep``, a
    text found anywhere in the row's text fields (ASCII letters in any case); ``types`` of
    events and ``statuses`` of messages or calls.
    """

    since: str | None = None
    until: str | None = None
    since_ts: float | None = None
    until_ts: float | None = None
    by_session: bool = False
    session: str | None = None
    role: str | None = None
    grep: str | None = None
    types: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None


_NOT_IN_CHUNK = 500


class Finder:
    """Filtered reads of one database on a plain (read-only) connection.

    It caches what it learns of the schema and of where times fall in each table; make a new
    one for another connection.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._columns: dict[str, frozenset[str]] = {}
        self._fts: tuple[str | None] | None = None
        self._fts_mark: tuple[int | None] | None = None
        self._bounds: dict[tuple[str, Any], int | None] = {}
        self._ends: dict[str, tuple[int, int] | None] = {}

    # --- schema ---------------------------------------------------------------------------

    def columns(self, kind: Kind) -> frozenset[str]:
        """The fields ``kind``'s table has (empty when there is no such table)."""
        return self._table(kind.table)

    def _table(self, table: str) -> frozenset[str]:
        got = self._columns.get(table)
        if got is None:
            got = self._columns[table] = frozenset(table_columns(self.conn, table))
        return got

    @functools.cached_property
    def spans(self) -> bool:
        """Whether the database keeps session spans (:mod:`.spans`)."""
        return has_spans(self.conn)

    def of_session(self, kind: Kind, session: str | None) -> tuple[str, list[Any]]:
        """SQL and parameters selecting ``session``'s rows of ``kind`` (``None``: the rows
        without a session), through its span when the database keeps them."""
        return of_session(kind.table, session, self.spans)

    def fts_index(self) -> str | None:
        """The name of an FTS5 index of ``messages`` (external content, the same rowids) that
        this SQLite can read, or ``None``."""
        if self._fts is None:
            self._fts = (find_messages_index(self.conn),)
        return self._fts[0]

    def fts_mark(self) -> int | None:
        """The highest message rowid the agent's own index holds (``ticos_state``), or ``None``
        when there is no index or it was made by someone else."""
        if self._fts_mark is None:
            mark = None
            if self.fts_index() is not None:
                try:
                    row = self.conn.execute("SELECT value FROM ticos_state WHERE name = 'fts_messages'").fetchone()
                    mark = int(row[0]) if row is not None and row[0] is not None else None
                except (sqlite3.Error, ValueError, TypeError):
                    mark = None
            self._fts_mark = (mark,)
        return self._fts_mark[0]

    # --- time -> rowid ----------------------------------------------------------------------

    def ends(self, kind: Kind) -> tuple[int, int] | None:
        """The lowest and highest rowid of ``kind``'s table (``None``: empty or missing)."""
        if kind.table not in self._ends:
            got = None
            if self.columns(kind):
                # two queries: MIN() and MAX() together would scan the table
                lo = self.conn.execute(f"SELECT rowid FROM {kind.table} ORDER BY rowid LIMIT 1").fetchone()
                hi = self.conn.execute(f"SELECT rowid FROM {kind.table} ORDER BY rowid DESC LIMIT 1").fetchone()
                got = None if lo is None or hi is None else (int(lo[0]), int(hi[0]))
            self._ends[kind.table] = got
        return self._ends[kind.table]

    def first_at(self, kind: Kind, value: str | float) -> int | None:
        """The rowid of the first row whose time is ``>= value`` (``None``: no such row), by
        binary search over rowids: times are taken to grow with rowids (rows are appended)."""
        key = (kind.table, value)
        if key in self._bounds:
            return self._bounds[key]
        ends = self.ends(kind)
        found: int | None = None
        if ends is not None and kind.time in self.columns(kind):
            probe = (f"SELECT rowid, {kind.time} >= ? FROM {kind.table} WHERE rowid >= ? "
                     f"AND {kind.time} IS NOT NULL ORDER BY rowid LIMIT 1")
            lo, hi = ends[0], ends[1] + 1
            while lo < hi:
                mid = (lo + hi) // 2
                row = self.conn.execute(probe, (value, mid)).fetchone()
                if row is None or row[1]:
                    hi = mid
                else:
                    lo = int(row[0]) + 1
            row = self.conn.execute(probe, (value, lo)).fetchone()
            found = int(row[0]) if row is not None else None
        self._bounds[key] = found
        return found

    # --- the WHERE of a window --------------------------------------------------------------

    def where(self, kind: Kind, w: Window) -> tuple[str, list[Any]] | None:
        """SQL (without ``WHERE``) and parameters selecting ``w``'s rows of ``kind``; ``None``
        when none can match (no such table, or a field the filter needs is missing)."""
        cols = self.columns(kind)
        if not cols:
            return None
        clauses: list[str] = []
        params: list[Any] = []
        since, until = (w.since_ts, w.until_ts) if kind.epoch else (w.since, w.until)
        if since is not None or until is not None:
            if kind.time not in cols:
                return None
            if since is not None:
                lo = self.first_at(kind, since)
                if lo is None:
                    return None
                clauses += ["rowid >= ?", f"{kind.time} >= ?"]
                params += [lo, since]
            if until is not None:
                hi = self.first_at(kind, until)
                if hi is not None:
                    clauses.append("rowid < ?")
                    params.append(hi)
                clauses.append(f"{kind.time} < ?")
                params.append(until)
        if w.by_session:
            if "session_id" in cols:
                test, session = self.of_session(kind, w.session)
                clauses.append(test)
                params += session
            elif w.session is not None:
                return None
        if w.role is not None:
            if kind.role is None or (kind is MESSAGES and "role" not in cols):
                return None
            clauses.append(f"{kind.role} = ?")
            params.append(w.role)
        for field, values in (("type", w.types), ("status", w.statuses)):
            if values is not None:
                if field not in cols or not values:
                    return None
                clauses.append(f"{field} IN ({', '.join('?' * len(values))})")
                params += list(values)
        if w.grep:
            texts = [c for c in kind.text if c in cols]
            if not texts:
                return None
            fts = self.fts_index() if kind is MESSAGES and re.search(r"\w", w.grep) and self.fts_mark() is None \
                else None
            if fts is not None:
                clauses.append(f"rowid IN (SELECT rowid FROM {fts} WHERE {fts} MATCH ?)")
                params.append('"' + w.grep.replace('"', '""') + '"*')
            clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in texts) + ")")
            params += [like(w.grep)] * len(texts)
        return " AND ".join(clauses) or "1", params

    # --- reading ----------------------------------------------------------------------------

    def _sql(self, kind: Kind, fields: str, w: Window) -> tuple[str, list[Any]] | None:
        got = self.where(kind, w)
        if got is None:
            return None
        return f"SELECT {fields} FROM {kind.table} WHERE {got[0]}", got[1]

    def newest(self, kind: Kind, w: Window, limit: int, before: int | None = None) -> list[Row]:
        """The newest ``limit`` rows of ``w`` (below rowid ``before``), newest first; each dict
        has ``kind``'s fields and its ``rowid``."""
        got = self._sql(kind, f"rowid, {select_columns(kind.columns, self.columns(kind))}", w)
        if got is None or limit <= 0:
            return []
        sql, params = got
        if before is not None:
            sql += " AND rowid < ?"
            params.append(before)
        rows = self.conn.execute(sql + " ORDER BY rowid DESC LIMIT ?", (*params, limit)).fetchall()
        return [{"rowid": row[0], **dict(zip(kind.columns, row[1:]))} for row in rows]

    def scan(self, kind: Kind, w: Window, page: int = 500) -> Iterator[Row]:
        """Every row of ``w``, oldest first, ``page`` rows per query (keyset on rowid): an
        export of any size in constant memory."""
        got = self._sql(kind, f"rowid, {select_columns(kind.columns, self.columns(kind))}", w)
        if got is None:
            return
        sql, params = got
        sql += " AND rowid > ? ORDER BY rowid LIMIT ?"
        page = max(1, min(int(page), MAX_PAGE))
        last = -(1 << 63)
        while True:
            rows = self.conn.execute(sql, (*params, last, page)).fetchall()
            for row in rows:
                yield {"rowid": row[0], **dict(zip(kind.columns, row[1:]))}
            if len(rows) < page:
                return
            last = rows[-1][0]

    def count(self, kind: Kind, w: Window, before: int | None = None) -> int:
        """How many rows ``w`` selects (below rowid ``before``)."""
        got = self._sql(kind, "COUNT(*)", w)
        if got is None:
            return 0
        sql, params = got
        if before is not None:
            sql += " AND rowid < ?"
            params.append(before)
        return int(self.conn.execute(sql, params).fetchone()[0])

    def select(self, kind: Kind, w: Window, fields: str, tail: str = "") -> list[tuple[Any, ...]]:
        """``SELECT fields FROM kind's table WHERE <w> tail`` (an aggregate, a GROUP BY ...)."""
        got = self._sql(kind, fields, w)
        if got is None:
            return []
        return list(self.conn.execute(f"{got[0]} {tail}", got[1]).fetchall())

    # --- sessions ---------------------------------------------------------------------------

    def sessions(self, w: Window, limit: int) -> list[Row]:
        """The newest ``limit`` sessions having messages in ``w``, newest first: dicts with
        ``session_id`` (``None`` for messages without one, e.g. a ticos-client card's),
        ``messages``, ``first_rowid``/``last_rowid`` and ``first``/``last`` (local times)."""
        cols = self.columns(MESSAGES)
        if not cols or limit <= 0:
            return []
        if "session_id" not in cols:
            found: list[str | None] = [None] if self.count(MESSAGES, w) else []
        else:
            found = self._walk(w, limit)
        return [self.session_span(sid) for sid in found]

    def _walk(self, w: Window, limit: int) -> list[str | None]:
        """Sessions in order of their newest row in ``w``: each step one backward scan from
        the last one found, skipping the rows of sessions already found."""
        got = self.where(MESSAGES, w)
        if got is None:
            return []
        found: list[str | None] = []
        named: list[str] = []
        cursor: int | None = None
        while len(found) < limit:
            sql, params = f"SELECT rowid, session_id FROM messages WHERE {got[0]}", list(got[1])
            if cursor is not None:
                sql += " AND rowid < ?"
                params.append(cursor)
            skip = [f"session_id NOT IN ({', '.join('?' * len(named[i:i + _NOT_IN_CHUNK]))})"
                    for i in range(0, len(named), _NOT_IN_CHUNK)]
            if skip or None in found:
                test = " AND ".join(skip) if skip else "1"
                nulls = ")" if None in found else " OR session_id IS NULL)"
                sql += f" AND ({test} AND session_id IS NOT NULL{nulls}"
                params += named
            row = self.conn.execute(sql + " ORDER BY rowid DESC LIMIT 1", params).fetchone()
            if row is None:
                break
            cursor, sid = int(row[0]), row[1]
            found.append(sid)
            if sid is not None:
                named.append(sid)
        return found

    def session_span(self, session_id: str | None) -> Row:
        """One session's extent: ``session_id``, ``messages``, ``first_rowid``, ``last_rowid``,
        ``first``, ``last`` (through its span; the whole table for ``None`` on a database
        without sessions)."""
        cols = self.columns(MESSAGES)
        if "session_id" in cols:
            test, params = self.of_session(MESSAGES, session_id)
        else:
            test, params = "1", []
        n, lo, hi = self.conn.execute(f"SELECT COUNT(*), MIN(rowid), MAX(rowid) FROM messages WHERE {test}",
                                      params).fetchone()
        first = last = None
        if lo is not None and "datetime" in cols:
            first = self.conn.execute("SELECT datetime FROM messages WHERE rowid = ?", (lo,)).fetchone()[0]
            last = self.conn.execute("SELECT datetime FROM messages WHERE rowid = ?", (hi,)).fetchone()[0]
        return {"session_id": session_id, "messages": int(n), "first_rowid": lo, "last_rowid": hi,
                "first": first, "last": last}

    def match_sessions(self, text: str, limit: int = 6) -> list[str]:
        """Session ids equal to ``text``, or else starting with it (at most ``limit``), from
        the session spans (before schema 6: the messages' and the calls' session indexes)."""
        if self.spans:
            if self.conn.execute(f"SELECT 1 FROM {SPANS} WHERE session_id = ?", (text,)).fetchone() is not None:
                return [text]
            if not text:
                return []
            upper = text[:-1] + chr(ord(text[-1]) + 1)
            found = self.conn.execute(f"SELECT session_id FROM {SPANS} WHERE session_id > ? AND session_id < ? "
                                      "ORDER BY session_id LIMIT ?", (text, upper, limit)).fetchall()
            return [sid for (sid,) in found]
        out: list[str] = []
        for kind in (MESSAGES, CALLS):
            if "session_id" not in self.columns(kind):
                continue
            exact = self.conn.execute(f"SELECT 1 FROM {kind.table} WHERE session_id = ? LIMIT 1", (text,)).fetchone()
            if exact is not None:
                return [text]
        for kind in (MESSAGES, CALLS):
            if "session_id" not in self.columns(kind) or not text:
                continue
            upper = text[:-1] + chr(ord(text[-1]) + 1)
            sql = (f"SELECT DISTINCT session_id FROM {kind.table} WHERE session_id > ? AND session_id < ? "
                   "ORDER BY session_id LIMIT ?")
            for (sid,) in self.conn.execute(sql, (text, upper, limit)).fetchall():
                if sid not in out:
                    out.append(sid)
        return sorted(out)[:limit]
