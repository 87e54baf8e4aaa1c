"""The TF card: only a real mount point is a card, and every commit on it is synced."""

from __future__ import annotations

import sqlite3

import pytest
from storage_helpers import tiny_tmpfs

from ticos_agent.storage import SaveMode, open_store
from ticos_agent.storage.location import ALLOW_UNMOUNTED_ENV, card_problem, is_mount_point


@pytest.fixture(autouse=True)
def _honest_default(monkeypatch):
    monkeypatch.delenv(ALLOW_UNMOUNTED_ENV, raising=False)


async def pragma(store, name):
    async with store._db.execute(f"PRAGMA {name}") as cursor:
        return (await cursor.fetchone())[0]


async def test_missing_card_root_is_never_created_and_health_says_not_mounted(tmp_path):
    root = tmp_path / "media" / "pi" / "CARD"  # the card is not inserted
    store = await open_store("external", tf_root=root, internal_dir=tmp_path / "in")
    store.add_message(role="user", content="hi", item_id="u")
    await store.close()
    h = store.health()
    assert (h["state"], h["mode"], h["requested"]) == ("degraded", "internal", "external")
    assert h["reason"] == f"TF card not mounted at {root}"
    assert not (tmp_path / "media").exists()
    fallback = sqlite3.connect(tmp_path / "in" / "ticos-fallback.db")
    assert fallback.execute("SELECT content FROM messages").fetchall() == [("hi",)]
    assert not (tmp_path / "in" / "ticos.db").exists()  # INTERNAL mode's own database is not the fallback


async def test_plain_directory_on_the_system_disk_is_not_a_card(tmp_path, caplog):
    root = tmp_path / "CARD"
    root.mkdir()  # left behind by an automounter, or the card not mounted yet
    store = await open_store(SaveMode.EXTERNAL, tf_root=root, internal_dir=tmp_path / "in")
    assert store.location.mode is SaveMode.INTERNAL
    assert store.health()["reason"] == f"TF card not mounted at {root}"
    await store.close()
    assert list(root.iterdir()) == []
    assert any(f"TF card not mounted at {root}" in r.getMessage() for r in caplog.records)


async def test_real_mount_is_used_and_syncs_every_commit(tmp_path):
    with tiny_tmpfs(tmp_path / "card", "4m") as card:
        assert is_mount_point(card) and card_problem(card) is None
        store = await open_store("external", tf_root=card, internal_dir=tmp_path / "in")
        assert store.health()["state"] == "ok" and store.location.mode is SaveMode.EXTERNAL
        assert await pragma(store, "synchronous") == 2  # FULL: a commit is on the card when counted
        assert await pragma(store, "journal_mode") == "wal"
        store.add_message(role="user", content="on the card", item_id=None)
        await store.close()
        db = card / ".config" / "ticos" / "ticos.db"
        assert sqlite3.connect(db).execute("SELECT content FROM messages").fetchall() == [("on the card",)]


async def test_internal_database_keeps_synchronous_normal(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    assert await pragma(store, "synchronous") == 1
    await store.close()


async def test_fallback_from_the_card_uses_normal_sync(tmp_path):
    store = await open_store("external", tf_root=tmp_path / "card", internal_dir=tmp_path / "in", require_mount=False)
    assert await pragma(store, "synchronous") == 2
    await store._db.execute("PRAGMA max_page_count = 1")
    store.add_message(role="user", content="y" * 10000, item_id=None)
    await store.flush()
    assert store.health()["mode"] == "internal" and await pragma(store, "synchronous") == 1
    await store.close()


@pytest.mark.parametrize("how", ["argument", "environment"])
async def test_tests_and_development_may_use_a_plain_directory(tmp_path, monkeypatch, how):
    kwargs = {}
    if how == "argument":
        kwargs["require_mount"] = False
    else:
        monkeypatch.setenv(ALLOW_UNMOUNTED_ENV, "1")
    store = await open_store("external", tf_root=tmp_path / "card", internal_dir=tmp_path / "in", **kwargs)
    assert store.health()["state"] == "ok" and store.location.mode is SaveMode.EXTERNAL
    await store.close()
    assert (tmp_path / "card" / ".config" / "ticos" / "ticos.db").is_file()


async def test_require_mount_true_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOW_UNMOUNTED_ENV, "1")
    store = await open_store("external", tf_root=tmp_path, internal_dir=tmp_path / "in", require_mount=True)
    assert store.location.mode is SaveMode.INTERNAL and "not mounted" in store.health()["reason"]
    await store.close()


def test_mount_point_checks(tmp_path):
    assert is_mount_point("/") and is_mount_point("/proc")
    assert not is_mount_point(tmp_path)
    assert card_problem(tmp_path / "nope") == f"TF card not mounted at {tmp_path / 'nope'}"
    assert card_problem(tmp_path, is_mounted=lambda p: True) is None


async def test_a_folder_inside_a_mounted_card_is_accepted_like_ticos_client(tmp_path, monkeypatch):
    """ticos-client's tf_root_dir could be any folder on the card, not only its mount point."""
    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD", raising=False)
    with tiny_tmpfs(tmp_path / "card", "4m") as card:
        folder = card / "robot-data"
        folder.mkdir()
        store = await open_store("external", tf_root=folder, internal_dir=tmp_path / "in")
        try:
            assert store.location.mode is SaveMode.EXTERNAL and store.health()["state"] == "ok"
            assert str(store.location.path).startswith(str(folder))
        finally:
            await store.close()


async def test_card_connection_reopened_after_a_lock_keeps_syncing_every_commit(tmp_path, monkeypatch):
    import asyncio

    from ticos_agent.storage import schema

    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 200)
    card = tmp_path / "card"
    card.mkdir()
    store = await open_store("external", tf_root=card, internal_dir=tmp_path / "in", require_mount=False)
    try:
        assert await pragma(store, "synchronous") == 2  # FULL
        store.add_memory("short_term", "x")
        await store.flush()
        other = sqlite3.connect(store.location.path, isolation_level=None, timeout=0.1)
        other.execute("BEGIN IMMEDIATE")  # another reader/writer holds the card database
        store.add_memory("short_term", "y")
        try:
            await asyncio.wait_for(store.flush(), 3)
        except Exception:
            pass
        other.execute("COMMIT")
        other.close()
        await store.flush()
        assert store.location.mode is SaveMode.EXTERNAL
        assert await pragma(store, "synchronous") == 2  # still FULL after the reopen
    finally:
        await store.close()
