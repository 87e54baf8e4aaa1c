"""A real card pulled and put back: a loop-mounted ext4 image, ``umount -l``, merging back."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import db_rows
from storage_helpers import loop_card

from ticos_agent.storage import SaveMode, open_store
from ticos_agent.storage.location import ALLOW_UNMOUNTED_ENV


@pytest.fixture(autouse=True)
def _real_mounts_only(monkeypatch):
    monkeypatch.delenv(ALLOW_UNMOUNTED_ENV, raising=False)


rows = db_rows


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
        # commits every 50 ms (not the default 0.8 s): some rows are on the card before the pull
        store = await open_store("external", tf_root=card.root, internal_dir=internal, probe_interval=0.1,
                                 commit_delay=0.05)
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


async def test_idle_store_notices_a_pulled_card_without_any_write(tmp_path):
    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=tmp_path / "in", probe_interval=0.1)
        store.add_message(role="user", content="before", item_id=None)
        await store.flush()
        card.pull()  # no write follows, and nobody asks /health: the writer's idle check
        await until(lambda: store.location.mode is SaveMode.INTERNAL, timeout=5, what="pull noticed while idle")
        assert "no longer mounted" in store.health()["reason"]
        await store.close()


async def test_health_reports_a_pulled_card_at_once(tmp_path):
    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=tmp_path / "in", probe_interval=60)
        store.add_message(role="user", content="before", item_id=None)
        await store.flush()
        card.pull()
        h = store.health()  # the same cheap check, made by /health itself
        assert h["state"] == "degraded" and "no longer mounted" in h["reason"]
        await until(lambda: store.location.mode is SaveMode.INTERNAL, timeout=5, what="writer moved")
        await store.close()


async def test_merge_interrupted_by_a_second_pull_is_completed_later_with_nothing_twice(tmp_path):
    internal = tmp_path / "in"
    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=internal, probe_interval=0.1)
        store._merge_chunk = 25  # many small chunks
        ids: list[str] = []
        await write(store, ids, 0, 20, pause=0)
        await store.flush()
        card.pull()
        await write(store, ids, 20, 220, pause=0)
        await store.flush()
        assert store.health()["fallback_rows"] == 400  # 200 messages and their 200 events
        merge_step, steps = store._merge_step, []

        async def pull_after_the_first_chunk():
            await merge_step()
            steps.append(store.health()["fallback_rows"])
            if len(steps) == 1:
                card.pull()  # between two chunks: the next one must notice

        store._merge_step = pull_after_the_first_chunk
        await asyncio.to_thread(card.put_back)
        await until(lambda: store.health()["card"]["problem"] and not store.health()["fallback"]["merging"]
                    and steps, what="merge stopped")
        h = store.health()
        assert h["mode"] == "internal" and "no longer mounted" in h["card"]["problem"]
        assert 0 < h["fallback_rows"] < 400 and h["fallback"]["merged"] == 400 - h["fallback_rows"]
        await write(store, ids, 220, 230, pause=0)  # still writing, to the fallback
        await asyncio.to_thread(card.put_back)
        await until(lambda: store.health()["mode"] == "external", what="back on the card")
        await write(store, ids, 230, 240, pause=0)
        await store.close()
        got = rows(card.db)
        events = rows(card.db, "SELECT event_id FROM events ORDER BY id")
    assert [r[0] for r in got] == ids
    assert [e[0] for e in events] == [f"e{i}" for i in range(240)]


async def test_restart_with_a_card_present_merges_what_an_earlier_run_left_in_the_fallback(tmp_path):
    internal = tmp_path / "in"
    with loop_card(tmp_path) as card:
        ids: list[str] = []
        store = await open_store("external", tf_root=card.root, internal_dir=internal)
        await write(store, ids, 0, 10, pause=0)
        await store.close()
        card.pull()
        store = await open_store("external", tf_root=card.root, internal_dir=internal)  # no card at start
        assert store.health()["state"] == "degraded" and "not mounted" in store.health()["reason"]
        await write(store, ids, 10, 30, pause=0)
        await store.close()
        assert store.health()["fallback_rows"] == 40
        card.put_back()
        store = await open_store("external", tf_root=card.root, internal_dir=internal)
        h = store.health()  # before the writer ran: the merge is still to do
        assert (h["state"], h["fallback_rows"], h["fallback"]["merging"]) == ("degraded", 40, True)
        assert "merging 40 rows" in h["reason"]
        await write(store, ids, 30, 40, pause=0)
        await until(lambda: store.health()["state"] == "ok", what="merged")
        assert store.health()["fallback"]["merged"] >= 40  # and what came during the merge
        await store.close()
        got = rows(card.db)
    # Each in order, once. The second run had no card to take its ids from, so (started within
    # the same second) it made the first run's ids again: those were merged under new ids.
    assert [r[1] for r in got] == [f"m{i}" for i in range(40)]
    assert len({r[0] for r in got}) == 40
    assert [r[0] for r in got[:10]] == ids[:10] and [r[0] for r in got[30:]] == ids[30:]


async def test_a_card_put_back_read_only_is_not_used_until_it_is_writable(tmp_path):
    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=tmp_path / "in", probe_interval=0.1)
        ids: list[str] = []
        await write(store, ids, 0, 5, pause=0)
        await store.flush()
        card.pull()
        await write(store, ids, 5, 10, pause=0)
        await store.flush()
        await asyncio.to_thread(card.put_back, read_only=True)
        await until(lambda: store.health()["card"]["probes"] >= 3, what="probes")
        h = store.health()
        assert h["mode"] == "internal" and "read-only" in h["card"]["problem"], h
        card.remount("rw")
        await until(lambda: store.health()["mode"] == "external", what="back on the card")
        await store.close()
        assert [r[0] for r in rows(card.db)] == ids


async def test_another_card_swapped_in_is_noticed_and_receives_the_fallback(tmp_path, caplog):
    with loop_card(tmp_path / "a") as first, loop_card(tmp_path / "b") as second:
        store = await open_store("external", tf_root=first.root, internal_dir=tmp_path / "in", probe_interval=0.1)
        ids: list[str] = []
        await write(store, ids, 0, 5, pause=0)
        await store.flush()
        second.pull()
        first.pull()
        second.root = first.root
        second.put_back()  # another card, in the same place, before the store wrote again
        await write(store, ids, 5, 10, pause=0)
        await store.flush()
        assert store.health()["card"]["losses"] == 1
        assert any("another device" in r.getMessage() and str(first.root) in r.getMessage()
                   for r in caplog.records)
        await until(lambda: store.health()["mode"] == "external", what="on the other card")
        await store.close()
        on_second = rows(second.db)
        second.pull()
        first.put_back()
        on_first = rows(first.db)
    assert [r[0] for r in on_first] == ids[:5]
    assert [r[0] for r in on_second] == ids[5:]


CHILD = r"""
import asyncio, sys, time
from ticos_agent.storage import open_store

async def main(root, internal, log):
    store = await open_store("external", tf_root=root, internal_dir=internal, probe_interval=0.1)
    with open(log, "a", buffering=1) as f:
        i = 0
        while True:
            for j in range(50):
                store.log_event("response.audio.delta", event_id=f"{i}.{j}")
            store.add_message(role="user", content=f"m{i}", item_id=f"i{i}")
            f.write(f"{i} {time.time()}\n")
            i += 1
            await asyncio.sleep(0.005)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_sigkill_during_a_merge_loses_nothing_older_than_a_second(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    internal, log = tmp_path / "in", tmp_path / "enqueued.log"
    with loop_card(tmp_path) as card:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(card.root), str(internal), str(log)],
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            await until(lambda: log.exists() and len(log.read_text().splitlines()) > 50, what="child writing")
            card.pull()
            await asyncio.sleep(2.0)  # thousands of events and a few hundred messages in the fallback
            await asyncio.to_thread(card.put_back)  # the merge starts within 0.1 s
            await asyncio.sleep(0.4)
            killed_at = __import__("time").time()
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        sent = {}
        for line in log.read_text().splitlines():
            i, t = line.split()
            sent[int(i)] = float(t)
        store = await open_store("external", tf_root=card.root, internal_dir=internal)
        await until(lambda: store.health()["state"] == "ok", timeout=30, what="merged after the kill")
        await store.close()
        contents = [r[1] for r in rows(card.db)]
        events = [r[0] for r in rows(card.db, "SELECT event_id FROM events")]
    assert len(contents) == len(set(contents)) and len(events) == len(set(events))  # nothing twice
    due = {f"m{i}" for i, t in sent.items() if t < killed_at - 1.0}
    assert due and due <= set(contents), sorted(due - set(contents))[:5]
    assert {f"{i}.{j}" for i in range(len(due)) for j in range(50)} <= set(events)
