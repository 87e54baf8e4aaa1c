"""The SQL of the writer's records, one statement per kind of record."""

from __future__ import annotations

import sqlite3

#: The values of one record's statement (what SQLite can store).
Params = tuple[object, ...]
#: One queued record: its statement and values.
Op = tuple[str, Params]
#: One event-log line: ``(ts, type, session_id, event_id, item_id, response_id)``.
EventRow = tuple[float, str, "str | None", "str | None", "str | None", "str | None"]
#: Rows per chunk of a merge (all tables together): one card commit and one fallback commit each
#: (see :mod:`.merge`, which loads only when there is a fallback to merge or count).
MERGE_CHUNK = 2000
#: Ids per ``WHERE id IN (...)`` (far below SQLite's variable limit).
ID_BATCH = 500

SQL_ADD_MESSAGE = (
    "INSERT INTO messages (id, role, content, item_id, user_id, datetime, session_id, status, "
    "response_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_UPDATE_MESSAGE = (
    "UPDATE messages SET content = COALESCE(?, content), status = COALESCE(?, status) WHERE id = ?"
)
SQL_ADD_MEMORY = "INSERT INTO memories (type, content, user_id, datetime) VALUES (?, ?, ?, ?)"
#: The session a call's record or outcome goes to: the one given (``?4``/``?5``), else the
#: newest row's of that call id (a call id alone names the newest call of that id; schema 7
#: keeps one row per session and call id).
NEWEST_SESSION = "(SELECT session_id FROM function_calls WHERE call_id = ?1 ORDER BY rowid DESC LIMIT 1)"
#: The key the upserts name: schema 7's ``idx_calls_key``.
CALL_KEY = "call_id, IFNULL(session_id, '')"
# Either of record/outcome may arrive first; each fills only what the other did not set.
SQL_RECORD_CALL = (
    "INSERT INTO function_calls (call_id, name, arguments, session_id, response_id, item_id, "
    f"status, created) VALUES (?1, ?2, ?3, COALESCE(?4, {NEWEST_SESSION}), ?5, ?6, ?7, ?8) "
    f"ON CONFLICT({CALL_KEY}) DO UPDATE SET "
    "name = COALESCE(name, excluded.name), arguments = COALESCE(arguments, excluded.arguments), "
    "response_id = COALESCE(response_id, excluded.response_id), "
    "item_id = COALESCE(item_id, excluded.item_id), created = COALESCE(created, excluded.created)"
)
#: Parameters ``(call_id, status, result, finished, session_id)``.
SQL_CALL_OUTCOME = (
    "INSERT INTO function_calls (call_id, session_id, status, result, finished) "
    f"VALUES (?1, COALESCE(?5, {NEWEST_SESSION}), ?2, ?3, ?4) "
    f"ON CONFLICT({CALL_KEY}) DO UPDATE SET status = excluded.status, result = excluded.result, "
    "finished = excluded.finished"
)
SQL_LOG_EVENT = (
    "INSERT INTO events (ts, type, session_id, event_id, item_id, response_id) VALUES (?, ?, ?, ?, ?, ?)"
)
#: Errors a single bad record raises (it is skipped alone, the rest of its batch is kept).
DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError,
                sqlite3.DataError, OverflowError, TypeError, ValueError)
