"""Merging the fallback into the card: interrupted merges, restarts, id collisions, epochs.

The card is a plain folder here (``require_mount=False``) and a failure is made with
``PRAGMA max_page_count`` on the store's own card connection (a genuine SQLITE_FULL), so
the probe finds the card usable again at once; test_storage_card_pull.py does the same
with a real loop-mounted card.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest

from ticos_agent.storage import merge as merge_module
from ticos_agent.storage import open_store


def rows(path, sql="SELECT id, content FROM messages ORDER BY rowid"):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.01)


@pytest.fixture
def paths(tmp_path):
    card = tmp_path / "card"
    return card, card / ".config" / "ticos" / "ticos.db", tmp_path / "in", tmp_path / "in" / "ticos-fallback.db"


async def open_card(paths, **kw):
    card, _, internal, _ = paths
    kw.setdefault("probe_interval", 0.05)
    return await open_store("external", tf_root=card, internal_dir=internal, require_mount=False, **kw)


async def make_card_fail(store):
    """The card connection can no longer grow its file: the next batch falls back."""
    await store._db.execute("PRAGMA max_page_count = 1")
    store.add_message(role="system", content="x" * 8000, item_id="big")


def add(store, ids, start, stop):
    for i in range(start, stop):
        ids.append(store.add_message(role="user", content=f"m{i}", item_id=f"i{i}"))
        store.log_event("e", event_id=f"e{i}")


async def test_a_merge_cut_between_card_commit_and_fallback_delete_adds_nothing_twice(paths, monkeypatch):
    _card, card_db, _, fallback_db = paths
    drops, cut = [], []
    real_drop = merge_module.Merger._drop

    async def drop_fails_once(self, marks):
        drops.append(dict(marks))
        if "events" in marks and len(cut) == 0:  # the card committed the chunk; the delete "fails"
            cut.append(dict(marks))
            raise sqlite3.OperationalError("disk I/O error")
        return await real_drop(self, marks)

    monkeypatch.setattr(merge_module.Merger, "_drop", drop_fails_once)
    store = await open_card(paths, probe_interval=0.3)
    store._merge_chunk = 10
    ids: list[str] = []
    await make_card_fail(store)
    add(store, ids, 0, 30)
    await store.flush()
    assert store.health()["mode"] == "internal"
    await until(lambda: cut, what="the cut chunk")
    await until(lambda: store.health()["mode"] == "external", what="merged on the second try")
    await store.close()
    assert drops[drops.index(cut[0]) + 1] == cut[0]  # the retry first removed what the card had
    got = rows(card_db)
    assert [r[1] for r in got] == ["x" * 8000] + [f"m{i}" for i in range(30)]
    assert [r[0] for r in got[1:]] == ids
    assert rows(card_db, "SELECT COUNT(*) FROM events") == [(30,)]
    assert rows(fallback_db, "SELECT COUNT(*) FROM messages") == [(0,)]


async def test_a_merge_cut_and_a_restart_adds_nothing_twice(paths, monkeypatch):
    _card, card_db, _, fallback_db = paths
    real_drop = merge_module.Merger._drop

    async def drop_fails(self, marks):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(merge_module.Merger, "_drop", drop_fails)
    store = await open_card(paths, probe_interval=0.05)
    store._merge_chunk = 25  # the 21 messages and 4 events
    ids: list[str] = []
    await make_card_fail(store)
    add(store, ids, 0, 20)
    await store.flush()
    await until(lambda: store.health()["card"]["probes"] >= 4, what="several tries")
    h = store.health()
    await store.close()  # killed, in effect, with a chunk on the card and still in the fallback
    assert h["mode"] == "internal" and h["fallback_rows"] == 41
    assert len(rows(card_db)) == 21  # one chunk (the retries stopped at the marks, adding nothing)
    assert rows(card_db, "SELECT COUNT(*) FROM events") == [(4,)]
    monkeypatch.setattr(merge_module.Merger, "_drop", real_drop)
    store = await open_card(paths)
    await until(lambda: store.health()["state"] == "ok", what="merged at restart")
    await store.close()
    got = rows(card_db)
    assert [r[0] for r in got[1:]] == ids and len(got) == 21
    assert rows(card_db, "SELECT event_id FROM events ORDER BY id") == [(f"e{i}",) for i in range(20)]
    assert rows(fallback_db, "SELECT COUNT(*) FROM messages") == [(0,)]


async def test_collisions_copies_calls_memories_and_events_merge_by_their_rules(paths, monkeypatch):
    card, card_db, internal, fallback_db = paths
    store = await open_card(paths)
    first = store.add_message(role="user", content="on the card", item_id="u1", session_id="s")
    second = store.add_message(role="assistant", content="", item_id="a1", session_id="s", status="pending")
    store.record_call(call_id="c1", name="motion", arguments='{"motion_tag":"wave"}')
    store.record_call(call_id="c2", name="emotion", arguments="{}")
    store.set_call_outcome("c2", "completed", {"ok": True})
    store.add_memory("long_term", "on the card")
    store.log_event("card.event")
    await store.close()
    # An earlier run that found no card (the card path not a mount point): its fallback
    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD", raising=False)
    store = await open_store("external", tf_root=card, internal_dir=internal, require_mount=True)
    assert store.health()["mode"] == "internal"
    store.set_call_outcome("c1", "completed", {"done": 1})        # the outcome of a card call
    store.record_call(call_id="c2", name="emotion", arguments="{}")  # a late record of a finished one
    store.record_call(call_id="c3", name="motion", arguments="{}")
    store.add_memory("short_term", "in the fallback")
    store.log_event("fallback.event")
    await store.close()
    row = rows(card_db, f"SELECT * FROM messages WHERE id = '{second}'")[0]
    conn = sqlite3.connect(fallback_db)
    with conn:  # by hand: a different message with the card's id, and a copy of a card row, updated
        conn.execute("INSERT INTO messages (id, role, content, item_id, user_id, datetime, session_id, status) "
                     "VALUES (?, 'user', 'another run, same id', 'u9', 'nobody', '2001-01-01 00:00:00', 't', "
                     "'completed')", (first,))
        conn.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     row[:2] + ("finished while the card was away",) + row[3:7] + ("completed", row[8]))
    conn.close()
    store = await open_card(paths)
    await until(lambda: store.health()["state"] == "ok", what="merged")
    await store.close()
    got = rows(card_db, "SELECT id, role, content, status FROM messages ORDER BY rowid")
    assert got[:2] == [(first, "user", "on the card", "completed"),
                       (second, "assistant", "finished while the card was away", "completed")]
    assert len(got) == 3 and got[2][1:] == ("user", "another run, same id", "completed")
    assert int(got[2][0]) > int(second)  # a new id, after everything on the card
    calls = {r[0]: r[1:] for r in rows(card_db, "SELECT call_id, name, arguments, status, result FROM function_calls")}
    assert calls["c1"] == ("motion", '{"motion_tag":"wave"}', "completed", json.dumps({"done": 1}))
    assert calls["c2"] == ("emotion", "{}", "completed", json.dumps({"ok": True}))  # the outcome stays
    assert calls["c3"][:3] == ("motion", "{}", "received")
    assert rows(card_db, "SELECT type, content FROM memories ORDER BY id") == [
        ("long_term", "on the card"), ("short_term", "in the fallback")]
    assert rows(card_db, "SELECT type FROM events ORDER BY id") == [("card.event",), ("fallback.event",)]


async def test_rowids_reused_after_a_fallback_emptied_are_never_taken_for_merged(paths, monkeypatch):
    """Marks left on the card (their removal failed) must not swallow the next fallback's rows,
    whose rowids start again at 1: a table emptied by a merge gets a new epoch."""
    _, card_db, _, fallback_db = paths

    async def keep_marks(self):
        return None

    monkeypatch.setattr(merge_module.Merger, "forget_marks", keep_marks)
    store = await open_card(paths)
    ids: list[str] = []
    for round_ in range(3):
        await make_card_fail(store)
        add(store, ids, round_ * 10, round_ * 10 + 10)
        await store.flush()
        assert store.health()["mode"] == "internal"
        await until(lambda: store.health()["mode"] == "external", what=f"return {round_}")
    await store.close()
    got = [r for r in rows(card_db) if r[1].startswith("m")]
    assert [r[0] for r in got] == ids and len(ids) == 30
    assert rows(fallback_db, "SELECT MAX(rowid) FROM messages") == [(None,)]


async def test_event_retention_on_the_fallback_keeps_its_newest_row(tmp_path, monkeypatch):
    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD", raising=False)
    store = await open_store("external", tf_root=tmp_path / "nocard", internal_dir=tmp_path / "in",
                             event_retention_days=1)
    for i in range(5):
        store.log_event("old", event_id=str(i), ts=time.time() - 3 * 86400)
    await store.flush()
    store._next_prune = 0
    store.log_event("old", event_id="5", ts=time.time() - 3 * 86400)
    await until(lambda: store.health()["events_pruned"] >= 5, what="pruned")
    await asyncio.sleep(0.1)
    await store.close()
    assert rows(tmp_path / "in" / "ticos-fallback.db", "SELECT event_id FROM events") == [("5",)]
