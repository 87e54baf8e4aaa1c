"""The data is private to the agent's user: 0700 folders, 0600 files, whatever the umask."""

from __future__ import annotations

import logging
import os
import stat

import pytest
from storage_helpers import loop_card, make_sdk_v1

from ticos_agent.storage import open_store
from ticos_agent.storage.location import ALLOW_UNMOUNTED_ENV


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # a library user's usual umask
    yield
    os.umask(old)


async def write_some(store):
    for i in range(20):
        store.add_message(role="user", content=f"m{i}", item_id=None)
        store.log_event("e")
    await store.flush()


async def test_internal_database_folders_and_sidecars_are_private(tmp_path, umask_022):
    folder = tmp_path / "home" / ".config" / "ticos"
    os.chmod(tmp_path, 0o755)
    store = await open_store("internal", internal_dir=folder)
    await write_some(store)
    files = {p.name: mode(p) for p in folder.iterdir()}
    await store.close()
    assert files == {"ticos.db": 0o600, "ticos.db-wal": 0o600, "ticos.db-shm": 0o600, "ticos.db.pending": 0o600}
    for created in (folder, folder.parent, folder.parent.parent):
        assert mode(created) == 0o700, created
    assert mode(tmp_path) == 0o755  # what existed before keeps its mode


async def test_card_and_fallback_files_are_private(tmp_path, umask_022, monkeypatch):
    monkeypatch.delenv(ALLOW_UNMOUNTED_ENV, raising=False)
    internal = tmp_path / "in"
    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=internal, probe_interval=0.1)
        await write_some(store)
        folder = card.db.parent
        on_card = {p.name: mode(p) for p in folder.iterdir()}
        card_dirs = (mode(folder), mode(folder.parent))
        card.pull()
        await write_some(store)
        fallback = {p.name: mode(p) for p in internal.iterdir()}
        await store.close()
    assert on_card == {"ticos.db": 0o600, "ticos.db-wal": 0o600, "ticos.db-shm": 0o600}
    assert card_dirs == (0o700, 0o700)
    assert fallback == {"ticos-fallback.db": 0o600, "ticos-fallback.db-wal": 0o600,
                        "ticos-fallback.db-shm": 0o600, "ticos-fallback.db.pending": 0o600}
    assert mode(internal) == 0o700


async def test_existing_readable_internal_files_are_made_private_and_logged(tmp_path, umask_022, caplog):
    db = make_sdk_v1(tmp_path / "ticos.db")  # as ticos-client left it: 0644
    (tmp_path / "ticos.db-journal").write_bytes(b"")
    os.chmod(tmp_path / "ticos.db-journal", 0o644)
    assert mode(db) == 0o644
    store = await open_store("internal", internal_dir=tmp_path)
    await write_some(store)
    await store.close()
    assert mode(db) == 0o600
    assert all(mode(p) == 0o600 for p in tmp_path.iterdir() if p.name.startswith("ticos.db"))
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "private" in r.getMessage()]
    assert any(str(db) in m and "0644" in m for m in logged), logged


async def test_existing_files_on_the_card_are_left_as_they_are(tmp_path, umask_022):
    card = tmp_path / "card"
    db = card / ".config" / "ticos" / "ticos.db"
    db.parent.mkdir(parents=True)
    make_sdk_v1(db)
    store = await open_store("external", tf_root=card, internal_dir=tmp_path / "in", require_mount=False)
    assert store.health()["mode"] == "external"
    await store.close()
    assert mode(db) == 0o644  # another computer's user may need to read the card


async def test_a_filesystem_without_unix_modes_is_not_an_error(tmp_path, umask_022, monkeypatch):
    """FAT/exFAT refuse (or ignore) chmod: the store opens and writes all the same."""
    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refused)
    monkeypatch.setattr(os, "chmod", refused)
    make_sdk_v1(tmp_path / "ticos.db")
    store = await open_store("internal", internal_dir=tmp_path)
    await write_some(store)
    assert store.health()["state"] == "ok"
    await store.close()
    store = await open_store("external", tf_root=tmp_path / "card", internal_dir=tmp_path / "in",
                             require_mount=False)
    await write_some(store)
    assert store.health()["state"] == "ok" and store.health()["mode"] == "external"
    await store.close()


@pytest.mark.parametrize("fstype", ["vfat", "exfat"])
async def test_a_real_fat_card_is_used(tmp_path, umask_022, monkeypatch, fstype):
    monkeypatch.delenv(ALLOW_UNMOUNTED_ENV, raising=False)
    with loop_card(tmp_path, fstype=fstype) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=tmp_path / "in")
        await write_some(store)
        assert store.health()["state"] == "ok" and store.health()["mode"] == "external"
        await store.close()
