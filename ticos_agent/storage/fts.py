"""The search index: FTS5 over ``messages`` and ``memories``, how it is made and kept in step.

Two external-content FTS5 tables (the text lives once, in the tables; the index holds only
tokens, ``unicode61`` with diacritics removed):

* ``memories_fts(content, title)`` over ``memories`` (``content_rowid='id'``), kept in step
  by triggers on insert, delete and update: memories are rare writes, and every writer (the
  store, the merge, ``ticos-agent memory import``, ticos-client's own code) keeps it right.
* ``messages_fts(content)`` over ``messages`` (its rowids). Messages are the hot path: an
  index updated on every insert would write a new FTS segment (a few pages) on every commit.
  So the index covers the messages up to a mark (``ticos_state`` row ``fts_messages``: the
  highest rowid indexed) and the writer indexes the rest in batches (:func:`index_step`,
  ``INDEX_CHUNK`` rows per transaction, see :mod:`.indexer`): every ``INDEX_BATCH`` new
  messages, after ``INDEX_IDLE`` quiet seconds, before a search, and, for a database that
  had no index (a ticos-client card), chunk by chunk in the background until it caught up.
  Triggers keep the indexed part right when a message at or below the mark is updated or
  deleted. Readers search the index for rows up to the mark and scan the few rows above it.

:func:`ensure_index` makes both at open (:func:`.schema.prepare`), in one transaction each,
whenever this SQLite has FTS5; without FTS5 nothing is made and searches scan (``LIKE``).
On SQLite 3.42 or newer the indexes use FTS5's ``secure-delete``, so a deleted row's tokens
leave the index at once; older ones drop them when segments merge (``forget`` optimises the
small memories index itself).

:func:`find_messages_index` finds an index of ``messages`` whoever made it (the offline
inspector's ``grep``, :mod:`.finder`, uses one made by someone else).

Blocking functions on a plain ``sqlite3`` connection; the SQL constants are shared with the
async writer.
"""

from __future__ import annotations

import logging
import re
import sqlite3

from .schema import STATE_TABLE

log = logging.getLogger(__name__)

MESSAGES_FTS = "messages_fts"
MEMORIES_FTS = "memories_fts"
#: The ``ticos_state`` row holding the highest message rowid in ``messages_fts``.
FTS_MARK = "fts_messages"
TOKENIZE = "unicode61 remove_diacritics 2"
#: Messages indexed per transaction (a background build is many short steps).
INDEX_CHUNK = 2000

MARK_SQL = f"(SELECT value FROM {STATE_TABLE} WHERE name = '{FTS_MARK}')"
SQL_GET_MARK = f"SELECT value FROM {STATE_TABLE} WHERE name = '{FTS_MARK}'"
SQL_SET_MARK = (f"INSERT INTO {STATE_TABLE} (name, value) VALUES ('{FTS_MARK}', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value")
#: The highest rowid of the next chunk above the mark (``?``: the mark, the chunk size).
SQL_CHUNK_END = "SELECT MAX(rowid) FROM (SELECT rowid FROM messages WHERE rowid > ? ORDER BY rowid LIMIT ?)"
SQL_INDEX_RANGE = (f"INSERT INTO {MESSAGES_FTS} (rowid, content) SELECT rowid, content FROM messages "
                   "WHERE rowid > ? AND rowid <= ?")
SQL_ABOVE = "SELECT 1 FROM messages WHERE rowid > ? LIMIT 1"

_CONTENT_MESSAGES = re.compile(r"""content\s*=\s*['"`\[]?messages['"`\]]?\s*[,)]""", re.IGNORECASE)
_CONTENT_ROWID = re.compile(r"""content_rowid\s*=\s*['"`\[]?(\w+)""", re.IGNORECASE)

_MEMORIES = [
    f"CREATE VIRTUAL TABLE {MEMORIES_FTS} USING fts5(content, title, content='memories', "
    f"content_rowid='id', tokenize='{TOKENIZE}')",
    f"CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN "
    f"INSERT INTO {MEMORIES_FTS} (rowid, content, title) VALUES (new.id, new.content, new.title); END",
    f"CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN "
    f"INSERT INTO {MEMORIES_FTS} ({MEMORIES_FTS}, rowid, content, title) "
    f"VALUES ('delete', old.id, old.content, old.title); END",
    f"CREATE TRIGGER memories_fts_update AFTER UPDATE OF content, title ON memories BEGIN "
    f"INSERT INTO {MEMORIES_FTS} ({MEMORIES_FTS}, rowid, content, title) "
    f"VALUES ('delete', old.id, old.content, old.title); "
    f"INSERT INTO {MEMORIES_FTS} (rowid, content, title) VALUES (new.id, new.content, new.title); END",
    f"INSERT INTO {MEMORIES_FTS} ({MEMORIES_FTS}) VALUES ('rebuild')",
]
_MESSAGES = [
    f"CREATE VIRTUAL TABLE {MESSAGES_FTS} USING fts5(content, content='messages', tokenize='{TOKENIZE}')",
    f"CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages "
    f"WHEN old.rowid <= {MARK_SQL} BEGIN "
    f"INSERT INTO {MESSAGES_FTS} ({MESSAGES_FTS}, rowid, content) VALUES ('delete', old.rowid, old.content); "
    f"INSERT INTO {MESSAGES_FTS} (rowid, content) VALUES (new.rowid, new.content); END",
    f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages "
    f"WHEN old.rowid <= {MARK_SQL} BEGIN "
    f"INSERT INTO {MESSAGES_FTS} ({MESSAGES_FTS}, rowid, content) VALUES ('delete', old.rowid, old.content); END",
    f"INSERT OR REPLACE INTO {STATE_TABLE} (name, value) VALUES ('{FTS_MARK}', 0)",
]
_warned = False


def has_fts5(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite can make (and read) FTS5 tables."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.ticos_fts5_probe USING fts5(x)")
        conn.execute("DROP TABLE temp.ticos_fts5_probe")
    except sqlite3.Error:
        return False
    return True


def _exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def secure_delete_supported() -> bool:
    """FTS5's ``secure-delete`` option (SQLite 3.42)."""
    return sqlite3.sqlite_version_info >= (3, 42, 0)


def ensure_index(conn: sqlite3.Connection) -> bool:
    """Make the missing search indexes (autocommit ``conn``); True when both exist after.

    ``memories_fts`` is filled at once (memories are few); ``messages_fts`` starts empty with
    its mark at 0 and is filled by the writer in the background.
    """
    global _warned
    missing = [(name, sql) for name, sql in ((MEMORIES_FTS, _MEMORIES), (MESSAGES_FTS, _MESSAGES))
               if not _exists(conn, name)]
    if not missing:
        return True
    if not has_fts5(conn):
        if not _warned:
            _warned = True
            log.warning("storage: this SQLite has no FTS5: searches scan the tables (slower on a big database)")
        return False
    for name, statements in missing:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _exists(conn, name):  # another process made it meanwhile
                conn.execute("ROLLBACK")
                continue
            for sql in statements:
                conn.execute(sql)
            if secure_delete_supported():
                conn.execute(f"INSERT INTO {name} ({name}, rank) VALUES ('secure-delete', 1)")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("storage: made the search index %s", name)
    return True


def index_mark(conn: sqlite3.Connection) -> int | None:
    """The highest message rowid in ``messages_fts``; ``None`` when there is no such index
    (or this database's mark cannot be read)."""
    try:
        if not _exists(conn, MESSAGES_FTS):
            return None
        row = conn.execute(SQL_GET_MARK).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row is not None and row[0] is not None else None


def index_step(conn: sqlite3.Connection, chunk: int = INDEX_CHUNK) -> tuple[int, bool]:
    """Index the next ``chunk`` messages above the mark in one transaction (blocking; for the
    CLI and the bench: the agent's writer does the same on its connection). Returns (the
    rowids covered, whether the index reached the newest message)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        mark = conn.execute(SQL_GET_MARK).fetchone()
        upto = int(mark[0]) if mark is not None and mark[0] is not None else 0
        end = conn.execute(SQL_CHUNK_END, (upto, chunk)).fetchone()[0]
        if end is None:
            conn.execute("COMMIT")
            return 0, True
        conn.execute(SQL_INDEX_RANGE, (upto, end))
        conn.execute(SQL_SET_MARK, (end,))
        reached = conn.execute(SQL_ABOVE, (end,)).fetchone() is None
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(end) - upto, reached


def find_messages_index(conn: sqlite3.Connection) -> str | None:
    """The name (quoted) of an FTS5 index of ``messages`` (external content, the same rowids)
    that this SQLite can read, whoever made it; ``None`` when there is none."""
    try:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                            "AND sql LIKE 'CREATE VIRTUAL TABLE%' AND sql LIKE '%fts5%'").fetchall()
    except sqlite3.Error:
        return None
    for name, sql in rows:
        rowid = _CONTENT_ROWID.search(sql or "")
        if not _CONTENT_MESSAGES.search(sql or "") or (rowid and rowid.group(1).lower() != "rowid"):
            continue
        quoted = '"' + str(name).replace('"', '""') + '"'
        try:
            conn.execute(f"SELECT rowid FROM {quoted} WHERE {quoted} MATCH '\"a\"' LIMIT 1").fetchall()
        except sqlite3.Error:  # no fts5 in this SQLite, or a tokenizer it does not have
            continue
        return quoted
    return None
