"""Schema and migrations; opens ticos-client databases in place and keeps every row.

Version history (rows are appended to ``db_version`` as the SDK did):

* 0 - early ticos-client: ``messages(id, role, content, datetime)``,
  ``memories(id, type, content, datetime)``, no ``db_version`` table.
* 1 - ticos-client's latest: ``item_id`` and ``user_id`` on messages, ``user_id`` on
  memories, the ``db_version`` table.
* 2 - ticos-agent: ``session_id``, ``status``, ``response_id`` on messages, the
  ``function_calls`` and ``events`` tables, indexes for the read queries.
* 3 - ``idx_messages_item`` dropped: no query reads messages by item id (the conversation
  keeps its items in memory, updates go by message id), and every commit that added a
  message rewrote a page of it (see :mod:`.policy`). What the hot path maintains now: the
  tables, their primary keys, ``idx_messages_session`` and ``idx_calls_session`` (the
  readers' session filters).
* 4 - memories of three kinds (see :mod:`ticos_agent.memory.model`): ``subject``, ``key``,
  ``value``, ``confidence``, ``importance``, ``title``, ``source_id`` (``Memory.source``: the
  message it came from; not ``source``, which the inspector's rows use for their database)
  added to ``memories``
  (ticos-client's five columns unchanged); the ``ticos_state`` table (``name``, ``value``:
  the summarisation mark, how far the message index reaches). The mark starts at the
  newest message found, so a ticos-client card's history is not summarised again. The
  search index (:mod:`.fts`) is not part of a version: it is made at open whenever this
  SQLite has FTS5, so a database migrated without it gets it later.
* 5 - a leaner event log: the lines go to ``event_log`` with their type and session as small
  numbers (``event_types``, ``event_sessions``: each name stored once), and ``events`` is a
  view with the same columns as the table it replaces (its rows moved over, ids kept) and a
  last one, ``rowid`` (the id: a view has no rowid of its own), so every reader, ``sqlite3``
  on another computer included, reads it as before; inserting into it or deleting from it
  works too (``INSTEAD OF`` triggers; there ``cursor.lastrowid`` and ``rowcount`` say nothing,
  and an ``UPDATE`` is refused: the log is only ever appended to and pruned). A voice turn's
  lines are ~40 %
  smaller: the type (~30 bytes) and the session id (~26) were in every line, and every
  commit writes the pages they fill (see :mod:`.policy`).
* 6 - ``session_spans`` (:mod:`.spans`): per session, the rowids of its first and last message
  and call, kept by triggers; ``idx_messages_session`` and ``idx_calls_session`` dropped (every
  commit that added a message or a call wrote a page of them). A reader of one session's rows
  reads its span's rowid range.
* 7 - a function call is one per session and call id, no longer one per call id: a local voice
  agent restarted (a new session) may number its calls ``call_1``, ``call_2`` ... anew, and
  those are new calls. ``function_calls`` is made again with the same columns in the same
  order and a last one, ``id`` (``INTEGER PRIMARY KEY``: the rowid, kept for every row, so
  the session spans still hold), and the unique index ``idx_calls_key`` on
  ``(call_id, IFNULL(session_id, ''))`` instead of the primary key on ``call_id``; the span
  triggers on it are made again. Every reader by the old columns reads it as before; a call
  id alone may now name several rows (one per session), and whoever looks one up by call id
  alone takes the newest (the highest ``id``), as :data:`.writes.SQL_CALL_OUTCOME` does. An
  older ticos-agent opening it cannot store calls (its ``ON CONFLICT(call_id)`` names a key
  that is gone); ticos-client never had this table.

Migrations add tables, columns and indexes (``CREATE ... IF NOT EXISTS``, ``ALTER TABLE ...
ADD COLUMN``), drop an index of their own, (schema 5) turn a table of their own into a
view with the same columns, or (schema 7) make a table of their own again with the same
columns and rows and another key, so the SDK can still read a migrated database by its old
columns and this code's readers by theirs. Each migration runs in one
transaction together with its ``db_version`` row.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from . import spans
from .writes import CALL_KEY

log = logging.getLogger(__name__)

SCHEMA_VERSION = 7
BUSY_TIMEOUT_MS = 5000
#: The page size of a database created here: SQLite's smallest. A commit rewrites every page
#: it touches in full (the tail page of each table and index it adds to, the header when the
#: file grows), and at a conversational pace a commit adds a few hundred bytes: with 512-byte
#: pages that costs a few KB per commit instead of tens (why: :mod:`.policy`; measured: :mod:`.store`). A database made
#: by ticos-client (4096) keeps its size: changing it means rewriting the whole file.
NEW_PAGE_SIZE = 512

MESSAGE_COLUMNS = (
    "id", "role", "content", "item_id", "user_id", "datetime", "session_id", "status", "response_id",
)
#: ticos-client's columns, then schema 4's (see :class:`ticos_agent.memory.model.Memory`).
SDK_MEMORY_COLUMNS = ("id", "type", "content", "user_id", "datetime")
MEMORY_EXTRA_COLUMNS = ("subject", "key", "value", "confidence", "importance", "title", "source_id")
MEMORY_COLUMNS = SDK_MEMORY_COLUMNS + MEMORY_EXTRA_COLUMNS
#: The small key/value table of schema 4 and the names kept in it.
STATE_TABLE = "ticos_state"
SUMMARISED_MARK = "summarised"
SQL_MARK_SUMMARISED = (f"INSERT INTO {STATE_TABLE} (name, value) VALUES ('{SUMMARISED_MARK}', ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = MAX(COALESCE(value, 0), excluded.value)")
SQL_GET_SUMMARISED = f"SELECT value FROM {STATE_TABLE} WHERE name = '{SUMMARISED_MARK}'"
CALL_COLUMNS = (
    "call_id", "name", "arguments", "session_id", "response_id", "item_id",
    "status", "result", "created", "finished",
)
EVENT_COLUMNS = ("id", "ts", "type", "session_id", "event_id", "item_id", "response_id")


def now_local() -> str:
    """Local time in the SDK's ``%Y-%m-%d %H:%M:%S`` format."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """Column names of ``table`` (empty when the table does not exist)."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in ``db_version``; 0 when there is no such table or row."""
    if not table_columns(conn, "db_version"):
        return 0
    row = conn.execute("SELECT MAX(version) FROM db_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _add_missing(conn: sqlite3.Connection, table: str, columns: list[tuple[str, str]]) -> None:
    present = table_columns(conn, table)
    for name, decl in columns:
        if name not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def _to_v1(conn: sqlite3.Connection) -> None:
    """ticos-client's version 1 (also creates the tables of a brand-new database)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, "
        "content TEXT NOT NULL, item_id TEXT, user_id TEXT DEFAULT 'nobody', datetime TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS memories (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "type TEXT NOT NULL, content TEXT NOT NULL, user_id TEXT DEFAULT 'nobody', datetime TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS db_version (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, "
        "updated_at TEXT NOT NULL)"
    )
    _add_missing(conn, "messages", [("item_id", "TEXT"), ("user_id", "TEXT DEFAULT 'nobody'")])
    _add_missing(conn, "memories", [("user_id", "TEXT DEFAULT 'nobody'")])


def _to_v2(conn: sqlite3.Connection) -> None:
    """ticos-agent: sessions and statuses on messages, function calls, the event log."""
    _add_missing(conn, "messages", [("session_id", "TEXT"), ("status", "TEXT"), ("response_id", "TEXT")])
    conn.execute(
        "CREATE TABLE IF NOT EXISTS function_calls (call_id TEXT PRIMARY KEY, name TEXT, "
        "arguments TEXT, session_id TEXT, response_id TEXT, item_id TEXT, status TEXT, "
        "result TEXT, created TEXT, finished TEXT)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, ts REAL, type TEXT, "
        "session_id TEXT, event_id TEXT, item_id TEXT, response_id TEXT)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS idx_messages_session ON messages(session_id)")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_messages_item ON messages(item_id)")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_calls_session ON function_calls(session_id)")


def _to_v3(conn: sqlite3.Connection) -> None:
    """Fewer indexes on the hot path: messages are never looked up by item id."""
    conn.execute("DROP INDEX IF EXISTS idx_messages_item")


def _to_v4(conn: sqlite3.Connection) -> None:
    """Memory kinds on ticos-client's table; the state table with the summarisation mark."""
    _add_missing(conn, "memories", [("subject", "TEXT"), ("key", "TEXT"), ("value", "TEXT"),
                                    ("confidence", "REAL"), ("importance", "REAL"), ("title", "TEXT"),
                                    ("source_id", "TEXT")])
    conn.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (name TEXT PRIMARY KEY, value)")
    seed = max_message_id(conn)
    if seed:
        conn.execute(f"INSERT OR IGNORE INTO {STATE_TABLE} (name, value) VALUES (?, ?)", (SUMMARISED_MARK, seed))


#: The table that holds the event log's lines since schema 5 (``events`` is a view of it): what
#: deletes and prunes by rowid go to.
EVENT_LOG = "event_log"
#: The event log's storage (schema 5) and the ``events`` view that reads and writes it.
EVENT_LOG_SQL = (
    "CREATE TABLE IF NOT EXISTS event_types (id INTEGER PRIMARY KEY, type TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS event_sessions (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS event_log (id INTEGER PRIMARY KEY, ts REAL, type INTEGER, session INTEGER, "
    "event_id TEXT, item_id TEXT, response_id TEXT)",
)
EVENTS_VIEW_SQL = (
    "CREATE VIEW IF NOT EXISTS events AS SELECT l.id AS id, l.ts AS ts, t.type AS type, s.session_id AS session_id, "
    "l.event_id AS event_id, l.item_id AS item_id, l.response_id AS response_id, l.id AS rowid FROM event_log l "
    "LEFT JOIN event_types t ON t.id = l.type LEFT JOIN event_sessions s ON s.id = l.session",
    "CREATE TRIGGER IF NOT EXISTS events_insert INSTEAD OF INSERT ON events BEGIN "
    "INSERT OR IGNORE INTO event_types (type) SELECT NEW.type WHERE NEW.type IS NOT NULL; "
    "INSERT OR IGNORE INTO event_sessions (session_id) SELECT NEW.session_id WHERE NEW.session_id IS NOT NULL; "
    "INSERT INTO event_log (id, ts, type, session, event_id, item_id, response_id) VALUES (NEW.id, NEW.ts, "
    "(SELECT id FROM event_types WHERE type = NEW.type), "
    "(SELECT id FROM event_sessions WHERE session_id = NEW.session_id), "
    "NEW.event_id, NEW.item_id, NEW.response_id); END",
    "CREATE TRIGGER IF NOT EXISTS events_delete INSTEAD OF DELETE ON events BEGIN "
    "DELETE FROM event_log WHERE id = OLD.id; END",
)


def _to_v5(conn: sqlite3.Connection) -> None:
    """The event log as numbers where it repeated names; ``events`` becomes a view of it."""
    for sql in EVENT_LOG_SQL:
        conn.execute(sql)
    kind = conn.execute("SELECT type FROM sqlite_master WHERE name = 'events'").fetchone()
    if kind is not None and kind[0] == "table":
        conn.execute("INSERT OR IGNORE INTO event_types (type) SELECT DISTINCT type FROM events "
                     "WHERE type IS NOT NULL")
        conn.execute("INSERT OR IGNORE INTO event_sessions (session_id) SELECT DISTINCT session_id FROM events "
                     "WHERE session_id IS NOT NULL")
        conn.execute("INSERT INTO event_log (id, ts, type, session, event_id, item_id, response_id) "
                     "SELECT e.id, e.ts, t.id, s.id, e.event_id, e.item_id, e.response_id FROM events e "
                     "LEFT JOIN event_types t ON t.type = e.type "
                     "LEFT JOIN event_sessions s ON s.session_id = e.session_id ORDER BY e.id")
        conn.execute("DROP TABLE events")
    for sql in EVENTS_VIEW_SQL:
        conn.execute(sql)


def _to_v6(conn: sqlite3.Connection) -> None:
    """Session spans instead of the session indexes (see :mod:`.spans`)."""
    conn.execute(spans.CREATE_SQL)
    for sql in spans.FILL_SQL + spans.TRIGGERS_SQL:
        conn.execute(sql)
    conn.execute("DROP INDEX IF EXISTS idx_messages_session")
    conn.execute("DROP INDEX IF EXISTS idx_calls_session")


#: Schema 7's ``function_calls``: schema 2's columns in their order, then the row id; one row
#: per session and call id (``idx_calls_key``: what the writer's upserts name).
CALLS_TABLE_SQL = (
    "CREATE TABLE {name} (call_id TEXT, name TEXT, arguments TEXT, session_id TEXT, response_id TEXT, "
    "item_id TEXT, status TEXT, result TEXT, created TEXT, finished TEXT, id INTEGER PRIMARY KEY)"
)
CALLS_KEY_SQL = f"CREATE UNIQUE INDEX IF NOT EXISTS idx_calls_key ON function_calls({CALL_KEY})"  # the upserts' target
_CALL_FIELDS = ", ".join(CALL_COLUMNS)


def _to_v7(conn: sqlite3.Connection) -> None:
    """A function call per session and call id: the table made again with a row id, every row
    and rowid kept, and the span triggers on it made again."""
    conn.execute(CALLS_TABLE_SQL.format(name="function_calls_v7"))
    conn.execute(f"INSERT INTO function_calls_v7 ({_CALL_FIELDS}, id) "
                 f"SELECT {_CALL_FIELDS}, rowid FROM function_calls ORDER BY rowid")
    conn.execute("DROP TABLE function_calls")  # its primary key and span triggers go with it
    conn.execute("ALTER TABLE function_calls_v7 RENAME TO function_calls")
    conn.execute(CALLS_KEY_SQL)
    for sql in spans.TRIGGERS_SQL:
        conn.execute(sql)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _to_v1, 2: _to_v2, 3: _to_v3, 4: _to_v4,
                                                                 5: _to_v5, 6: _to_v6, 7: _to_v7}


def apply_pragmas(conn: sqlite3.Connection, synchronous: str = "NORMAL") -> str:
    """Set WAL, ``synchronous`` (``NORMAL``; ``FULL`` on a card) and the busy timeout; returns
    the journal mode in force."""
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous={synchronous!r}")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    return str(mode).lower()


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s database to :data:`SCHEMA_VERSION`; returns the version found first.

    ``conn`` must be in autocommit mode (``isolation_level=None``). A database newer than
    this code is left alone with a warning (all changes are additive, so it stays usable).
    """
    found = current_version(conn)
    if found > SCHEMA_VERSION:
        log.warning("database schema version %d is newer than this ticos-agent's %d", found, SCHEMA_VERSION)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](conn)
            conn.execute(
                "INSERT INTO db_version (version, updated_at) VALUES (?, ?)", (version, now_local())
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("database migrated to schema version %d", version)
    return found


#: Ids of this many significant digits or more seed nothing: from SQLite's cap (2^63 - 1) new
#: ids would count on past it, and every start would hand out the same ones again.
SEED_DIGITS = 19


def id_number(mid: object) -> int:
    """What a message id counts for when new ids are seeded: the number of an id of ASCII
    digits, below ``SEED_DIGITS`` significant digits (the rule of :func:`max_message_id`);
    0 for any other."""
    text = str(mid)
    if not (text.isascii() and text.isdigit()):
        return 0
    digits = text.lstrip("0")
    return int(digits) if 0 < len(digits) < SEED_DIGITS else 0


def max_message_id(conn: sqlite3.Connection) -> int:
    """The largest all-digit message id in the table (0 when none), the seed for new ids
    (the rule of :func:`id_number`, in SQL)."""
    row = conn.execute(
        "SELECT MAX(CAST(id AS INTEGER)) FROM messages WHERE id <> '' AND id NOT GLOB '*[^0-9]*' "
        f"AND length(ltrim(id, '0')) < {SEED_DIGITS}"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def prepare(path: str, *, synchronous: str = "NORMAL") -> int:
    """Open ``path`` (creating it with ``NEW_PAGE_SIZE`` pages), set the PRAGMAs, migrate;
    returns the seed for message ids.

    Blocking; run it in a thread. Raises ``sqlite3.Error`` or ``OSError`` untouched so the
    caller can decide on a fallback.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new (empty) database
            conn.execute(f"PRAGMA page_size = {NEW_PAGE_SIZE}")
        mode = apply_pragmas(conn, synchronous)
        if mode != "wal":
            log.warning("database %s: WAL not available, journal_mode is %s", path, mode)
        migrate(conn)
        return max_message_id(conn)
    finally:
        conn.close()
