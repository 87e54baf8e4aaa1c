"""Opening a database for the writer: directory, card checks, migration, PRAGMAs."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import aiosqlite

from . import schema
from .location import card_problem

MIN_FREE_BYTES = 1 << 20
#: The -wal file is truncated back to this size after a checkpoint that emptied it.
JOURNAL_SIZE_LIMIT = 8 << 20


def describe(exc: BaseException) -> str:
    """A short human reason for ``exc``."""
    return f"{type(exc).__name__}: {exc}"


def check_card_dir(directory: Path) -> None:
    """Raise ``OSError`` when the card directory is on a read-only mount or (nearly) full."""
    st = os.statvfs(directory)
    if st.f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, "the card is mounted read-only", str(directory))
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, f"the card is full ({free} bytes free)", str(directory))


def make_dirs_below(root: Path, directory: Path) -> None:
    """Create ``directory`` and its parents up to, but never including, ``root``."""
    rel = directory.relative_to(root)
    current = root
    for part in rel.parts:
        current = current / part
        try:
            current.mkdir()  # no parents: a vanished root raises instead of being re-created
        except FileExistsError:
            if not current.is_dir():
                raise


async def connect(path: Path, *, card: bool = False,
                  card_root: Path | None = None) -> tuple[aiosqlite.Connection, int]:
    """Create the directory, migrate, open; returns the connection and the message-id seed.

    ``card``: the database is on the TF card: checked for a read-only or full mount, and
    every commit is synced (``synchronous=FULL``; a card may be pulled at any moment).
    ``card_root``: the card's mount point, required to still be one; only the directories
    below it are created.
    """
    synchronous = "FULL" if card else "NORMAL"

    def _prepare() -> int:
        if card_root is not None:
            problem = card_problem(card_root)
            if problem:
                raise OSError(errno.ENODEV, problem, str(card_root))
            make_dirs_below(card_root, path.parent)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        if card:
            check_card_dir(path.parent)
        return schema.prepare(str(path), synchronous=synchronous)

    seed = await asyncio.to_thread(_prepare)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
        await db.execute(f"PRAGMA synchronous = {synchronous}")
        await db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    except BaseException:
        await db.close()
        raise
    return db, seed
