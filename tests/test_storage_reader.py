"""The offline reader: read-only, never changes the card, reads old ticos-client databases."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import pytest

from conftest_storage import V1_MESSAGES, make_sdk_v0, make_sdk_v1, snapshot, tiny_tmpfs
from ticos_agent.errors import StorageError
from ticos_agent.storage import (
    count_messages, open_readonly, open_store, read_calls, read_events, read_memories, read_messages,
)


def read_everything(conn):
    return (read_messages(conn, limit=500), read_memories(conn), read_calls(conn), read_events(conn),
            count_messages(conn), count_messages(conn, session_id="s"))


@pytest.mark.parametrize("make", [make_sdk_v1, make_sdk_v0], ids=["sdk-v1", "sdk-v0"])
def test_unmigrated_sdk_database_reads_and_stays_identical(tmp_path, make):
    db = make(tmp_path / "ticos.db")
    before = snapshot(tmp_path)
    conn = open_readonly(db)
    messages, memories, calls, events, total, in_session = read_everything(conn)
    conn.close()
    assert snapshot(tmp_path) == before  # same files, bytes and mtimes
    assert [m["id"] for m in messages] == [m[0] for m in reversed(V1_MESSAGES)]
    oldest = messages[-1]
    assert (oldest["role"], oldest["content"], oldest["datetime"]) == ("user", "hello robot", "2024-05-01 10:00:00")
    assert (oldest["session_id"], oldest["status"], oldest["response_id"]) == (None, None, None)
    if make is make_sdk_v1:
        assert (oldest["item_id"], oldest["user_id"]) == ("item_1", "alice")
    else:
        assert (oldest["item_id"], oldest["user_id"]) == (None, None)
    assert [m["type"] for m in memories] == ["long_term", "short_term"]
    assert (calls, events, total, in_session) == ([], [], len(V1_MESSAGES), 0)


def test_writing_through_the_reader_is_refused(tmp_path):
    conn = open_readonly(make_sdk_v1(tmp_path / "ticos.db"))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM messages")
    conn.close()


async def test_cleanly_closed_wal_database_opens_immutable_and_creates_no_files(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    store.add_message(role="user", content="hi", item_id="i", session_id="s")
    store.record_call(call_id="c", name="motion", arguments="{}", session_id="s")
    store.log_event("session.created", session_id="s")
    await store.close()
    before = snapshot(tmp_path)
    assert list(before) == ["ticos.db"]
    conn = open_readonly(tmp_path / "ticos.db")
    assert conn.immutable and "no files are created" in conn.note
    messages, memories, calls, events, total, in_session = read_everything(conn)
    conn.close()
    assert snapshot(tmp_path) == before
    assert (messages[0]["content"], calls[0]["name"], events[0]["type"], total, in_session) == ("hi", "motion", "session.created", 1, 1)


async def test_reader_sees_a_live_store_and_matches_its_reads(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    for i in range(5):
        store.add_message(role="user", content=f"m{i}", item_id=None, session_id="s")
    store.log_event("e", session_id="s")
    await store.flush()
    main_before = snapshot(tmp_path)["ticos.db"]
    conn = open_readonly(tmp_path / "ticos.db")
    assert not conn.immutable  # WAL in use: read it through mode=ro
    assert read_messages(conn, limit=3, session_id="s") == await store.messages(limit=3, session_id="s")
    assert read_events(conn) == await store.events()
    assert count_messages(conn) == await store.count_messages() == 5
    conn.close()
    assert snapshot(tmp_path)["ticos.db"] == main_before
    await store.close()


def crashed_copy(tmp_path, dest):
    """A WAL database whose last rows are only in its -wal file (as after a pulled card)."""
    src = tmp_path / "live"
    src.mkdir()
    writer = sqlite3.connect(src / "ticos.db")
    writer.execute("PRAGMA journal_mode=WAL")
    writer.executescript("CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, datetime TEXT NOT NULL);")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.execute("INSERT INTO messages VALUES ('1', 'user', 'only in the wal', '2025-01-01 00:00:00')")
    writer.commit()
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("ticos.db", "ticos.db-wal"):
        shutil.copy2(src / name, dest / name)
    writer.close()
    return dest / "ticos.db"


def test_leftover_wal_in_writable_directory_is_read(tmp_path):
    db = crashed_copy(tmp_path, tmp_path / "card")
    before = snapshot(tmp_path / "card")
    conn = open_readonly(db)
    assert not conn.immutable
    assert [m["content"] for m in read_messages(conn)] == ["only in the wal"]
    conn.close()
    after = snapshot(tmp_path / "card")
    # The database and its WAL are untouched; SQLite may only add its -shm index file.
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) <= {"ticos.db-shm"}


def test_leftover_wal_on_a_read_only_card_opens_immutable_and_says_so(tmp_path, caplog):
    """A real read-only mount: a tmpfs holding the files, remounted ro."""
    with tiny_tmpfs(tmp_path / "card", "1m") as card:
        db = crashed_copy(tmp_path, card)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(card)], capture_output=True, text=True)
        if remount.returncode:
            pytest.skip(f"cannot remount read-only: {remount.stderr}")
        before = snapshot(card)
        conn = open_readonly(db)
        assert conn.immutable and "not writable" in conn.note and "-wal" in conn.note
        assert any("not writable" in r.getMessage() for r in caplog.records)
        assert read_messages(conn) == []  # the WAL-only row is invisible, as the note says
        conn.close()
        assert snapshot(card) == before


def test_missing_file_is_a_storage_error_and_nothing_is_created(tmp_path):
    with pytest.raises(StorageError) as err:
        open_readonly(tmp_path / "nope.db")
    assert str(tmp_path / "nope.db") in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_not_a_database_is_a_storage_error(tmp_path):
    (tmp_path / "x.db").write_bytes(b"garbage" * 200)
    with pytest.raises(StorageError, match="x.db"):
        read_messages(open_readonly(tmp_path / "x.db"))
