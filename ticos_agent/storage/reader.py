"""The offline reader: open a database read-only without ever changing it.

For a person inspecting a TF card on another computer (``ticos-agent inspect``). The database
is opened through a ``file:<path>?mode=ro`` URI, so SQLite cannot write it. Two cases would
still leave traces or fail, and are opened with ``immutable=1`` instead (SQLite then reads
the main file only and creates nothing):

* a WAL-mode database with no ``-wal``/``-shm`` files (cleanly closed): ``mode=ro`` would
  create both files next to it; nothing is writing, so the main file is complete;
* a directory that is not writable (a read-only mount) with a ``-wal`` file: SQLite cannot
  build the shared-memory index. Rows still only in the ``-wal`` are then invisible, and the
  connection says so in ``note`` (and a WARNING is logged).

With a ``-wal`` file in a writable directory, ``mode=ro`` is used so that rows still in the
WAL are read; SQLite may create a ``-shm`` index file then, the database file itself is
never written.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from ..errors import StorageError

log = logging.getLogger(__name__)


class ReadonlyConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` that also tells how it was opened.

    ``path``: the database file; ``immutable``: opened with ``immutable=1``; ``note``: why,
    or ``None`` for a plain ``mode=ro`` open.
    """

    path: Path
    immutable: bool = False
    note: str | None = None


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
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    return conn


def open_readonly(path: str | os.PathLike) -> ReadonlyConnection:
    """Open the database at ``path`` for reading only; never creates or changes a file.

    Use it with the ``read_*`` functions of :mod:`ticos_agent.storage.queries`. Raises
    :class:`StorageError` naming the path when the file is missing or is not a database.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise StorageError(f"cannot open database {path} read-only: no such file")
    wal = path.with_name(path.name + "-wal")
    shm = path.with_name(path.name + "-shm")
    dir_writable = os.access(path.parent, os.W_OK)
    note = None
    if not wal.exists() and not shm.exists() and _is_wal_header(path):
        note = "WAL database without -wal/-shm files: opened immutable so no files are created"
    elif wal.exists() and not dir_writable:
        note = (f"directory {path.parent} is not writable and {wal.name} exists: opened immutable; "
                "rows not yet checkpointed from the -wal file are not shown")
    try:
        conn = _connect(path, immutable=note is not None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path} read-only: {exc}") from exc
    conn.path, conn.immutable, conn.note = path, note is not None, note
    if note and wal.exists():
        log.warning("%s: %s", path, note)
    return conn
