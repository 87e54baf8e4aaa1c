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
# Either of record/outcome may arrive first; each fills only what the other did not set.
SQL_RECORD_CALL = (
    "INSERT INTO function_calls (call_id, name, arguments, session_id, response_id, item_id, "
    "status, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(call_id) DO UPDATE SET "
    "name = COALESCE(name, excluded.name), arguments = COALESCE(arguments, excluded.arguments), "
    "session_id = COALESCE(session_id, excluded.session_id), "
    "response_id = COALESCE(response_id, excluded.response_id), "
    "item_id = COALESCE(item_id, excluded.item_id), created = COALESCE(created, excluded.created)"
)
SQL_CALL_OUTCOME = (
    "INSERT INTO function_calls (call_id, status, result, finished) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(call_id) DO UPDATE SET status = excluded.status, result = excluded.result, "
    "finished = excluded.finished"
)
SQL_LOG_EVENT = (
    "INSERT INTO events (ts, type, session_id, event_id, item_id, response_id) VALUES (?, ?, ?, ?, ?, ?)"
)
#: Errors a single bad record raises (it is skipped alone, the rest of its batch is kept).
DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError,
                sqlite3.DataError, OverflowError, TypeError, ValueError)
