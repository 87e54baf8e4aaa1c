"""The pending file: what waits for its commit, kept where a SIGKILL cannot take it.

Event-log lines, and a user's message while it has no words, wait up to ``event_log_delay``
(2 s) for their commit, so that a voice turn is one commit (see :mod:`.policy`). So that a
SIGKILL still loses none of them that arrived more than ``LOSS_BOUND`` (1 s) before it, a loop
timer (``Store._spill``, not the writer task: a commit waiting for a lock must not hold it back)
copies what is not committed, the batch being committed included, to a small file
``SPILL_AFTER`` seconds after the oldest of it arrived: ``<database name>.pending`` in the
internal storage folder (beside the fallback database when the store is on the TF card, so the
card is not written for it). One ``pwrite`` at offset 0 of a few hundred bytes, never synced:
the page cache outlives the process. After each commit the file holds exactly what is still
not committed (it is marked empty, or written again), so it never holds much that is
committed. The kernel writes its page back every ~30 s: about one 4 KiB page per half minute
of talk (``bench/sd_writes.py``), not one per turn.

When a store opens it reads the file (new message ids start above the ones it holds), and its
writer queues, first, what the database lacks (:func:`missing`: a line is known by its time,
type and event id among the newest lines, a message by its id); they commit like any record
(a row the database rejects is skipped alone), and the file stays as it was until they did.

One store at a time owns the file (an exclusive ``flock``, released by the kernel however the
process ends): ``ticos-agent memory ...`` opening a second store on the folder while the agent
runs neither reads nor writes it.

What this does not promise: the file is never synced, so a power cut may lose its lines (on
the TF card, whose commits are synced, a pulled plug keeps the 2 s bound for them), and while
more than ``MAX_SPILL`` records wait (writes failing for a while) it is not written.

Format: ``TICOS-PENDING 1 <length>\\n`` then ``length`` bytes of JSON (ASCII), ``{"events":
[rows], "messages": [rows]}`` (the rows as the writer's statements take them); length 0 is
empty.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import describe
from .connection import PRIVATE_FILE, make_private_dirs
from .schema import EVENT_LOG, id_number
from .writes import ID_BATCH, SQL_ADD_MESSAGE, EventRow, Params

log = logging.getLogger(__name__)

#: How long after the oldest waiting record arrived the file is written (seconds).
SPILL_AFTER = 0.8
#: Beyond this many waiting records (an outage: writes failing) the file is not written.
MAX_SPILL = 2000
#: A file that says it holds more than this is not read (a pending file holds a few KB).
MAX_FILE = 16 << 20
_MAGIC = b"TICOS-PENDING 1 "
_EMPTY = _MAGIC + b"0\n"
SQL_RESTORE_MESSAGE = SQL_ADD_MESSAGE.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)


def pending_path(database: Path) -> Path:
    """Where the pending file of ``database`` (on internal storage) lives: beside it."""
    return database.with_name(f"{database.name}.pending")


class PendingFile:
    """The pending file of one store, held with an exclusive ``flock`` while the store is
    open: a second store on the same folder (``ticos-agent memory ...`` while the agent runs)
    neither reads nor writes it until it has it (:meth:`take_over`); the kernel releases the
    lock when the process dies, however it dies. Blocking calls of a few hundred bytes into
    the page cache, made on the event loop. A file that cannot be opened is logged once and
    never tried again; a failed write is logged once and the next write tries again."""

    def __init__(self, path: Path):
        self.path = path
        self.holds = False  # it has records that may not be committed yet
        self._fd: int | None = None
        self._failed = False
        self._open()

    def _open(self, quiet: bool = False) -> bool:
        try:
            make_private_dirs(self.path.parent)  # on a card robot the internal folder may be new
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW, PRIVATE_FILE)
        except OSError as exc:
            self._fail(exc)
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{self.path} is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _still_there(fd, self.path):  # its owner removed it as it let go: try again later
                raise BlockingIOError
        except BlockingIOError:
            os.close(fd)
            if not quiet:
                log.info("storage: %s belongs to another store open on this folder (the agent, or one that is "
                         "stopping): left to it", self.path)
            return False
        except OSError as exc:
            os.close(fd)
            self._fail(exc)
            return False
        self._fd = fd
        return True

    def _fail(self, exc: BaseException) -> None:
        if not self._failed:
            log.warning("storage: cannot use %s (%s): records waiting for their commit are not kept from a "
                        "SIGKILL", self.path, exc)
        self._failed = True

    def take_over(self) -> tuple[list[EventRow], list[Params]] | None:
        """For a store that found the file held by another: own it once that one let it go
        (it stopped, or was killed) and return what it left there, for this store to put
        back; ``None`` while the file is not this store's."""
        if self._fd is not None or self._failed or not self._open(quiet=True):
            return None
        return self.take()

    def write(self, events: list[EventRow], messages: list[Params]) -> None:
        if self._fd is None:
            return
        try:  # ASCII: a lone surrogate from the wire is escaped, not an encoding error
            payload = json.dumps({"events": events, "messages": messages}, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:  # a value JSON cannot hold (the database may still take it)
            log.warning("storage: not written to %s: %s", self.path, exc)
            return
        if self._put(_MAGIC + str(len(payload)).encode() + b"\n" + payload):
            self.holds = True

    def clear(self) -> None:
        if self.holds and self._put(_EMPTY):
            self.holds = False

    def _put(self, data: bytes) -> bool:
        if self._fd is None:
            return False
        try:
            os.pwrite(self._fd, data, 0)
        except OSError as exc:
            self._fail(exc)
            return False
        if self._failed:
            log.info("storage: writing %s works again", self.path)
            self._failed = False
        return True

    def take(self) -> tuple[list[EventRow], list[Params]]:
        """What the file holds: (event rows, message rows); nothing when it is not this
        store's, empty or unreadable (logged)."""
        if self._fd is None:
            return [], []
        try:
            head = os.pread(self._fd, 64, 0)
            line, newline, _ = head.partition(b"\n")
            if not head.startswith(_MAGIC) or not newline:
                if head:
                    log.warning("storage: %s is not a pending file; ignored", self.path)
                return [], []
            size = int(line[len(_MAGIC):].strip() or 0)
            if size <= 0:
                return [], []
            if size > MAX_FILE:
                raise ValueError(f"it says it holds {size} bytes")
            doc = json.loads(os.pread(self._fd, size, len(line) + 1))
            events = [tuple(row) for row in doc.get("events", []) if isinstance(row, list) and len(row) == 6]
            messages = [tuple(row) for row in doc.get("messages", []) if isinstance(row, list) and len(row) == 9]
        except Exception as exc:  # whatever the file holds, the store opens
            log.warning("storage: cannot read %s (%s); what it held is lost", self.path, describe(exc))
            return [], []
        self.holds = bool(events or messages)
        return events, messages

    def close(self) -> None:
        """Let the file go; removed when it holds nothing (a clean stop leaves no file)."""
        if self._fd is not None:
            try:
                if not self.holds:
                    os.unlink(self.path)  # while it is still locked: no other store is using it
            except OSError:
                pass
            try:
                os.close(self._fd)  # the lock goes with it
            except OSError:
                pass
            self._fd = None


def _still_there(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def newest_id(messages: list[tuple[Any, ...]]) -> int:
    """The largest id of ``messages`` as :func:`.schema.id_number` reads it: new ids start above it."""
    return max((id_number(m[0]) for m in messages), default=0)


async def missing(db: aiosqlite.Connection, events: list[EventRow], messages: list[Params]
                  ) -> tuple[list[EventRow], list[Params]]:
    """What of ``events`` and ``messages`` (the pending file's, read when the store opened)
    ``db`` lacks: a line is known by its time, type and event id among the newest lines (the
    file holds only records newer than the last commit), a message by its id. Raises
    ``sqlite3.Error``."""
    async with db.execute(f"SELECT ts, type, event_id FROM events WHERE id > "
                          f"(SELECT COALESCE(MAX(id), 0) FROM {EVENT_LOG}) - ?", (len(events) + 1000,)) as cursor:
        known = {tuple(row) for row in await cursor.fetchall()}
    lines = [row for row in events if (row[0], row[1], row[3]) not in known]
    ids = [m[0] for m in messages]
    found: set[Any] = set()
    for i in range(0, len(ids), ID_BATCH):
        part = ids[i:i + ID_BATCH]
        async with db.execute(f"SELECT id FROM messages WHERE id IN ({','.join('?' * len(part))})", part) as cursor:
            found.update(row[0] for row in await cursor.fetchall())
    return lines, [m for m in messages if m[0] not in found]
