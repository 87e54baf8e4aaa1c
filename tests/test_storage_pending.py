"""The pending file: records waiting on the event log's clock are in the page cache within
1 s, put back at the next start, and cost nothing when nothing waits."""

from __future__ import annotations

import asyncio
import sqlite3

from ticos_agent.storage import open_store
from ticos_agent.storage.pending import SPILL_AFTER, PendingFile

LINE = (1764150000.25, "input_audio_buffer.speech_started", "sess_1", "event_AAAAAAAAAAAAAAAAAAAAA", "item_U1", None)
WORDLESS = ("4000000000", "user", "", "item_U1", "nobody", "2026-11-26 10:00:00", "sess_1", "pending", None)


def test_a_pending_file_round_trip_and_what_it_ignores(tmp_path):
    path = tmp_path / "ticos.db.pending"
    pending = PendingFile(path)
    assert pending.take() == ([], [])  # no file
    pending.write([LINE], [WORDLESS])
    assert PendingFile(path).take() == ([LINE], [WORDLESS])
    pending.clear()
    assert PendingFile(path).take() == ([], []) and path.stat().st_size > 0  # marked empty, not removed
    pending.write([LINE, LINE], [])
    pending.write([LINE], [])  # shorter than what the file held: the header's length decides
    assert PendingFile(path).take() == ([LINE], [])
    for junk in (b"", b"garbage\n", b"TICOS-PENDING 1 999\n{\"events\": [", b"TICOS-PENDING 1 12\n[1, 2, 3, 4]"):
        path.write_bytes(junk)
        assert PendingFile(path).take() == ([], [])
    pending.close()


async def test_lines_waiting_for_their_commit_are_in_the_file_within_a_second(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, event_log_delay=5.0)
    path = tmp_path / "ticos.db.pending"
    try:
        store.log_event("input_audio_buffer.speech_started", session_id="sess_1", event_id="event_1")
        message = store.add_message(role="user", content="", item_id="item_U1", session_id="sess_1",
                                    status="pending")
        await asyncio.sleep(SPILL_AFTER + 0.15)
        events, messages = PendingFile(path).take()
        assert [e[3] for e in events] == ["event_1"] and [m[0] for m in messages] == [message]
        with sqlite3.connect(tmp_path / "ticos.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)  # not committed yet
        await store.flush()
        assert PendingFile(path).take() == ([], [])  # committed: the file is marked empty
        size = path.stat().st_size
        await asyncio.sleep(SPILL_AFTER + 0.15)
        assert path.stat().st_size == size and PendingFile(path).take() == ([], [])  # idle: untouched
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
    PendingFile(tmp_path / "ticos.db.pending").write([LINE, late], [WORDLESS])
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
    assert PendingFile(tmp_path / "ticos.db.pending").take() == ([], [])


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
    PendingFile(path).write([odd], [])
    assert PendingFile(path).take() == ([odd], [])
