"""Helpers for the storage tests: ticos-client databases made by hand, a tiny real mount."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

SDK_V1 = """
CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, item_id TEXT,
                       user_id TEXT DEFAULT 'nobody', datetime TEXT NOT NULL);
CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, content TEXT NOT NULL,
                       user_id TEXT DEFAULT 'nobody', datetime TEXT NOT NULL);
CREATE TABLE db_version (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, updated_at TEXT NOT NULL);
INSERT INTO db_version (version, updated_at) VALUES (1, '2024-05-01 10:00:00');
"""
SDK_V0 = """
CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, datetime TEXT NOT NULL);
CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, content TEXT NOT NULL,
                       datetime TEXT NOT NULL);
"""
# ids as the SDK made them: str(int(time.time())), +1 on collision; one far in the future.
V1_MESSAGES = [
    ("1714557600", "user", "hello robot", "item_1", "alice", "2024-05-01 10:00:00"),
    ("1714557601", "assistant", "hello alice", "item_2", "alice", "2024-05-01 10:00:00"),
    ("1714557602", "system", "be kind", None, "nobody", "2024-05-01 10:00:01"),
    ("9999999990", "user", "from a clock set far ahead", "item_3", "nobody", "2024-05-01 10:00:02"),
]
V1_MEMORIES = [
    ("short_term", "alice likes waving", "alice", "2024-05-01 10:01:00"),
    ("long_term", "alice's birthday is in May", "alice", "2024-05-01 10:02:00"),
]


def make_sdk_v1(path: Path) -> Path:
    """A ticos-client version-1 database with rows (rollback journal, as the SDK left it)."""
    conn = sqlite3.connect(path)
    conn.executescript(SDK_V1)
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", V1_MESSAGES)
    conn.executemany("INSERT INTO memories (type, content, user_id, datetime) VALUES (?, ?, ?, ?)", V1_MEMORIES)
    conn.commit()
    conn.close()
    return path


def make_sdk_v0(path: Path) -> Path:
    """A ticos-client version-0 database: no db_version, no item_id/user_id columns."""
    conn = sqlite3.connect(path)
    conn.executescript(SDK_V0)
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)",
                     [(m[0], m[1], m[2], m[5]) for m in V1_MESSAGES])
    conn.executemany("INSERT INTO memories (type, content, datetime) VALUES (?, ?, ?)",
                     [(m[0], m[1], m[3]) for m in V1_MEMORIES])
    conn.commit()
    conn.close()
    return path


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str, *options: str):
    """Mount a real tmpfs of ``size`` at ``where`` (skips the test when mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    opts = ",".join((f"size={size}",) + options)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``directory`` -> (bytes, mtime_ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir()) if p.is_file()}


def can_run_as_nobody() -> bool:
    return os.geteuid() == 0


class LoopCard:
    """A real filesystem image loop-mounted at ``root``: a TF card that can be pulled
    (``umount -l``), put back, and remounted read-only."""

    def __init__(self, image: Path, root: Path, fstype: str):
        self.image, self.root, self.fstype = image, root, fstype

    @property
    def db(self) -> Path:
        return self.root / ".config" / "ticos" / "ticos.db"

    def _run(self, *cmd: str) -> None:
        done = subprocess.run(list(cmd), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")

    def mounted(self) -> bool:
        return os.path.ismount(self.root)

    def attached(self) -> bool:
        """A loop device still holds the image (a lazily unmounted filesystem still in use)."""
        done = subprocess.run(["losetup", "-j", str(self.image)], capture_output=True, text=True)
        return bool(done.stdout.strip())

    def pull(self) -> None:
        self._run("umount", "-l", str(self.root))

    def put_back(self, timeout: float = 10.0, read_only: bool = False) -> None:
        """Mount the image again, once the old (detached) filesystem is released: mounting it
        twice at once would be two writers on one disk."""
        import time

        deadline = time.monotonic() + timeout
        while self.attached():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.image} is still attached to a loop device")
            time.sleep(0.02)
        if not read_only:
            self._run("mount", "-o", "loop", str(self.image), str(self.root))
            return
        # A writable loop device mounted read-only, so that a remount,rw can follow; the
        # device goes away with its mount ("losetup -d" of a busy device clears it lazily).
        dev = subprocess.run(["losetup", "-f", "--show", str(self.image)], capture_output=True,
                             text=True, check=True).stdout.strip()
        try:
            self._run("mount", "-o", "ro", dev, str(self.root))
        finally:
            subprocess.run(["losetup", "-d", dev], capture_output=True)

    def remount(self, how: str) -> None:
        self._run("mount", "-o", f"remount,{how}", str(self.root))


def _mkfs(fstype: str, image: Path) -> list[str]:
    if fstype == "ext4":
        return ["mkfs.ext4", "-q", "-F", str(image)]
    if fstype == "vfat":
        return ["mkfs.vfat", str(image)]
    return ["mkfs.exfat", str(image)]


@contextlib.contextmanager
def loop_card(where: Path, size_mb: int = 32, fstype: str = "ext4"):
    """A ``LoopCard`` (skips the test when the image cannot be made or mounted here, e.g. no
    CAP_SYS_ADMIN in a container, or a kernel without that filesystem)."""
    where.mkdir(parents=True, exist_ok=True)
    image, root = where / f"card-{fstype}.img", where / "media" / "CARD"
    root.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    try:
        made = subprocess.run(_mkfs(fstype, image), capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip(f"no mkfs for {fstype} here")
    if made.returncode != 0:
        pytest.skip(f"cannot make a {fstype} image: {made.stderr.strip()}")
    done = subprocess.run(["mount", "-o", "loop", str(image), str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount a {fstype} image here (needs root/CAP_SYS_ADMIN and the "
                    f"kernel's {fstype}): {done.stderr.strip()}")
    card = LoopCard(image, root, fstype)
    try:
        yield card
    finally:
        while card.mounted():
            if subprocess.run(["umount", "-l", str(root)], capture_output=True).returncode != 0:
                break
