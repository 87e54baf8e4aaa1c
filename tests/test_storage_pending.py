"""The pending file: records waiting on the event log's clock are in the page cache within
1 s, put back at the next start, and cost nothing when nothing waits."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys

from ticos_agent.storage import open_store
from ticos_agent.storage.pending import SPILL_AFTER, PendingFile

LINE = (1764150000.25, "input_audio_buffer.speech_started", "sess_1", "event_AAAAAAAAAAAAAAAAAAAAA", "item_U1", None)
WORDLESS = ("4000000000", "user", "", "item_U1", "nobody", "2026-11-26 10:00:00", "sess_1", "pending", None)


def put(path, events, messages) -> None:
    pending = PendingFile(path)
    pending.write(events, messages)
    pending.close()


def read(path) -> tuple[list, list]:
    pending = PendingFile(path)
    try:
        return pending.take()
    finally:
        pending.close()


def test_a_pending_file_round_trip_and_what_it_ignores(tmp_path):
    path = tmp_path / "ticos.db.pending"
    assert read(path) == ([], [])  # no file
    put(path, [LINE], [WORDLESS])
    assert read(path) == ([LINE], [WORDLESS])
    pending = PendingFile(path)
    pending.take()
    pending.clear()
    assert pending.take() == ([], [])  # marked empty
    pending.close()
    assert not path.exists()  # let go empty: removed
    put(path, [LINE, LINE], [])
    put(path, [LINE], [])  # shorter than what the file held: the header's length decides
    assert read(path) == ([LINE], [])
    for junk in (b"", b"garbage\n", b"TICOS-PENDING 1 999\n{\"events\": [", b"TICOS-PENDING 1 12\n[1, 2, 3, 4]",
                 b"TICOS-PENDING 1 99999999999999999999\n{}", b"TICOS-PENDING 1 100000000000\n{}",
                 b"TICOS-PENDING 1 -5\n", b"TICOS-PENDING 1 x\n"):
        path.write_bytes(junk)
        assert read(path) == ([], []), junk


def test_one_store_at_a_time_owns_the_file(tmp_path):
    path = tmp_path / "ticos.db.pending"
    put(path, [LINE], [])
    owner = PendingFile(path)
    try:
        other = PendingFile(path)  # another store on this folder: ``ticos-agent memory`` while the agent runs
        assert other.take() == ([], []) and other.take_over() is None
        other.write([], [WORDLESS])
        assert owner.take() == ([LINE], [])
    finally:
        owner.close()  # a SIGKILL releases it the same way
    assert read(path) == ([LINE], [])
    assert other.take_over() == ([LINE], [])  # the store that had it is gone: what it left is the other's now
    assert other.take_over() is None  # once
    other.write([LINE, late := (*LINE[:3], "event_other", None, None)], [])
    other.close()
    assert read(path) == ([LINE, late], [])
    fifo = tmp_path / "fifo.pending"
    os.mkfifo(fifo)
    assert read(fifo) == ([], [])  # not a regular file: not used (and no hang)


async def test_lines_waiting_for_their_commit_are_in_the_file_within_a_second(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, event_log_delay=5.0)
    path = tmp_path / "ticos.db.pending"
    try:
        store.log_event("input_audio_buffer.speech_started", session_id="sess_1", event_id="event_1")
        message = store.add_message(role="user", content="", item_id="item_U1", session_id="sess_1",
                                    status="pending")
        await asyncio.sleep(0.95)  # the promise: within 1 s, whatever SPILL_AFTER says
        events, messages = store._pending.take()
        assert [e[3] for e in events] == ["event_1"] and [m[0] for m in messages] == [message]
        with sqlite3.connect(tmp_path / "ticos.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)  # not committed yet
        await store.flush()
        assert store._pending.take() == ([], [])  # committed: the file is marked empty
        written = path.stat().st_mtime_ns
        await asyncio.sleep(SPILL_AFTER + 0.3)
        assert path.stat().st_mtime_ns == written  # idle: not written again
    finally:
        await store.close()


async def test_the_next_start_puts_back_what_the_database_lacks_once(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    store.log_event("session.created", session_id="sess_1", event_id="event_0", ts=LINE[0] - 1)
    store.log_event(*LINE[1:2], session_id=LINE[2], event_id=LINE[3], item_id=LINE[4], ts=LINE[0])
    await store.close()
    # a SIGKILL left a line that was committed (its commit came after the file was written),
    # one that was not, and a user's message with no words yet
    late = (LINE[0] + 0.5, "input_audio_buffer.speech_stopped", "sess_1", "event_BBBBBBBBBBBBBBBBBBBBB", "item_U1",
            None)
    put(tmp_path / "ticos.db.pending", [LINE, late], [WORDLESS])
    for _ in range(2):  # a second start finds the file empty
        store = await open_store("internal", internal_dir=tmp_path)
        newer = store.add_message(role="user", content="hello", item_id="item_U2", session_id="sess_1")
        await store.close()
        assert int(newer) > int(WORDLESS[0])  # new ids follow the ones put back, even ahead of the clock
    with sqlite3.connect(tmp_path / "ticos.db") as conn:
        assert [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY id")] == [
            "event_0", LINE[3], late[3]]
        assert conn.execute("SELECT id, status FROM messages WHERE item_id = 'item_U1'").fetchall() == [
            (WORDLESS[0], "pending")]
    assert read(tmp_path / "ticos.db.pending") == ([], [])


async def test_an_unwritable_pending_file_is_said_once_and_the_store_goes_on(tmp_path, caplog):
    (tmp_path / "ticos.db.pending").mkdir()  # cannot be opened as a file
    store = await open_store("internal", internal_dir=tmp_path, event_log_delay=5.0)
    try:
        for i in range(3):
            store.log_event("input_audio_buffer.speech_started", session_id="sess_1", event_id=f"event_{i}")
            await asyncio.sleep(SPILL_AFTER + 0.1)
        await store.flush()
        assert store.health()["state"] == "ok"
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "ticos.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (3,)
    said = [r for r in caplog.records if "are not kept from a SIGKILL" in r.getMessage()]
    assert len(said) == 1


def test_values_from_the_wire_that_utf8_cannot_hold_are_kept_escaped(tmp_path):
    path = tmp_path / "ticos.db.pending"
    odd = (1.5, "x.\ud800", "sess_\x00", "event_\udfff", None, None)  # lone surrogates, a NUL
    put(path, [odd], [])
    assert read(path) == ([odd], [])


async def test_a_line_the_database_rejects_is_skipped_alone_when_put_back(tmp_path):
    bad = (LINE[0] + 0.1, "x.\ud800", "sess_1", "event_bad", None, None)  # SQLite cannot bind a lone surrogate
    late = (LINE[0] + 0.2, "input_audio_buffer.speech_stopped", "sess_1", "event_late", None, None)
    put(tmp_path / "ticos.db.pending", [LINE, bad, late], [WORDLESS])
    store = await open_store("internal", internal_dir=tmp_path)
    await store.close()
    with sqlite3.connect(tmp_path / "ticos.db") as conn:
        assert [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY id")] == [LINE[3], "event_late"]
        assert conn.execute("SELECT id FROM messages").fetchall() == [(WORDLESS[0],)]
    assert read(tmp_path / "ticos.db.pending") == ([], [])


async def test_a_slow_commit_does_not_hold_the_copy_back(tmp_path):
    """Another process holds the database's write lock (``ticos-agent memory import``): the
    commit waits for it, the copy in the pending file (of the batch being committed) does not."""
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.1, event_log_delay=0.1)
    blocker = sqlite3.connect(tmp_path / "ticos.db", isolation_level=None)
    try:
        await asyncio.sleep(0.3)  # the store's first steps are done
        blocker.execute("BEGIN IMMEDIATE")
        store.log_event("input_audio_buffer.speech_started", session_id="sess_1", event_id="event_1")
        await asyncio.sleep(0.95)
        assert [e[3] for e in store._pending.take()[0]] == ["event_1"]
        blocker.execute("COMMIT")
        await store.flush()
        assert store._pending.take() == ([], [])
    finally:
        blocker.close()
        await store.close()


async def test_a_second_store_on_the_folder_leaves_the_agents_file_alone(tmp_path):
    agent = await open_store("internal", internal_dir=tmp_path, event_log_delay=5.0)
    try:
        agent.log_event("input_audio_buffer.speech_started", session_id="sess_1", event_id="event_1")
        await asyncio.sleep(0.95)  # copied to the pending file, not committed
        other = await open_store("internal", internal_dir=tmp_path)  # e.g. ``ticos-agent memory forget``
        await other.close()
        await agent.flush()
    finally:
        await agent.close()
    with sqlite3.connect(tmp_path / "ticos.db") as conn:
        assert conn.execute("SELECT event_id FROM events").fetchall() == [("event_1",)]


async def test_a_store_that_takes_the_file_over_puts_back_what_a_killed_owner_left(tmp_path):
    """The agent was SIGKILLed while another store (opened meanwhile, so not the file's owner)
    ran on: that store takes the file at its next copy and commits the killed agent's line."""
    script = (f"import asyncio\nfrom ticos_agent.storage import open_store\n"
              f"async def main():\n"
              f"    store = await open_store('internal', internal_dir={str(tmp_path)!r}, event_log_delay=60.0)\n"
              f"    store.log_event('input_audio_buffer.speech_started', session_id='s', event_id='event_killed')\n"
              f"    await asyncio.sleep(1.0)\n"
              f"    print('copied', flush=True)\n"
              f"    await asyncio.sleep(60)\n"
              f"asyncio.run(main())\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert await asyncio.to_thread(owner.stdout.readline) == "copied\n"
        store = await open_store("internal", internal_dir=tmp_path, event_log_delay=60.0)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        owner.stdout.close()
    try:
        store.log_event("input_audio_buffer.speech_stopped", session_id="sess_1", event_id="event_mine")
        await asyncio.sleep(0.95)  # its copy: the file is this store's now
        await store.flush()  # what it took over is committed too
        assert store._pending.take() == ([], [])
        with sqlite3.connect(tmp_path / "ticos.db") as conn:
            assert sorted(r[0] for r in conn.execute("SELECT event_id FROM events")) == ["event_killed", "event_mine"]
            # what was put back is queued before what waited here (older lines keep older rowids)
            assert [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY id")] == \
                ["event_killed", "event_mine"]
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "ticos.db") as conn:
        assert sorted(r[0] for r in conn.execute("SELECT event_id FROM events")) == ["event_killed", "event_mine"]


def test_ids_that_are_no_numbers_seed_nothing_and_huge_ones_are_capped(tmp_path):
    from ticos_agent.storage.pending import newest_id
    from ticos_agent.storage.schema import MIGRATIONS, id_number, max_message_id

    assert [id_number(v) for v in ("12", "0012", "\u00b2", "\u0663", "", "12a", 12)] == [12, 12, 0, 0, 0, 0, 12]
    assert id_number("9" * 5000) == 0  # past Python's int() digit limit
    assert id_number("1" * 19) == 0 and id_number("0" * 5 + "9" * 18) == 10**18 - 1
    assert newest_id([("\u00b2",), ("9" * 5000,), ("7",)]) == 7
    with sqlite3.connect(":memory:") as conn:  # the same rule in SQL
        MIGRATIONS[1](conn)
        for mid in ("\u00b2", "9" * 5000, "1" * 19, "0" * 5 + "9" * 18, "12a"):
            conn.execute("INSERT INTO messages (id, role, content, user_id, datetime) VALUES (?, 'user', '', 'x', "
                         "'2026-11-26 10:00:00')", (mid,))
        assert max_message_id(conn) == 10**18 - 1


async def test_a_pending_file_with_odd_message_ids_still_opens_and_ids_go_on(tmp_path):
    odd = [(mid, *WORDLESS[1:]) for mid in ("\u00b2", "1" * 5000, "9" * 30, "m-1")]
    put(tmp_path / "ticos.db.pending", [], odd)
    for _ in range(2):  # at each start new ids are unique
        store = await open_store("internal", internal_dir=tmp_path)
        store.add_message(role="user", content="hello", item_id=None)
        await store.close()
    with sqlite3.connect(tmp_path / "ticos.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (6,)


def _lines(store) -> list:
    return [e[3] for e in store._pending.take()[0]]


async def test_after_a_commit_the_file_holds_only_what_is_still_waiting(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.1, event_log_delay=0.1)
    blocker = sqlite3.connect(tmp_path / "ticos.db", isolation_level=None)
    try:
        await asyncio.sleep(0.3)
        blocker.execute("BEGIN IMMEDIATE")
        store.log_event("input_audio_buffer.speech_started", session_id="sess_1", event_id="event_1")
        for _ in range(500):
            if store._batch is not None:  # its commit started: it waits for the lock
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the commit did not start")
        store._lazy_interval = 60.0  # the next line waits for a later commit
        store.log_event("input_audio_buffer.speech_stopped", session_id="sess_1", event_id="event_2")
        await asyncio.sleep(0.95)
        assert _lines(store) == ["event_1", "event_2"]
        blocker.execute("COMMIT")
        for _ in range(500):
            if _lines(store) == ["event_2"]:  # written again after the commit: not the committed line
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"the file holds {_lines(store)}")
        with sqlite3.connect(tmp_path / "ticos.db") as conn:
            assert conn.execute("SELECT event_id FROM events").fetchall() == [("event_1",)]
    finally:
        blocker.close()
        await store.close()


async def test_what_the_close_could_not_commit_stays_in_the_file_for_the_next_start(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, event_log_delay=60.0)
    await store._db.execute("PRAGMA busy_timeout = 100")
    blocker = sqlite3.connect(tmp_path / "ticos.db", isolation_level=None)
    try:
        await asyncio.sleep(0.3)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock through the close
        store.log_event("input_audio_buffer.speech_started", session_id="sess_1", event_id="event_1")
        await store.close()  # before the timer copied it
        blocker.execute("COMMIT")
    finally:
        blocker.close()
    assert [e[3] for e in read(tmp_path / "ticos.db.pending")[0]] == ["event_1"]
    store = await open_store("internal", internal_dir=tmp_path)
    await store.close()
    with sqlite3.connect(tmp_path / "ticos.db") as conn:
        assert conn.execute("SELECT event_id FROM events").fetchall() == [("event_1",)]
