"""Session spans (schema 6): where each session's messages and calls lie, by rowid.

A reader asks for one session's messages (``inspect``, ``list_messages(session_id=)``, an
export). Until schema 5 an index on ``messages(session_id)`` (and one on
``function_calls(session_id)``) answered that, and every commit that added a message wrote a
page of it: about 0.6 KB per stored message at a conversational pace (``bench/sd_writes.py``).
Since schema 6 the table ``session_spans`` holds, per session, the rowids of its first and
last message and call; a reader takes the rows of that rowid range that have the session's id
(:func:`of_session`). Rowids grow as rows are added, so a session's range holds its rows,
and a few of the sessions that ran at the same time.

Triggers keep the spans right whoever writes (this agent, a merge, ``sqlite3`` on another
computer); ticos-client, which writes no session ids, touches none of it:

* the first row of a session inserts its span (one row per session);
* a row below the span's first (moved into the session by an update, or inserted with a rowid
  of its own) moves the first down;
* while a session is **open** (its ``last_*`` is ``NULL``: the range reaches the end of the
  table) its rows write nothing more. That is the saving: the span is written once when the
  session starts;
* once **closed** (``last_*`` set), a row past the end moves the end (one small write).

The writer (:class:`SpanCloser`) closes a session's span when the conversation says it ended
(its voice agent's connection closed and its unfinished rows were stored), the spans of
sessions that added nothing for ``IDLE_CLOSE`` seconds, and every open span when the store
opens (a session that was running at a power cut), with :func:`close_sql`: a range scan from
the span's first row. A session that talks again (a voice agent back with the same session id,
a quiet session) has its span opened again (:func:`open_sql`, one write) once its first row is
committed. Closing only narrows a reader's range; opening widens it; a span left open stays
correct.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import describe
from .writes import SQL_ADD_MESSAGE, SQL_RECORD_CALL, Op

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger(__name__)

SPANS = "session_spans"
#: A session that never said it ended (see :meth:`SpanCloser.ended`) is closed once it added
#: nothing for this long (and opened again, one write, when it talks again).
IDLE_CLOSE = 600.0
#: Sessions kept as talking at most (the newest to add rows): a step names them all in one
#: statement, and SQLite takes at most 32,766 parameters. One pushed out gets its span closed
#: at the next step and opened again if it adds rows (a write each, nothing lost).
MAX_TALKING = 1000
_END, _START = (1 << 63) - 1, -(1 << 63)  # every rowid SQLite can give

#: ``(table, first column, last column)`` of each kind of row a span covers.
COVERED = (("messages", "first_message", "last_message"), ("function_calls", "first_call", "last_call"))

CREATE_SQL = (f"CREATE TABLE IF NOT EXISTS {SPANS} (session_id TEXT PRIMARY KEY, first_message INTEGER, "
              "last_message INTEGER, first_call INTEGER, last_call INTEGER) WITHOUT ROWID")


def _trigger_body(first: str, last: str) -> str:
    # Not INSERT OR IGNORE: a trigger's statements take the conflict rule of the statement
    # that fired it (an upsert's DO UPDATE aborts, an INSERT OR REPLACE replaces the span).
    return (f"INSERT INTO {SPANS} (session_id, {first}) SELECT NEW.session_id, NEW.rowid "
            f"WHERE NOT EXISTS (SELECT 1 FROM {SPANS} WHERE session_id = NEW.session_id); "
            f"UPDATE {SPANS} SET {first} = NEW.rowid WHERE session_id = NEW.session_id "
            f"AND ({first} IS NULL OR {first} > NEW.rowid); "
            f"UPDATE {SPANS} SET {last} = NEW.rowid WHERE session_id = NEW.session_id AND {last} < NEW.rowid;")


TRIGGERS_SQL = tuple(
    f"CREATE TRIGGER IF NOT EXISTS {SPANS}_{table}_{when} AFTER {event} ON {table} "
    f"WHEN NEW.session_id IS NOT NULL BEGIN {_trigger_body(first, last)} END"
    for table, first, last in COVERED
    for when, event in (("insert", "INSERT"), ("session", "UPDATE OF session_id"))
)

#: Every span found at migration, closed (what the session indexes the migration drops knew).
FILL_SQL = tuple(
    f"INSERT INTO {SPANS} (session_id, {first}, {last}) SELECT session_id, MIN(rowid), MAX(rowid) FROM {table} "
    f"WHERE session_id IS NOT NULL GROUP BY session_id "
    f"ON CONFLICT(session_id) DO UPDATE SET {first} = excluded.{first}, {last} = excluded.{last}"
    for table, first, last in COVERED
)


def close_sql(keep: int) -> str:
    """Close every open span but those of ``keep`` session ids (``?`` parameters)."""
    sets = ", ".join(
        f"{last} = CASE WHEN {first} IS NULL THEN NULL ELSE COALESCE((SELECT MAX(rowid) FROM {table} t "
        f"WHERE t.rowid >= {SPANS}.{first} AND t.session_id = {SPANS}.session_id), {first}) END"
        for table, first, last in COVERED)
    open_ = " OR ".join(f"({last} IS NULL AND {first} IS NOT NULL)" for _, first, last in COVERED)
    skip = f" AND session_id NOT IN ({', '.join('?' * keep)})" if keep else ""
    return f"UPDATE {SPANS} SET {sets} WHERE ({open_}){skip}"


def open_sql(n: int) -> str:
    """Open again the spans of ``n`` session ids (``?`` parameters) that were closed."""
    closed = " OR ".join(f"{last} IS NOT NULL" for _, _, last in COVERED)
    sets = ", ".join(f"{last} = NULL" for _, _, last in COVERED)
    return f"UPDATE {SPANS} SET {sets} WHERE ({closed}) AND session_id IN ({', '.join('?' * n)})"


def of_session(table: str, session: str | None, spans: bool) -> tuple[str, list[Any]]:
    """SQL (a ``WHERE`` test) and its parameters selecting ``session``'s rows of ``table``
    (``None``: the rows without a session): through its span when the database has them
    (``spans``), else by the ``session_id`` column alone (a database from before schema 6,
    read as it is).

    A session without a span has no rows here, unless they were written without the
    triggers: then its whole table is read, so nothing is missed.
    """
    if session is None:
        return "session_id IS NULL", []
    for covered, first, last in COVERED:
        if covered == table and spans:
            pick = f"(SELECT COALESCE({{}}, {_END}) FROM {SPANS} WHERE session_id = ?)"
            return (f"session_id = ? AND rowid >= COALESCE({pick.format(first)}, {_START}) "
                    f"AND rowid <= COALESCE({pick.format(last)}, {_END})", [session] * 3)
    return "session_id = ?", [session]


def has_spans(conn: sqlite3.Connection) -> bool:
    """Whether ``conn``'s database keeps session spans (schema 6 or later)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SPANS,)).fetchone()
    return found is not None


class SpanCloser:
    """The writer's part: which sessions are talking, and when spans are due to close or open.

    :meth:`note` is told of every committed batch, :meth:`ended` of a session that ended;
    :meth:`wait` says how long until a step is due (``None``: nothing to do); :meth:`step`
    opens again the spans of sessions that talk again (a voice agent back with the same
    session, a session quiet for a while: without it each of their commits would write their
    span), then closes every open span but those of the sessions that added rows within
    ``idle`` seconds and did not end. A store starts with a step due: spans left open by a
    power cut are closed at the first.
    """

    def __init__(self, idle: float = IDLE_CLOSE) -> None:
        self.idle = idle
        self._seen: dict[str, float] = {}   # talking sessions: when they last added a row
        self._ended: set[str] = set()       # said they ended; their last rows may still come
        self._reopen: set[str] = set()      # talking, their span maybe closed: open it
        self._due: float | None = time.monotonic()
        self._asked = 0                     # how many times a step was asked for at once

    def _at_once(self) -> None:
        self._asked += 1
        self._due = time.monotonic()

    def ended(self, session: str) -> None:
        """``session`` added its last rows (they may still be queued): close its span next."""
        self._seen.pop(session, None)
        self._reopen.discard(session)
        self._ended.add(session)
        self._at_once()

    def note(self, ops: Iterable[Op]) -> None:
        now = time.monotonic()
        for sql, params in ops:
            if sql is SQL_ADD_MESSAGE:
                session = params[6]
            elif sql is SQL_RECORD_CALL:
                session = params[3]
            else:
                continue
            if session is None or session in self._ended:
                continue
            session = str(session)
            if session not in self._seen:  # new to this writer: its span may be a closed one
                self._reopen.add(session)
                self._at_once()
            elif self._due is None:
                self._due = now + self.idle
            self._seen.pop(session, None)  # the newest to add rows last
            self._seen[session] = now
        while len(self._seen) > MAX_TALKING:
            del self._seen[next(iter(self._seen))]

    def new_connection(self) -> None:
        """The writer writes to another database (the fallback, the card back): its spans
        left open are closed, and those of the talking sessions opened."""
        self._reopen.update(self._seen)
        self._at_once()

    def wait(self) -> float | None:
        return None if self._due is None else max(0.0, self._due - time.monotonic())

    async def step(self, db: aiosqlite.Connection) -> None:
        """Open and close what is due; a failure is logged and tried again after ``idle`` seconds.

        A session may end (:meth:`ended`, from another task) while the statements run: it was
        kept open by them, so another step is due at once, even when this one failed (what was
        asked for during a failed step is not put off with it).
        """
        now = time.monotonic()
        asked_before = self._asked
        self._seen = {s: t for s, t in self._seen.items() if t > now - self.idle}
        keep = list(self._seen)
        asked, ended = set(self._reopen), set(self._ended)
        reopen = [s for s in asked if s in self._seen]
        try:
            if reopen:
                await db.execute(open_sql(len(reopen)), reopen)
            await db.execute(close_sql(len(keep)), keep)
        except Exception as exc:  # a closed connection raises ValueError: the writer must go on
            if self._asked == asked_before:  # else what came meanwhile has its step at once
                self._due = now + self.idle
            log.warning("storage: updating session spans failed (%s); trying again in %.0f s", describe(exc),
                        self.wait() or 0.0)
            return
        self._reopen -= asked
        self._ended -= ended
        if self._ended or self._reopen:
            self._due = time.monotonic()
        else:
            self._due = min(self._seen.values()) + self.idle if self._seen else None
