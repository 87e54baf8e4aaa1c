"""Helpers for the storage tests: ticos-client databases made by hand, a tiny real mount."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

SDK_V1 = """
CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, item_id TEXT, user_id TEXT DEFAULT 'nobody', datetime TEXT NOT NULL);
CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, content TEXT NOT NULL, user_id TEXT DEFAULT 'nobody', datetime TEXT NOT NULL);
CREATE TABLE db_version (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, updated_at TEXT NOT NULL);
INSERT INTO db_version (version, updated_at) VALUES (1, '2024-05-01 10:00:00');
"""
SDK_V0 = """
CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, datetime TEXT NOT NULL);
CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, content TEXT NOT NULL, datetime TEXT NOT NULL);
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
