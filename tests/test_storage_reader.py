"""The offline reader: read-only, never changes the card, reads old ticos-client databases."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import pytest
from storage_helpers import V1_MESSAGES, make_sdk_v0, make_sdk_v1, snapshot, tiny_tmpfs

from ticos_agent.errors import StorageError
from ticos_agent.storage import (
    count_messages,
    open_readonly,
    open_store,
    read_calls,
    read_events,
    read_memories,
    read_messages,
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
    messages, _memories, calls, events, total, in_session = read_everything(conn)
    conn.close()
    assert snapshot(tmp_path) == before
    assert (messages[0]["content"], calls[0]["name"], events[0]["type"], total, in_session) == (
        "hi", "motion", "session.created", 1, 1)


async def test_reader_sees_a_live_store_and_matches_its_reads(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    for i in range(5):
        store.add_message(role="user", content=f"m{i}", item_id=None, session_id="s")
    store.log_event("e", session_id="s")
    await store.flush()
    expected = (await store.messages(limit=3, session_id="s"), await store.events(), await store.count_messages())
    before = snapshot(tmp_path)
    assert {"ticos.db-wal", "ticos.db-shm"} <= set(before)
    conn = open_readonly(tmp_path / "ticos.db")
    assert conn.copy_path is not None and "copy" in conn.note  # WAL in use: read a recovered copy
    assert (read_messages(conn, limit=3, session_id="s"), read_events(conn), count_messages(conn)) == expected
    assert expected[2] == 5
    conn.close()
    assert snapshot(tmp_path) == before  # not even the -shm of the live store changed
    await store.close()


CRASH_WAL = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')
c.execute("CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, "
          "datetime TEXT NOT NULL)")
for i in range(50):
    c.execute("INSERT INTO messages VALUES (?, 'user', ?, '2025-01-01 00:00:00')", (str(i), f"wal row {i}"))
os._exit(0)  # the card pulled: -wal and -shm stay behind, nothing checkpointed
"""
CRASH_JOURNAL = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, "
          "datetime TEXT NOT NULL)")
for i in range(200):
    c.execute("INSERT INTO messages VALUES (?, 'user', ?, '2025-01-01 00:00:00')", (str(i), "x" * 500))
c.execute('PRAGMA cache_size=2'); c.execute('BEGIN')
c.execute("UPDATE messages SET content = 'half written'")  # spills pages: a hot -journal
os._exit(0)
"""


def crash(script, db):
    subprocess.run([sys.executable, "-c", script, str(db)], check=True)
    return db


def wal_and_shm(d):
    return crash(CRASH_WAL, d / "ticos.db")


def wal_only(d):
    db = crash(CRASH_WAL, d / "ticos.db")
    (d / "ticos.db-shm").unlink()
    return db


def stale_shm_only(d):
    db = crash(CRASH_WAL, d / "ticos.db")
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()  # the last connection: -wal and -shm removed
    assert sorted(p.name for p in d.iterdir()) == ["ticos.db"]
    (d / "ticos.db-shm").write_bytes(b"\x07" * 32768)  # left by someone else, stale
    return db


def hot_journal(d):
    db = crash(CRASH_JOURNAL, d / "ticos.db")
    assert (d / "ticos.db-journal").stat().st_size > 0
    return db


EXPECTED = {wal_and_shm: [f"wal row {i}" for i in range(50)], wal_only: [f"wal row {i}" for i in range(50)],
            stale_shm_only: [f"wal row {i}" for i in range(50)], hot_journal: ["x" * 500] * 200}


@pytest.mark.parametrize("make", list(EXPECTED), ids=lambda f: f.__name__)
def test_sidecar_files_are_read_through_a_copy_and_the_card_never_changes(tmp_path, make):
    card = tmp_path / "card"
    card.mkdir()
    db = make(card)
    before = snapshot(card)
    conn = open_readonly(db)
    copy = conn.copy_path
    assert copy is not None and copy.parent != card and "temporary copy" in conn.note
    contents = [m["content"] for m in reversed(read_messages(conn, limit=500))]
    assert contents == EXPECTED[make]  # WAL rows seen; a half-written transaction rolled back
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM messages")
    conn.close()
    assert not copy.parent.exists()  # the temporary copy is gone
    assert snapshot(card) == before  # same files, bytes and mtimes


def crashed_copy(tmp_path, dest):
    """A WAL database whose last rows are only in its -wal file (as after a pulled card)."""
    src = tmp_path / "live"
    src.mkdir()
    writer = sqlite3.connect(src / "ticos.db")
    writer.execute("PRAGMA journal_mode=WAL")
    writer.executescript("CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, "
                         "datetime TEXT NOT NULL);")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.execute("INSERT INTO messages VALUES ('1', 'user', 'only in the wal', '2025-01-01 00:00:00')")
    writer.commit()
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("ticos.db", "ticos.db-wal"):
        shutil.copy2(src / name, dest / name)
    writer.close()
    return dest / "ticos.db"


def test_leftover_wal_on_a_read_only_card_is_read_from_a_copy(tmp_path, caplog):
    """A real read-only mount: a tmpfs holding the files, remounted ro."""
    with tiny_tmpfs(tmp_path / "card", "1m") as card:
        db = crashed_copy(tmp_path, card)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(card)], capture_output=True, text=True)
        if remount.returncode:
            pytest.skip(f"cannot remount read-only: {remount.stderr}")
        before = snapshot(card)
        conn = open_readonly(db)
        assert "-wal" in conn.note and "copy" in conn.note
        assert [m["content"] for m in read_messages(conn)] == ["only in the wal"]
        conn.close()
        assert snapshot(card) == before


def test_missing_file_is_a_storage_error_and_nothing_is_created(tmp_path):
    with pytest.raises(StorageError) as err:
        open_readonly(tmp_path / "nope.db")
    assert str(tmp_path / "nope.db") in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_not_a_database_is_a_storage_error(tmp_path):
    (tmp_path / "x.db").write_bytes(b"garbage" * 200)
    with pytest.raises(StorageError, match=r"x\.db"):
        read_messages(open_readonly(tmp_path / "x.db"))


LATER = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('PRAGMA wal_autocheckpoint=0')
c.execute("INSERT INTO messages VALUES ('x', 'user', 'written later', '2025-01-02 00:00:00')")
os._exit(0)
"""


def test_a_recovered_copy_is_kept_in_a_cache_while_the_card_is_unchanged(tmp_path):
    from ticos_agent.storage.reader import CACHE_KEEP

    cache = tmp_path / "cache"
    cards = []
    for n in range(CACHE_KEEP + 1):
        card = tmp_path / f"card{n}"
        card.mkdir()
        cards.append(wal_and_shm(card))
    before = snapshot(cards[0].parent)
    first = open_readonly(cards[0], cache=cache)
    made = first.copy_path
    assert made is not None and made.parent.parent == cache and "copy kept in" in first.note
    assert [m["content"] for m in reversed(read_messages(first, limit=500))] == EXPECTED[wal_and_shm]
    first.close()
    assert made.is_file()  # kept for the next look
    stamp = made.stat().st_mtime_ns
    again = open_readonly(cards[0], cache=cache)
    assert again.copy_path == made and made.stat().st_mtime_ns == stamp  # not copied again
    again.close()
    crash(LATER, cards[0])  # the card was back in the robot, and pulled again: a new copy
    before = snapshot(cards[0].parent)
    later = open_readonly(cards[0], cache=cache)
    assert read_messages(later, limit=1)[0]["content"] == "written later" and later.copy_path == made
    assert made.stat().st_mtime_ns != stamp
    later.close()
    for card in cards[1:]:
        open_readonly(card, cache=cache).close()
    assert len([p for p in cache.iterdir() if p.is_dir()]) == CACHE_KEEP  # the oldest went
    assert snapshot(cards[0].parent) == before


def test_a_live_writer_checkpointing_meanwhile_never_fails_a_read(tmp_path):
    """inspect on a running robot: the writer's last connection closing removes -wal/-shm
    at any moment, also between the reader listing them and copying them."""
    import threading

    db = tmp_path / "ticos.db"
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT, content TEXT, datetime TEXT)")
    setup.close()
    stop = threading.Event()
    cycles = [0]

    def writer() -> None:
        n = 0
        while not stop.is_set():
            conn = sqlite3.connect(db)
            for _ in range(5):
                n += 1
                conn.execute("INSERT INTO messages VALUES (?, 'user', 'hi', '2026-01-01 00:00:00')", (str(n),))
                conn.commit()
            conn.close()  # the last connection: checkpoints and removes -wal/-shm
            cycles[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = []
        for i in range(300):
            conn = open_readonly(db, cache=tmp_path / "cache") if i % 2 else open_readonly(db)
            seen.append(count_messages(conn))
            conn.close()
    finally:
        stop.set()
        thread.join()
    assert cycles[0] > 20 and seen == sorted(seen) and seen[-1] > 0
