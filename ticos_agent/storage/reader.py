"""The offline reader: open a database read-only without ever changing it.

For a person inspecting a TF card on another computer (``ticos-agent inspect``). Nothing next
to the database is ever created, written or touched (bytes and mtimes stay as they were):

* no sidecar file (``-wal``, ``-shm``, ``-journal``) next to it: the file is opened through a
  ``file:<path>?mode=ro`` URI, with ``immutable=1`` for a WAL-mode database (``mode=ro`` alone
  would create ``-wal``/``-shm`` files next to it; nothing is writing, so the main file is
  complete);
* any sidecar file present (a card pulled while the agent was writing, a crashed writer, a
  live store): SQLite would create or rewrite the ``-shm`` index, or refuse a hot
  ``-journal`` ("attempt to write a readonly database"). The database and its sidecars are
  copied into a private temporary directory instead; the copy is recovered there (WAL rows
  checkpointed, a hot journal rolled back, exactly as SQLite would on the card) and then
  opened read-only. ``note`` says so; the temporary copy is removed by ``close()``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from ..errors import StorageError

log = logging.getLogger(__name__)

SIDECARS = ("-wal", "-shm", "-journal")
MMAP_BYTES = 1 << 30
_COPY_ATTEMPTS = 5


class ReadonlyConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` that also tells how it was opened.

    ``path``: the database file asked for; ``immutable``: opened with ``immutable=1``;
    ``note``: how and why, or ``None`` for a plain ``mode=ro`` open; ``copy_path``: the
    temporary copy actually open (``None`` when the file itself is open).
    """

    path: Path
    immutable: bool = False
    note: str | None = None
    copy_path: Path | None = None
    _cleanup: Callable[[], object] | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._cleanup is not None:
                self._cleanup()


def twin(conn: ReadonlyConnection) -> ReadonlyConnection:
    """A second read-only connection to what ``conn`` reads (the file, or its recovered copy),
    for a scan on another thread; close it before ``conn`` (a temporary copy goes with ``conn``)."""
    other = _connect(conn.copy_path or conn.path, conn.immutable)
    other.path, other.immutable, other.note, other.copy_path = conn.path, conn.immutable, conn.note, conn.copy_path
    return other


def _is_wal_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18] == 2


def _connect(path: Path, immutable: bool) -> ReadonlyConnection:
    uri = f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, factory=ReadonlyConnection, check_same_thread=False)
    try:
        # Pages through the OS's mapping instead of one read() each: a scan of a card that is
        # not in the page cache yet reads ahead (about 4x faster cold, 1.5x warm).
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def _stamp(paths: list[Path]) -> list[tuple[str, int | None, int | None]]:
    out: list[tuple[str, int | None, int | None]] = []
    for p in paths:
        try:
            st = p.stat()
            out.append((p.name, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((p.name, None, None))
    return out


def _sidecars(path: Path) -> list[Path]:
    return [p for p in (path.with_name(path.name + s) for s in SIDECARS) if p.exists()]


def _copy_set(path: Path, into: Path) -> Path:
    """Copy ``path`` and the sidecars present now into ``into``; retried when a live writer
    changed them meanwhile (a checkpoint by its last connection removes -wal/-shm: the next
    attempt copies the set as it is then). The last attempt keeps what it could copy, as it
    keeps a set that changed under it: a writer that never pauses must not make a read fail."""
    for attempt in range(_COPY_ATTEMPTS):
        last = attempt == _COPY_ATTEMPTS - 1
        files = [path, *_sidecars(path)]
        before = _stamp(files)
        for old in into.iterdir():
            old.unlink()
        vanished = False
        for src in files:
            try:
                shutil.copyfile(src, into / src.name)
            except FileNotFoundError:
                if src == path:
                    raise
                vanished = True
                if not last:
                    break
        if not vanished and _stamp(files) == before and len(files) == 1 + len(_sidecars(path)):
            break
    return into / path.name


def _recover(path: Path, into: Path) -> tuple[Path, bool]:
    """Copy the set into ``into`` and recover it there as SQLite would on the card (a hot
    journal rolled back, the WAL folded into the main file: closing the last connection
    checkpoints it); returns the copy and whether it is one file now."""
    copy = _copy_set(path, into)
    rw = sqlite3.connect(copy, isolation_level=None)
    try:
        rw.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    finally:
        rw.close()
    return copy, not any(p.name != copy.name for p in into.iterdir())


def _open_copy(path: Path) -> ReadonlyConnection:
    tmp = Path(tempfile.mkdtemp(prefix="ticos-inspect-"))
    try:
        copy, alone = _recover(path, tmp)
        conn = _connect(copy, immutable=alone)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    conn._cleanup = weakref.finalize(conn, shutil.rmtree, str(tmp), True)
    conn.copy_path = copy
    conn.immutable = alone
    return conn


CACHE_KEEP = 3  # recovered copies kept in a cache directory (the most recently used)


def _fingerprint(files: list[Path]) -> str:
    """What tells one state of a database and its sidecars from another: each file's device,
    inode, size and mtime, and the WAL's header and last page (a rewrite within one tick of a
    coarse clock, as on FAT, changes those)."""
    parts: list[str] = []
    for p in files:
        try:
            st = p.stat()
        except FileNotFoundError:  # a live writer's checkpoint removed it: a state of its own
            parts.append(f"{p.name}:absent")
            continue
        parts.append(f"{p.name}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        if p.name.endswith("-wal"):
            try:
                with open(p, "rb") as f:
                    head = f.read(32)
                    f.seek(max(0, st.st_size - 4096))
                    parts.append(hashlib.sha256(head + f.read(4096)).hexdigest())
            except FileNotFoundError:
                parts.append(f"{p.name}:absent")
    return "\n".join(parts)


def _open_cached(path: Path, present: list[Path], cache: Path) -> ReadonlyConnection:
    """The recovered copy kept in ``cache`` while the card's files stay as they are: a big card
    left by a power cut is copied once, not at every look."""
    files = [path, *present]
    key = hashlib.sha256(f"{path}\0{path.stat().st_dev}:{path.stat().st_ino}".encode()).hexdigest()[:20]
    entry = cache / key
    stamp = _fingerprint(files)
    copy = entry / path.name
    try:
        if (entry / "stamp").read_text() == stamp and copy.is_file():
            os.utime(entry)
            conn = _connect(copy, immutable=True)
            conn.copy_path, conn.immutable = copy, True
            return conn
    except (OSError, sqlite3.Error):
        pass
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache))
    try:
        made, alone = _recover(path, work)
        # still being written (a sidecar vanished meanwhile too: no WAL to tell the next state by)
        if not alone or ":absent" in stamp or _fingerprint(files) != stamp:
            raise _NotCached
        (work / "stamp").write_text(stamp)
        shutil.rmtree(entry, ignore_errors=True)
        os.rename(work, entry)
    except _NotCached:
        conn = _connect(made, immutable=alone)
        conn._cleanup = weakref.finalize(conn, shutil.rmtree, str(work), True)
        conn.copy_path, conn.immutable = made, alone
        return conn
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _prune(cache)
    conn = _connect(copy, immutable=True)
    conn.copy_path, conn.immutable = copy, True
    return conn


class _NotCached(Exception):
    pass


def _prune(cache: Path) -> None:
    entries = sorted((p for p in cache.iterdir() if p.is_dir() and "." not in p.name),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[CACHE_KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def _open_as_found(path: Path, present: list[Path], cache: str | os.PathLike[str] | None
                   ) -> tuple[ReadonlyConnection, str | None]:
    if present:
        conn = _open_cached(path, present, Path(cache)) if cache is not None else _open_copy(path)
        names = ", ".join(p.name for p in present)
        kept = f"copy kept in {conn.copy_path.parent}" if cache is not None and conn.copy_path else "temporary copy"
        return conn, f"{names} present next to the database: read from a recovered {kept} so the card stays unchanged"
    immutable = _is_wal_header(path)
    note = "WAL database without -wal/-shm files: opened immutable so no files are created" if immutable else None
    return _connect(path, immutable=immutable), note


def open_readonly(path: str | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None
                  ) -> ReadonlyConnection:
    """Open the database at ``path`` for reading only; never creates or changes a file there.

    Use it with the ``read_*``/``iter_*`` functions of :mod:`ticos_agent.storage.queries`.
    Raises :class:`StorageError` naming the path when the file is missing or is not a
    database. ``cache``: a private directory (on this computer) where the recovered copy of a
    database with sidecar files is kept for the next open while the files stay unchanged (at
    most ``CACHE_KEEP`` copies); without it the copy is removed by ``close()``.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise StorageError(f"cannot open database {path} read-only: no such file")
    present = _sidecars(path)  # (one a live writer removes meanwhile: the copy looks again)
    try:
        conn, note = _open_as_found(path, present, cache)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open database {path} read-only: {exc}") from exc
    conn.path, conn.note = path, note
    if not present:
        conn.immutable = note is not None
    if present:
        log.info("%s: %s", path, note)
    return conn
