"""A real card pulled and put back: a loop-mounted ext4 image, ``umount -l``, merging back."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from conftest_storage import loop_card
from ticos_agent.storage import SaveMode, open_store
from ticos_agent.storage.location import ALLOW_UNMOUNTED_ENV


@pytest.fixture(autouse=True)
def _real_mounts_only(monkeypatch):
    monkeypatch.delenv(ALLOW_UNMOUNTED_ENV, raising=False)


def rows(path, sql="SELECT id, content FROM messages ORDER BY rowid"):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


async def until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.01)


async def write(store, ids, start, stop, pause=0.003):
    for i in range(start, stop):
        ids.append(store.add_message(role="user" if i % 2 else "assistant", content=f"m{i}", item_id=f"i{i}"))
        store.log_event("response.done", event_id=f"e{i}")
        await asyncio.sleep(pause)


async def test_lazy_unmount_mid_stream_is_detected_and_nothing_is_lost(tmp_path):
    internal = tmp_path / "in"
    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=internal, probe_interval=0.1)
        assert store.location.mode is SaveMode.EXTERNAL and store.health()["card"]["in_use"]
        ids: list[str] = []
        writing = asyncio.create_task(write(store, ids, 0, 300))
        await until(lambda: len(ids) >= 100)
        card.pull()  # mid-stream: the writer is committing every few ms
        await writing
        await store.flush()
        h = store.health()
        assert (h["state"], h["mode"]) == ("degraded", "internal"), h
        assert "no longer mounted" in h["reason"] and str(card.root) in h["reason"]
        assert h["card"]["losses"] == 1 and not h["card"]["in_use"]
        assert h["fallback_rows"] > 0 and h["fallback"]["rows"]["messages"] > 0
        await store.close()
        card.put_back()  # the detached filesystem was released when the store let go of it
        on_card = rows(card.db)
    in_fallback = rows(internal / "ticos-fallback.db")
    assert on_card and in_fallback
    assert [r[0] for r in on_card + in_fallback] == ids  # each once, in order


async def test_card_back_while_running_gets_the_fallback_rows_merged_in_order(tmp_path):
    internal = tmp_path / "in"
    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=internal, probe_interval=0.1)
        ids: list[str] = []
        placeholder = store.add_message(role="user", content="", item_id="u0", status="pending")
        ids.append(placeholder)
        await write(store, ids, 1, 50)
        await store.flush()
        card.pull()
        await write(store, ids, 50, 120)
        store.update_message(placeholder, content="heard while the card was out", status="completed")
        store.add_memory("long_term", "likes trains")
        store.record_call(call_id="c1", name="motion", arguments="{}")
        await store.flush()
        assert store.health()["mode"] == "internal"
        await asyncio.to_thread(card.put_back)
        writing = asyncio.create_task(write(store, ids, 120, 200))  # the conversation goes on
        await until(lambda: store.health()["mode"] == "external" and store.health()["fallback_rows"] == 0,
                    what="back on the card")
        await writing
        store.set_call_outcome("c1", "completed", {"ok": True})
        await store.flush()
        h = store.health()
        assert (h["state"], h["reason"], h["fallback_rows"]) == ("ok", None, 0), h
        assert h["card"]["returns"] == 1 and h["fallback"]["merged"] > 0 and h["card"]["in_use"]
        messages = await store.messages(limit=500)
        await store.close()
        got = rows(card.db, "SELECT id, content, status FROM messages ORDER BY rowid")
        memories = rows(card.db, "SELECT content FROM memories")
        calls = rows(card.db, "SELECT call_id, name, status, result FROM function_calls")
        events = rows(card.db, "SELECT event_id FROM events ORDER BY id")
    assert [r[0] for r in got] == ids  # everything once, in the order it was said
    assert got[0][1:] == ("heard while the card was out", "completed")
    assert [m["id"] for m in messages] == ids[::-1]  # what /v1/messages shows
    assert memories == [("likes trains",)]
    assert calls == [("c1", "motion", "completed", '{"ok": true}')]
    assert [e[0] for e in events] == [f"e{i}" for i in range(1, 200)]
    assert rows(internal / "ticos-fallback.db", "SELECT COUNT(*) FROM messages") == [(0,)]
