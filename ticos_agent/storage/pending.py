"""The pending file: what waits for its commit, kept where a SIGKILL cannot take it.

Event-log lines, and a user's message while it has no words, wait up to ``event_log_delay``
(2 s) for their commit, so that a voice turn is one commit (see :mod:`.store`). So that a
SIGKILL still loses none of them that arrived more than ``LOSS_BOUND`` (1 s) before it, the
writer copies what waits to a small file ``SPILL_AFTER`` seconds after the oldest of it arrived:
``<database name>.pending`` in the internal storage folder (beside the fallback database when
the store is on the TF card, so the card is not written for it). One ``pwrite`` at offset 0 of
a few hundred bytes, never synced: the page cache outlives the process. After the commit the
file is marked empty (another ``pwrite`` to the same page). The kernel writes the page back
every ~30 s, so the file costs about one 4 KiB page per half minute of talk
(``bench/sd_writes.py``), not one per turn.

When a store opens, its writer first puts back what the file holds that its database lacks
(:meth:`PendingFile.take`, then one transaction: a line is known by its time, type and event
id among the newest lines, a message by its id) and marks the file empty.

What this does not promise: the file is never synced, so a power cut may lose its lines (on
the TF card, whose commits are synced, a pulled plug keeps the 2 s bound for them).

Format: ``TICOS-PENDING 1 <length>\\n`` then ``length`` bytes of JSON, ``{"events": [rows],
"messages": [rows]}`` (the rows as the writer's statements take them); length 0 is empty.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import aiosqlite

from .connection import make_private_dirs, transaction
from .schema import EVENT_LOG
from .writes import SQL_ADD_MESSAGE, SQL_LOG_EVENT, EventRow, Params

log = logging.getLogger(__name__)

#: How long after the oldest waiting record arrived the file is written (seconds).
SPILL_AFTER = 0.8
#: Beyond this many waiting records (an outage: writes failing) the file is not written.
MAX_SPILL = 2000
_MAGIC = b"TICOS-PENDING 1 "
_EMPTY = _MAGIC + b"0\n"
SQL_RESTORE_MESSAGE = SQL_ADD_MESSAGE.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)


def pending_path(database: Path, internal_dir: Path) -> Path:
    """Where the pending file of ``database`` lives: its name in ``internal_dir``."""
    return internal_dir / f"{database.name}.pending"


class PendingFile:
    """One pending file. Blocking calls of a few hundred bytes into the page cache; the
    writer task calls them on the event loop. Errors are logged once and make it a no-op
    until a write works again."""

    def __init__(self, path: Path):
        self.path = path
        self.holds = False  # it has records that may not be committed yet
        self._fd: int | None = None
        self._failed = False

    def write(self, events: list[EventRow], messages: list[Params]) -> None:
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
        try:
            if self._fd is None:
                make_private_dirs(self.path.parent)  # on a card robot the internal folder may be new
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.pwrite(self._fd, data, 0)
        except OSError as exc:
            if not self._failed:
                log.warning("storage: cannot write %s (%s): records waiting for their commit are not "
                            "kept from a SIGKILL", self.path, exc)
            self._failed = True
            return False
        if self._failed:
            log.info("storage: writing %s works again", self.path)
            self._failed = False
        return True

    def take(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """What the file holds: (event rows, message rows); nothing when it is missing, empty
        or unreadable (logged)."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.readline(64)
                if not head.startswith(_MAGIC):
                    if head:
                        log.warning("storage: %s is not a pending file; ignored", self.path)
                    return [], []
                size = int(head[len(_MAGIC):].strip() or 0)
                if size <= 0:
                    return [], []
                doc = json.loads(fh.read(size))
            events = [tuple(row) for row in doc.get("events", []) if isinstance(row, list) and len(row) == 6]
            messages = [tuple(row) for row in doc.get("messages", []) if isinstance(row, list) and len(row) == 9]
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("storage: cannot read %s (%s); what it held is lost", self.path, exc)
            return [], []
        self.holds = bool(events or messages)
        return events, messages

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def newest_id(messages: list[tuple[Any, ...]]) -> int:
    """The largest all-digit id of ``messages`` (0: none): new ids must start above it."""
    return max((int(str(m[0])) for m in messages if str(m[0]).isdigit()), default=0)


async def restore(db: aiosqlite.Connection, pending: PendingFile, events: list[tuple[Any, ...]],
                  messages: list[tuple[Any, ...]]) -> None:
    """Put into ``db`` what ``pending`` held (``events``, ``messages``: read by
    :meth:`PendingFile.take` when the store opened) that ``db`` lacks, in one transaction,
    then mark the file empty. Raises ``sqlite3.Error``: the file is then kept."""
    if not events and not messages:
        return
    async with db.execute(f"SELECT ts, type, event_id FROM events WHERE id > "
                          f"(SELECT COALESCE(MAX(id), 0) FROM {EVENT_LOG}) - ?", (len(events) + 1000,)) as cursor:
        known = {tuple(row) for row in await cursor.fetchall()}
    lines = [row for row in events if (row[0], row[1], row[3]) not in known]
    added = 0
    async with transaction(db):
        if lines:
            await db.executemany(SQL_LOG_EVENT, lines)
        for row in messages:
            cursor = await db.execute(SQL_RESTORE_MESSAGE, row)
            added += max(cursor.rowcount, 0)
    pending.clear()
    if lines or added:
        log.warning("storage: put back %d event-log lines and %d messages from %s: they were waiting for "
                    "their commit when the agent was last stopped", len(lines), added, pending.path)
