"""The Store: batched writes, durability, reads, and falling back when the card fails."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time

import pytest
from storage_helpers import make_sdk_v1, tiny_tmpfs

from ticos_agent.errors import StorageError
from ticos_agent.storage import SaveMode, open_store


def rows(path, sql="SELECT id, role, content FROM messages ORDER BY rowid"):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("ticos_agent.storage")]


@pytest.fixture
async def store(tmp_path):
    s = await open_store(SaveMode.INTERNAL, internal_dir=tmp_path)
    yield s
    await s.close()


async def test_flush_commits_everything_enqueued(store, tmp_path):
    ids = [store.add_message(role="user", content=f"m{i}", item_id=f"item_{i}", session_id="s1") for i in range(50)]
    store.add_memory("long_term", "likes tea")
    await store.flush()
    assert [r[0] for r in rows(tmp_path / "ticos.db")] == ids
    memories = rows(tmp_path / "ticos.db", "SELECT type, content, user_id FROM memories")
    assert memories == [("long_term", "likes tea", "nobody")]
    assert store.health()["pending"] == 0 and store.health()["written"] == 51


async def test_writes_reach_disk_without_flush_within_100ms(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, batch_interval=0.05)
    store.add_message(role="user", content="soon on disk", item_id=None)
    deadline = time.monotonic() + 1.0
    while not rows(tmp_path / "ticos.db") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    elapsed = 1.0 - (deadline - time.monotonic())
    assert rows(tmp_path / "ticos.db") and elapsed < 0.5  # ~0.05 s normally; room for a loaded CI
    await store.close()


async def test_close_flushes_and_rows_survive_reopen(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, batch_interval=10)
    mid = store.add_message(role="assistant", content="bye", item_id="i1", response_id="r1")
    store.log_event("response.done", session_id="s", response_id="r1")
    await store.close()
    assert rows(tmp_path / "ticos.db") == [(mid, "assistant", "bye")]
    assert rows(tmp_path / "ticos.db", "SELECT type, response_id FROM events") == [("response.done", "r1")]
    with pytest.raises(StorageError):
        store.add_message(role="user", content="late", item_id=None)
    await store.close()  # twice is fine


async def test_enqueue_is_synchronous_and_starts_no_tasks(store):
    before = len(asyncio.all_tasks())
    for i in range(5000):
        store.log_event("response.audio.delta", session_id="s", event_id=f"e{i}", item_id="i")
    assert len(asyncio.all_tasks()) == before
    assert store.health()["pending"] == 5000
    await store.flush()
    assert len(await store.events(limit=1000)) == 500  # capped
    assert (await store.events(limit=1))[0]["event_id"] == "e4999"


async def test_update_message_fills_a_placeholder(store):
    mid = store.add_message(role="user", content="", item_id="item_U1", status="pending")
    store.update_message(mid, content="Wave at me!", status="completed")
    store.update_message(mid, status="completed")  # content None keeps the transcript
    await store.flush()
    (msg,) = await store.messages()
    assert (msg["content"], msg["status"], msg["item_id"]) == ("Wave at me!", "completed", "item_U1")


async def test_calls_record_and_outcome_in_either_order(store):
    store.record_call(call_id="call_1", name="motion", arguments='{"motion_tag":"wave"}', session_id="s",
                      response_id="r")
    store.set_call_outcome("call_1", "completed", {"ok": True})
    store.set_call_outcome("call_2", "failed", "unknown tag")
    store.record_call(call_id="call_2", name="emotion", arguments="{}", item_id="it")
    store.record_call(call_id="call_1", name="motion", arguments="{}")  # duplicate: changes nothing
    await store.flush()
    calls = {c["call_id"]: c for c in await store.calls()}
    assert calls["call_1"]["status"] == "completed" and json.loads(calls["call_1"]["result"]) == {"ok": True}
    assert calls["call_1"]["arguments"] == '{"motion_tag":"wave"}' and calls["call_1"]["finished"]
    call_2 = calls["call_2"]
    assert (call_2["name"], call_2["status"], call_2["item_id"]) == ("emotion", "failed", "it")
    assert json.loads(calls["call_2"]["result"]) == "unknown tag"


async def test_reads_paginate_filter_and_count(store):
    for i in range(7):
        store.add_message(role="user", content=str(i), item_id=None, session_id="a" if i % 2 else "b")
    await store.flush()
    assert [m["content"] for m in await store.messages(limit=2, offset=1)] == ["5", "4"]
    assert [m["content"] for m in await store.messages(session_id="a")] == ["5", "3", "1"]
    assert await store.count_messages() == 7 and await store.count_messages("b") == 4
    assert await store.messages(limit=-5) == []


async def test_a_bad_record_is_skipped_alone(store, tmp_path, caplog):
    good1 = store.add_message(role="user", content="ok 1", item_id=None)
    store.add_message(role="user", content=None, item_id=None)  # NOT NULL violation
    good2 = store.add_message(role="user", content="ok 2", item_id=None)
    store.log_event("x")
    store.log_event("bad", session_id={"not": "bindable"})  # SQLite cannot store a dict
    store.log_event("y")
    await store.flush()
    assert [r[0] for r in rows(tmp_path / "ticos.db")] == [good1, good2]
    assert rows(tmp_path / "ticos.db", "SELECT type FROM events ORDER BY id") == [("x",), ("y",)]
    h = store.health()
    assert (h["write_errors"], h["state"], h["mode"], h["pending"]) == (2, "ok", "internal", 0)


# ---------------------------------------------------------------- fallback when opening

async def test_card_path_under_a_regular_file_falls_back(tmp_path, caplog):
    card = tmp_path / "not-a-dir"
    card.write_text("a file, so <card>/.config cannot be created")
    internal = tmp_path / "internal"
    store = await open_store("external", tf_root=card, internal_dir=internal, require_mount=False)
    assert store.location.path == internal / "ticos-fallback.db"
    assert (store.location.mode, store.location.requested) == (SaveMode.INTERNAL, SaveMode.EXTERNAL)
    h = store.health()
    assert h["state"] == "degraded" and h["mode"] == "internal" and h["requested"] == "external"
    assert str(card / ".config" / "ticos" / "ticos.db") in h["reason"]
    (w,) = warnings(caplog)
    assert str(card) in w.getMessage() and str(internal / "ticos-fallback.db") in w.getMessage()
    store.add_message(role="user", content="kept", item_id=None)
    await store.close()
    assert rows(internal / "ticos-fallback.db")[0][2] == "kept"


async def test_unopenable_card_database_falls_back_and_is_left_alone(tmp_path):
    bad = tmp_path / "card" / ".config" / "ticos" / "ticos.db"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not an SQLite database" * 100)
    before = bad.read_bytes()
    store = await open_store("external", tf_root=tmp_path / "card", internal_dir=tmp_path / "in", require_mount=False)
    assert store.location.mode is SaveMode.INTERNAL and "not a database" in store.location.degraded
    await store.close()
    assert bad.read_bytes() == before


async def test_read_only_mounted_card_falls_back(tmp_path):
    with tiny_tmpfs(tmp_path / "card", "1m", "ro") as card:
        store = await open_store("external", tf_root=card, internal_dir=tmp_path / "in")
        assert store.location.mode is SaveMode.INTERNAL
        assert "Read-only" in store.location.degraded or "read-only" in store.location.degraded
        await store.close()


async def test_internal_failure_raises_storage_error_with_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError) as err:
        await open_store("internal", internal_dir=blocker / "ticos")
    assert str(blocker / "ticos" / "ticos.db") in str(err.value)
    assert isinstance(err.value, OSError)


# ---------------------------------------------------------------- fallback at runtime

async def test_card_filling_up_mid_session_loses_nothing(tmp_path, caplog):
    """A real 2 MiB tmpfs as the card: SQLite gets a genuine ENOSPC (SQLITE_FULL)."""
    internal = tmp_path / "in"
    with tiny_tmpfs(tmp_path / "card", "2m") as card:
        store = await open_store("external", tf_root=card, internal_dir=internal)
        assert store.location.mode is SaveMode.EXTERNAL
        ids = []
        for i in range(200):
            ids.append(store.add_message(role="assistant", content=f"{i}:" + "x" * 16000, item_id=f"i{i}"))
            store.log_event("response.audio_transcript.done", item_id=f"i{i}")
            await store.flush()  # never raises: the failed batch goes to the fallback
        h = store.health()
        assert h["state"] == "degraded" and h["mode"] == "internal" and h["write_errors"] >= 1
        assert "full" in h["reason"] and str(card) in h["reason"]
        assert len(warnings(caplog)) == 1
        on_card = [r[0] for r in rows(card / ".config" / "ticos" / "ticos.db")]
        await store.close()
    on_internal = [r[0] for r in rows(internal / "ticos-fallback.db")]
    assert on_card and on_internal
    assert on_card + on_internal == ids  # every message once, in order
    assert len(rows(internal / "ticos-fallback.db", "SELECT id FROM events")) == 200 - len(on_card)


async def test_max_page_count_full_card_falls_back_without_flush(tmp_path, caplog):
    """The card made 'full' with PRAGMA max_page_count on the store's own connection."""
    store = await open_store("external", tf_root=tmp_path / "card", internal_dir=tmp_path / "in", require_mount=False)
    await store._db.execute("PRAGMA max_page_count = 1")  # the current size: no page may be added
    mid = store.add_message(role="user", content="y" * 10000, item_id=None)
    deadline = time.monotonic() + 2
    while store.health()["mode"] != "internal" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await store.flush()
    assert store.health()["state"] == "degraded" and "full" in store.health()["reason"]
    await store.close()
    assert rows(tmp_path / "in" / "ticos-fallback.db")[0][0] == mid
    assert rows(tmp_path / "card" / ".config" / "ticos" / "ticos.db") == []


async def test_fallback_renumbers_ids_that_exist_in_the_fallback_database(tmp_path):
    internal = tmp_path / "in"
    internal.mkdir()
    store = await open_store("external", tf_root=tmp_path / "card", internal_dir=internal, require_mount=False)
    # a fallback database that appeared after open, holding id 9999999990 (another run's)
    make_sdk_v1(internal / "ticos-fallback.db")
    await store._db.execute("PRAGMA max_page_count = 1")
    store._last_id = 9999999980  # as if this session's clock had run that far
    mid = store.add_message(role="user", content="z" * 5000, item_id="u")
    store.update_message(mid, content="transcribed")
    await store.flush()
    store.update_message(mid, status="done")  # the caller's id still works
    await store.close()
    got = rows(internal / "ticos-fallback.db", "SELECT id, content, status FROM messages WHERE item_id = 'u'")
    assert got == [("9999999991", "transcribed", "done")]
    assert rows(internal / "ticos-fallback.db", "SELECT content FROM messages WHERE id = '9999999990'")


async def test_when_internal_fails_too_nothing_raises_into_the_loop(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = await open_store("external", tf_root=tmp_path / "card", internal_dir=blocker / "in",
                             require_mount=False)
    await store._db.execute("PRAGMA max_page_count = 1")
    store.add_message(role="user", content="w" * 5000, item_id=None)
    store.log_event("kept.for.retry")
    with pytest.raises(StorageError) as err:
        await store.flush()
    assert "internal fallback" in str(err.value)
    h = store.health()
    assert h["state"] == "degraded" and h["pending"] == 2 and h["write_errors"] >= 1
    store.log_event("still.accepted")
    await store.close()  # gives up without raising; the loss is logged
    assert any(r.levelno == logging.ERROR and "not written" in r.getMessage() for r in caplog.records)


async def test_internal_write_failure_is_retried_and_recovers(tmp_path, caplog):
    store = await open_store("internal", internal_dir=tmp_path)
    await store._db.execute("PRAGMA max_page_count = 1")  # this connection can no longer grow the file
    mid = store.add_message(role="user", content="v" * 5000, item_id=None)
    with pytest.raises(StorageError, match="full"):
        await store.flush()
    assert store.health()["state"] == "degraded" and store.health()["pending"] == 1
    await store.flush()  # the writer reopened the database; the retry goes through
    h = store.health()
    assert (h["state"], h["reason"], h["pending"], h["mode"]) == ("ok", None, 0, "internal")
    await store.close()
    assert rows(tmp_path / "ticos.db")[0][0] == mid


# ---------------------------------------------------------------- updates across a fallback

async def test_update_after_fallback_puts_the_row_with_its_transcript_in_the_internal_database(tmp_path):
    store = await open_store("external", tf_root=tmp_path / "card", internal_dir=tmp_path / "in", require_mount=False)
    mid = store.add_message(role="user", content="", item_id="u1", status="pending")
    await store.flush()  # the placeholder is on the card
    await store._db.execute("PRAGMA max_page_count = 1")  # now the card is full
    store.add_message(role="assistant", content="x" * 8000, item_id="a1")
    await store.flush()
    assert store.health()["mode"] == "internal"
    store.update_message(mid, content="the user's words", status="completed")
    await store.flush()
    h = store.health()
    await store.close()
    got = rows(tmp_path / "in" / "ticos-fallback.db",
               "SELECT id, role, content, status, item_id FROM messages WHERE role = 'user'")
    assert got == [(mid, "user", "the user's words", "completed", "u1")]
    assert (h["skipped"], h["pending"], h["written"]) == (0, 0, 3)


async def test_update_of_an_unknown_message_is_counted_as_skipped(store, tmp_path, caplog):
    mid = store.add_message(role="user", content="", item_id="u", status="pending")
    store.update_message("1000", content="nobody's")  # never added here, nothing remembered
    store.update_message(mid, content="mine", status="completed")
    await store.flush()
    h = store.health()
    assert (h["written"], h["skipped"], h["write_errors"], h["state"]) == (2, 1, 0, "ok")
    assert rows(tmp_path / "ticos.db", "SELECT id, content, status FROM messages") == [(mid, "mine", "completed")]
    assert any("1000" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_remembered_rows_are_bounded(store, monkeypatch):
    from ticos_agent.storage import store as store_module

    for _i in range(store_module.RECENT_MESSAGES + 100):
        store.add_message(role="user", content="", item_id=None, status="pending")
    assert len(store._recent) == store_module.RECENT_MESSAGES
    store.add_message(role="assistant", content="z" * (store_module.RECENT_CHARS + 1), item_id=None)
    assert len(store._recent) == 1  # the character budget too (the newest is always kept)
    await store.flush()


# ---------------------------------------------------------------- flush, close, big backlogs

async def test_flush_during_close_returns_and_flush_after_close_is_immediate(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    for i in range(20000):
        store.log_event("x", event_id=str(i))
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0.01)  # the writer is busy with the first chunk
    await asyncio.wait_for(store.flush(), 5)
    await closing
    await asyncio.wait_for(store.flush(), 0.1)
    assert rows(tmp_path / "ticos.db", "SELECT COUNT(*) FROM events") == [(20000,)]


async def test_a_backlog_is_committed_in_chunks_and_the_wal_stays_bounded(tmp_path):
    from ticos_agent.storage.connection import JOURNAL_SIZE_LIMIT

    store = await open_store("internal", internal_dir=tmp_path)
    limit = (await (await store._db.execute("PRAGMA journal_size_limit")).fetchone())[0]
    assert limit == JOURNAL_SIZE_LIMIT
    for i in range(120_000):  # an outage's backlog: one huge transaction would make a ~16 MiB WAL
        store.log_event("conversation.item.created", session_id="sess_abcdef0123456789",
                        event_id=f"event_{i}_abcdefghijklmnop", item_id=f"item_{i}_abcdefghijkl")
    ids = [store.add_message(role="user", content=f"m{i}", item_id=None) for i in range(7000)]
    await store.flush()
    wal = (tmp_path / "ticos.db-wal").stat().st_size
    assert wal <= JOURNAL_SIZE_LIMIT, wal
    h = store.health()
    assert (h["written"], h["pending"]) == (127_000, 0)
    await store.close()
    assert [r[0] for r in rows(tmp_path / "ticos.db")] == ids


async def test_dropping_events_makes_the_state_degraded_until_the_backlog_shrinks(store, monkeypatch):
    from ticos_agent.storage import store as store_module

    monkeypatch.setattr(store_module, "MAX_PENDING_EVENTS", 10)
    for _i in range(15):
        store.log_event("e")
    h = store.health()
    assert (h["state"], h["dropped_events"]) == ("degraded", 5) and "dropped" in h["reason"]
    await store.flush()
    h = store.health()
    assert (h["state"], h["reason"], h["dropped_events"], h["written"]) == ("ok", None, 5, 10)


# ---------------------------------------------------------------- event-log retention

async def test_old_events_are_pruned_in_chunks_at_open_and_counted(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, event_retention_days=None)
    now = time.time()
    for i in range(12_003):
        store.log_event("old", event_id=str(i), ts=now - 31 * 86400)
    for i in range(10):
        store.log_event("new", event_id=str(i), ts=now - 29 * 86400)
    await store.close()
    assert store.health()["events_pruned"] == 0  # None: kept forever
    store = await open_store("internal", internal_dir=tmp_path)  # 30 days by default
    deadline = time.monotonic() + 5
    while store.health()["events_pruned"] < 12_003 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert store.health()["events_pruned"] == 12_003
    assert {e["type"] for e in await store.events(limit=500)} == {"new"}
    store.log_event("current")
    await store.flush()
    store._retention, store._next_prune = 28, 0  # the next round (every few minutes): 28 days
    store.log_event("wake")
    deadline = time.monotonic() + 5
    while store.health()["events_pruned"] < 12_013 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await store.close()
    assert rows(tmp_path / "ticos.db", "SELECT type FROM events ORDER BY id") == [("current",), ("wake",)]
    assert store.health()["events_pruned"] == 12_013
