"""Opening ticos-client databases in place: every old row kept, migrations, ids, WAL."""

from __future__ import annotations

import sqlite3

import pytest
from storage_helpers import V1_MEMORIES, V1_MESSAGES, make_sdk_v0, make_sdk_v1

from ticos_agent.storage import SCHEMA_VERSION, open_store
from ticos_agent.storage.schema import current_version, migrate, table_columns


def plain(path):
    return sqlite3.connect(path)


@pytest.mark.parametrize("make", [make_sdk_v1, make_sdk_v0], ids=["sdk-v1", "sdk-v0"])
async def test_sdk_database_opened_in_place_keeps_every_row(tmp_path, make):
    db = make(tmp_path / "ticos.db")
    store = await open_store("internal", internal_dir=tmp_path)
    assert store.location.path == db
    await store.close()

    conn = plain(db)
    # Readable by the SDK's own old columns, unchanged.
    assert conn.execute("SELECT id, role, content, datetime FROM messages ORDER BY id").fetchall() == [
        (m[0], m[1], m[2], m[5]) for m in V1_MESSAGES
    ]
    assert conn.execute("SELECT type, content, datetime FROM memories ORDER BY id").fetchall() == [
        (m[0], m[1], m[3]) for m in V1_MEMORIES
    ]
    if make is make_sdk_v1:
        assert conn.execute("SELECT item_id, user_id FROM messages ORDER BY id").fetchall() == [
            (m[3], m[4]) for m in V1_MESSAGES
        ]
    else:  # columns added by the migration: defaults for old rows
        assert {r[0] for r in conn.execute("SELECT user_id FROM messages")} == {"nobody"}
    versions = [r[0] for r in conn.execute("SELECT version FROM db_version ORDER BY id")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert {"session_id", "status", "response_id"} <= table_columns(conn, "messages")
    assert table_columns(conn, "function_calls") and table_columns(conn, "events")
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "idx_messages_item" not in indexes  # dropped by v3
    assert "idx_messages_session" not in indexes and table_columns(conn, "session_spans")  # spans since v6
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_old_rows_readable_through_store(tmp_path):
    make_sdk_v1(tmp_path / "ticos.db")
    store = await open_store("internal", internal_dir=tmp_path)
    rows = await store.messages()
    assert [r["id"] for r in rows] == [m[0] for m in reversed(V1_MESSAGES)]
    assert rows[-1] == {"id": "1714557600", "role": "user", "content": "hello robot", "item_id": "item_1",
                        "user_id": "alice", "datetime": "2024-05-01 10:00:00", "session_id": None,
                        "status": None, "response_id": None}
    assert [m["content"] for m in await store.memories()] == [m[1] for m in reversed(V1_MEMORIES)]
    await store.close()


async def test_new_ids_never_collide_after_restart(tmp_path):
    make_sdk_v1(tmp_path / "ticos.db")
    store = await open_store("internal", internal_dir=tmp_path)
    first = [store.add_message(role="user", content=f"a{i}", item_id=None) for i in range(3)]
    # The old table holds 9999999990 (a clock once set ahead): new ids continue above it.
    assert first == ["9999999991", "9999999992", "9999999993"]
    await store.close()

    store = await open_store("internal", internal_dir=tmp_path)
    again = store.add_message(role="assistant", content="after restart", item_id="i9")
    assert int(again) == 9999999994
    await store.close()
    conn = plain(tmp_path / "ticos.db")
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == len(V1_MESSAGES) + 4


async def test_ids_follow_the_clock_in_a_fresh_database(tmp_path):
    import time

    store = await open_store("internal", internal_dir=tmp_path)
    before = int(time.time())
    ids = [int(store.add_message(role="user", content="x", item_id=None)) for _ in range(5)]
    assert ids[0] >= before and ids == list(range(ids[0], ids[0] + 5))
    await store.close()


async def test_fresh_database_has_sdk_tables_and_versions(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    await store.close()
    conn = plain(tmp_path / "ticos.db")
    assert table_columns(conn, "messages") >= {"id", "role", "content", "item_id", "user_id", "datetime"}
    assert table_columns(conn, "memories") == {"id", "type", "content", "user_id", "datetime", "subject", "key",
                                               "value", "confidence", "importance", "title", "source_id"}
    assert [r[0] for r in conn.execute("SELECT version FROM db_version ORDER BY id")] == list(
        range(1, SCHEMA_VERSION + 1))
    assert current_version(conn) == SCHEMA_VERSION



def migrate_failing_at(conn: sqlite3.Connection, version: int) -> None:
    """``migrate(conn)`` with migration ``version`` making every change and then failing
    before its version row is written."""
    from ticos_agent.storage import schema

    real = schema.MIGRATIONS[version]

    def failing(c):
        real(c)
        raise sqlite3.OperationalError("boom")

    schema.MIGRATIONS[version] = failing
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn)
    finally:
        schema.MIGRATIONS[version] = real

def test_migration_is_atomic(tmp_path):
    db = make_sdk_v1(tmp_path / "ticos.db")
    conn = sqlite3.connect(db, isolation_level=None)
    migrate_failing_at(conn, 2)
    # v2 rolled back entirely: no new columns, no db_version row 2.
    assert "session_id" not in table_columns(conn, "messages")
    assert current_version(conn) == 1


def _schema_4(path) -> sqlite3.Connection:
    """A database as schema 4 left it, with an event log of its own."""
    from ticos_agent.storage.schema import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 512")
    for version in (1, 2, 3, 4):
        MIGRATIONS[version](conn)
        conn.execute("INSERT INTO db_version (version, updated_at) VALUES (?, '2026-11-01 10:00:00')", (version,))
    return conn


OLD_LINES = [
    (1761990000.5, "session.created", "sess_C8qXoR4xLk2bW9fJvT1mNa", "event_C8qXoR9aTz1", None, None),
    (1761990001.0, "input_audio_buffer.speech_started", "sess_C8qXoR4xLk2bW9fJvT1mNa", "event_C8qXoS0", "item_A", None),
    (1761990001.2, "robot.state.thinking", None, None, None, None),
    (1761990002.0, "response.done", "sess_C8qXoR4xLk2bW9fJvT1mNa", "event_C8qXoS9", None, "resp_B"),
    (1761990003.0, "session.created", "sess_other", "event_x", None, None),
]


def test_schema_5_keeps_the_event_log_and_stores_names_once(tmp_path):
    conn = _schema_4(tmp_path / "ticos.db")
    conn.executemany("INSERT INTO events (ts, type, session_id, event_id, item_id, response_id) "
                     "VALUES (?, ?, ?, ?, ?, ?)", OLD_LINES)
    conn.execute("DELETE FROM events WHERE id = 1")  # ids with a gap: kept as they are
    before = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
    assert migrate(conn) == 4
    assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'events'").fetchone() == ("view",)
    after = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
    assert [row[:7] for row in after] == before and [row[7] for row in after] == [row[0] for row in before]
    # each type and session id once; the lines hold their numbers
    assert conn.execute("SELECT COUNT(*) FROM event_sessions").fetchone() == (2,)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT type) FROM event_types").fetchone() == (4, 4)
    assert {r[0] for r in conn.execute("SELECT typeof(type) FROM event_log")} == {"integer"}
    assert {r[0] for r in conn.execute("SELECT typeof(session) FROM event_log")} == {"integer", "null"}
    # written and deleted through the view as through the old table; a new name is added once
    insert = ("INSERT INTO events (ts, type, session_id, event_id, item_id, response_id) "
              "VALUES (?, ?, ?, ?, ?, ?)")
    conn.execute(insert, (1761990004.0, "response.done", "sess_other", "event_y", None, "resp_C"))
    conn.execute(insert, (1761990005.0, "a.new.type", "sess_third", "event_z", "item_Z", None))
    assert conn.execute("SELECT id, type, session_id, item_id FROM events WHERE id > 5 ORDER BY id").fetchall() == [
        (6, "response.done", "sess_other", None), (7, "a.new.type", "sess_third", "item_Z")]
    assert conn.execute("SELECT COUNT(*) FROM event_types").fetchone() == (5,)
    conn.execute("DELETE FROM events WHERE type = 'session.created'")
    assert [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY rowid")] == [
        "event_C8qXoS0", None, "event_C8qXoS9", "event_y", "event_z"]
    assert current_version(conn) == SCHEMA_VERSION
    conn.close()


def test_an_event_line_is_smaller_in_schema_5(tmp_path):
    """What each commit writes for the event log: the same lines take fewer pages."""
    lines = [(1761990000.0 + i, t, "sess_C8qXoR4xLk2bW9fJvT1mNa", f"event_C8qXoR{i:015d}", f"item_C8qXoR{i // 13:016d}",
              f"resp_C8qXoR{i // 13:016d}")
             for i, t in enumerate(["input_audio_buffer.speech_started", "conversation.item.created",
                                    "response.output_item.added", "response.audio_transcript.done"] * 500)]
    pages = {}
    for version in (4, 5):
        conn = _schema_4(tmp_path / f"v{version}.db")
        if version == 5:
            migrate(conn)
        conn.executemany("INSERT INTO events (ts, type, session_id, event_id, item_id, response_id) "
                         "VALUES (?, ?, ?, ?, ?, ?)", lines)
        table = "event_log" if version == 5 else "events"
        pages[version] = conn.execute("SELECT COUNT(*) FROM dbstat WHERE name = ?", (table,)).fetchone()[0] \
            if _has_dbstat(conn) else conn.execute("PRAGMA page_count").fetchone()[0]
        conn.close()
    assert pages[5] < pages[4] * 0.75, pages


def _has_dbstat(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT COUNT(*) FROM dbstat").fetchone()
    except sqlite3.Error:
        return False
    return True


def _schema_6(path) -> sqlite3.Connection:
    """A database as schema 6 left it: function calls keyed by call id alone."""
    from ticos_agent.storage.schema import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 512")
    for version in range(1, 7):
        MIGRATIONS[version](conn)
        conn.execute("INSERT INTO db_version (version, updated_at) VALUES (?, '2026-11-01 10:00:00')", (version,))
    return conn


OLD_CALLS = [  # schema 2's columns, as schema 6 stored them
    ("call_1", "motion", '{"motion_tag":"wave"}', "sess_A", "resp_1", "item_F1", "done", '{"status":"done"}',
     "2026-11-01 10:00:00", "2026-11-01 10:00:02"),
    ("call_2", "emotion", "{}", "sess_A", "resp_1", "item_F2", "dropped", '{"status":"dropped"}',
     "2026-11-01 10:00:01", "2026-11-01 10:00:01"),
    ("call_9", "weather", "{}", None, None, None, "received", None, "2026-11-01 10:01:00", None),
]


def test_schema_7_keeps_every_call_and_its_rowid_and_takes_a_call_id_again_in_another_session(tmp_path):
    from ticos_agent.storage.writes import SQL_CALL_OUTCOME, SQL_RECORD_CALL

    conn = _schema_6(tmp_path / "ticos.db")
    conn.executemany("INSERT INTO function_calls (call_id, name, arguments, session_id, response_id, item_id, "
                     "status, result, created, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", OLD_CALLS)
    conn.execute("DELETE FROM function_calls WHERE call_id = 'call_2'")  # rowids with a gap: kept
    conn.execute("INSERT INTO function_calls (call_id, name, session_id) VALUES ('call_2', 'emotion', 'sess_A')")
    old = "SELECT rowid, call_id, name, arguments, session_id, response_id, item_id, status, result, created, " \
          "finished FROM function_calls ORDER BY rowid"
    before = conn.execute(old).fetchall()
    assert [r[0] for r in before] == [1, 3, 4]
    spans_before = conn.execute("SELECT * FROM session_spans").fetchall()
    assert migrate(conn) == 6 and current_version(conn) == SCHEMA_VERSION == 7
    assert conn.execute(old).fetchall() == before  # every row, by the old columns, rowids kept
    assert conn.execute("SELECT id FROM function_calls ORDER BY id").fetchall() == [(1,), (3,), (4,)]
    assert [r[1] for r in conn.execute("PRAGMA table_info(function_calls)")][:10] == [
        "call_id", "name", "arguments", "session_id", "response_id", "item_id", "status", "result", "created",
        "finished"]  # the old columns first, in their order
    assert conn.execute("SELECT * FROM session_spans").fetchall() == spans_before
    # the same call id in another session is a new row; in the same session, the same row
    conn.execute(SQL_RECORD_CALL, ("call_1", "motion", '{"motion_tag":"nod"}', "sess_B", "resp_1", "item_F1",
                                   "received", "2026-11-02 09:00:00"))
    conn.execute(SQL_RECORD_CALL, ("call_1", "motion", "{}", "sess_B", None, None, "received", "2026-11-02 09:00:01"))
    conn.execute(SQL_CALL_OUTCOME, ("call_1", "done", '{"status":"done"}', "2026-11-02 09:00:03", "sess_B"))
    rows = conn.execute("SELECT id, session_id, arguments, status, finished FROM function_calls "
                        "WHERE call_id = 'call_1' ORDER BY id").fetchall()
    assert rows == [(1, "sess_A", '{"motion_tag":"wave"}', "done", "2026-11-01 10:00:02"),
                    (5, "sess_B", '{"motion_tag":"nod"}', "done", "2026-11-02 09:00:03")]
    # the span triggers hold on the new table: sess_B's calls are its span's
    assert conn.execute("SELECT first_call FROM session_spans WHERE session_id = 'sess_B'").fetchone() == (5,)
    # without a session: the newest call of that id (and a row of no session keeps its own key)
    conn.execute(SQL_CALL_OUTCOME, ("call_1", "failed", None, "2026-11-02 09:00:04", None))
    conn.execute(SQL_CALL_OUTCOME, ("call_9", "done", None, "2026-11-02 09:00:05", None))
    assert conn.execute("SELECT id, status FROM function_calls WHERE call_id IN ('call_1', 'call_9') "
                        "ORDER BY id").fetchall() == [(1, "done"), (3, "done"), (5, "failed")]
    assert conn.execute("SELECT COUNT(*) FROM function_calls").fetchone() == (4,)
    conn.close()


def test_schema_7_failing_half_way_leaves_the_calls_table_of_schema_6(tmp_path):
    conn = _schema_6(tmp_path / "ticos.db")
    conn.executemany("INSERT INTO function_calls (call_id, name, arguments, session_id, response_id, item_id, "
                     "status, result, created, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", OLD_CALLS)
    migrate_failing_at(conn, 7)
    assert current_version(conn) == 6 and "id" not in table_columns(conn, "function_calls")
    assert conn.execute("SELECT call_id FROM function_calls ORDER BY rowid").fetchall() == [
        ("call_1",), ("call_2",), ("call_9",)]
    assert migrate(conn) == 6 and current_version(conn) == 7
    conn.close()
