"""Opening a database for the writer: directory, card checks, migration, PRAGMAs."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import aiosqlite

from . import schema

MIN_FREE_BYTES = 1 << 20


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


async def connect(path: Path, *, card: bool = False) -> tuple[aiosqlite.Connection, int]:
    """Create the directory, migrate, open; returns the connection and the message-id seed."""

    def _prepare() -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        if card:
            check_card_dir(path.parent)
        return schema.prepare(str(path))

    seed = await asyncio.to_thread(_prepare)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        await db.close()
        raise
    return db, seed
