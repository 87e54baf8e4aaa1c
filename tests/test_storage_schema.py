"""Opening ticos-client databases in place: every old row kept, migrations, ids, WAL."""

from __future__ import annotations

import sqlite3

import pytest
from conftest_storage import V1_MEMORIES, V1_MESSAGES, make_sdk_v0, make_sdk_v1

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
    assert versions == [1, 2, 3, 4]
    assert {"session_id", "status", "response_id"} <= table_columns(conn, "messages")
    assert table_columns(conn, "function_calls") and table_columns(conn, "events")
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "idx_messages_session" in indexes and "idx_messages_item" not in indexes  # dropped by v3
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
    assert [r[0] for r in conn.execute("SELECT version FROM db_version ORDER BY id")] == [1, 2, 3, 4]
    assert current_version(conn) == SCHEMA_VERSION


def test_migration_is_atomic(tmp_path):
    db = make_sdk_v1(tmp_path / "ticos.db")
    conn = sqlite3.connect(db, isolation_level=None)
    from ticos_agent.storage import schema

    real = schema.MIGRATIONS[2]

    def failing(c):
        real(c)  # every change of v2 made, then a failure before the version row
        raise sqlite3.OperationalError("boom")

    schema.MIGRATIONS[2] = failing
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn)
    finally:
        schema.MIGRATIONS[2] = real
    # v2 rolled back entirely: no new columns, no db_version row 2.
    assert "session_id" not in table_columns(conn, "messages")
    assert current_version(conn) == 1
