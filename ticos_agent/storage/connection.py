"""Opening a database for the writer: directory, card checks, migration, PRAGMAs, modes.

The data is private to the agent's user whatever the process umask (a library user of
``TicosClient`` typically has 022): folders the store creates are 0700, and the database
file is created 0600 before SQLite opens it, so the ``-wal``/``-shm``/``-journal`` files
SQLite creates next to it get the same 0600 (SQLite copies the main file's mode to them).
An existing database on internal storage (the INTERNAL database or the fallback) whose
file or sidecars are readable by others is made 0600, with one WARNING naming it. Folders
that already exist keep their mode (``~/.config/ticos`` is shared with the voice agent's
``session_config``). On the card nothing existing is changed, and a filesystem without
Unix modes (FAT/exFAT: ``chmod`` is refused or ignored) is never an error.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from ..background import in_thread
from ..errors import describe
from . import fts, schema
from .location import card_problem

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")

MIN_FREE_BYTES = 1 << 20
#: The -wal file is truncated back to this size after a checkpoint that emptied it.
JOURNAL_SIZE_LIMIT = 8 << 20
#: SQLite's automatic checkpoint runs once about this much WAL gathered (its threshold is a
#: page count: this divided by the database's page size). A page the commits rewrite again and
#: again (a table's last page) reaches the database file once per checkpoint, so the more WAL
#: between checkpoints the fewer writes; 4 MiB is what SQLite's default (1000 pages of 4 KiB)
#: kept, and a WAL of that size replays in well under a second after a power cut.
CHECKPOINT_BYTES = 4 << 20


def check_card_dir(directory: Path) -> None:
    """Raise ``OSError`` when the card directory is on a read-only mount or (nearly) full."""
    st = os.statvfs(directory)
    if st.f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, "the card is mounted read-only", str(directory))
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, f"the card is full ({free} bytes free)", str(directory))


def make_dirs_below(root: Path, directory: Path) -> None:
    """Create ``directory`` and its parents up to, but never including, ``root`` (0700)."""
    rel = directory.relative_to(root)
    current = root
    for part in rel.parts:
        current = current / part
        try:
            current.mkdir(mode=PRIVATE_DIR)  # no parents: a vanished root raises, never re-created
        except FileExistsError:
            if not current.is_dir():
                raise


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each 0700 (existing ones are left alone)."""
    missing = []
    current = directory
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    if not current.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(current))
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            if not path.is_dir():
                raise


def create_private_file(path: Path, *, tighten: bool) -> None:
    """Create the database file 0600 when missing (SQLite gives its sidecars the same mode);
    with ``tighten``, make an existing file and its sidecars 0600 when others can read them."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        if tighten:
            for file in [path] + [path.with_name(path.name + s) for s in SIDECAR_SUFFIXES]:
                _tighten(file)
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)  # exactly 0600, whatever the umask took away
    except OSError:
        pass  # FAT/exFAT: no Unix modes; the mount options decide
    finally:
        os.close(fd)


def _tighten(path: Path) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or not mode & 0o077:
        return
    try:
        os.chmod(path, PRIVATE_FILE)
    except OSError as exc:
        log.warning("storage: %s is readable by other users (%04o) and could not be made private: %s",
                    path, mode, exc.strerror or exc)
        return
    log.warning("storage: %s was readable by other users (%04o); made it private (0600)", path, mode)


def _index(path: Path) -> None:
    """Make the search index when missing (see :mod:`.fts`); never fails an open."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=schema.BUSY_TIMEOUT_MS / 1000)
    try:
        fts.ensure_index(conn)
    except sqlite3.Error as exc:
        log.warning("storage: cannot make the search index in %s: %s (searches scan instead)", path, describe(exc))
    finally:
        conn.close()


async def connect(path: Path, *, card: bool = False, card_root: Path | None = None,
                  fallback: bool = False) -> tuple[aiosqlite.Connection, int]:
    """Create the directory, migrate, open; returns the connection and the message-id seed.

    ``card``: the database is on the TF card: checked for a read-only or full mount, and
    every commit is synced (``synchronous=FULL``; a card may be pulled at any moment).
    ``card_root``: the card's mount point, required to still be one; only the directories
    below it are created. ``fallback``: the database is EXTERNAL mode's fallback (its merge
    bookkeeping is set up, see :mod:`.merge`). Folders created are 0700 and a new database
    file 0600; off the card, an existing file others can read is made 0600.
    """
    synchronous = "FULL" if card else "NORMAL"

    def _prepare() -> int:
        if card_root is not None:
            problem = card_problem(card_root)
            if problem:
                raise OSError(errno.ENODEV, problem, str(card_root))
            make_dirs_below(card_root, path.parent)
        else:
            make_private_dirs(path.parent)
        if card:
            check_card_dir(path.parent)
        create_private_file(path, tighten=not card)
        seed = schema.prepare(str(path), synchronous=synchronous)
        _index(path)
        if fallback:
            from .merge import prepare_fallback

            prepare_fallback(str(path))
        return seed

    seed = await in_thread(_prepare)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
        await db.execute(f"PRAGMA synchronous = {synchronous}")
        await db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        async with db.execute("PRAGMA page_size") as cursor:
            row = await cursor.fetchone()
        page_size = int(row[0]) if row else 4096
        await db.execute(f"PRAGMA wal_autocheckpoint = {max(100, CHECKPOINT_BYTES // page_size)}")
    except BaseException:
        await db.close()
        raise
    return db, seed


@asynccontextmanager
async def transaction(db: aiosqlite.Connection) -> AsyncIterator[None]:
    """``BEGIN``, then ``COMMIT`` what the block did, or ``ROLLBACK`` when it (or the commit)
    raises; the exception goes on."""
    await db.execute("BEGIN")
    try:
        yield
        await db.execute("COMMIT")
    except BaseException:
        try:
            await db.execute("ROLLBACK")
        except Exception:
            pass
        raise
