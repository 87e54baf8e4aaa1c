"""The robot's local time, on a computer that may be in another time zone.

Messages, memories and calls carry the robot's local time as text (``YYYY-MM-DD HH:MM:SS``,
as ticos-client wrote it); the event log carries seconds since 1970. To put both on one
timeline, and to show the event log in the same local time as the messages, the robot's UTC
offset is learnt from the database itself: a user's turn is stored (its local time) in the same
moment as its ``conversation.item.created`` event is logged (its epoch time). When that offset
is this computer's, this computer's time-zone rules are used (summer time included); otherwise
the learnt fixed offset. A card without an event log is read in this computer's time zone.
"""

from __future__ import annotations

import calendar
import datetime as dt
import sqlite3
import time
from collections import Counter

_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_QUARTER_HOUR = 900
_RECENT_MESSAGES = 5000  # where the messages of the newest events are looked for


def parse_local(text: str | None) -> dt.datetime | None:
    """A stored local time (``2026-11-25 14:30:05``, also ``T``-separated or a date alone)."""
    if not text:
        return None
    value = str(text).strip().replace("T", " ", 1)
    try:
        return dt.datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        pass
    for fmt in _FORMATS:
        try:
            return dt.datetime.strptime(value[:19], fmt)
        except ValueError:
            continue
    return None


class Clock:
    """Converts between the robot's local time text and epoch seconds.

    ``offset``: the robot's UTC offset in seconds, or ``None`` for this computer's time zone.
    """

    def __init__(self, offset: float | None = None):
        self.offset = offset

    def __repr__(self) -> str:
        return f"Clock({self.describe()})"

    def describe(self) -> str:
        if self.offset is None:
            return "this computer's time zone"
        sign = "+" if self.offset >= 0 else "-"
        minutes = int(abs(self.offset)) // 60
        return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    def local(self, ts: float, *, ms: bool = False) -> str:
        """Epoch seconds -> the robot's local ``YYYY-MM-DD HH:MM:SS`` (``.mmm`` with ``ms``)."""
        try:
            parts = time.localtime(ts) if self.offset is None else time.gmtime(ts + self.offset)
        except (OverflowError, OSError, ValueError):
            return "?"
        text = time.strftime("%Y-%m-%d %H:%M:%S", parts)
        if ms:
            text += f".{int((ts % 1) * 1000):03d}"
        return text

    def epoch(self, text: str | None) -> float | None:
        """The robot's local time text -> epoch seconds (``None`` when it is not a time)."""
        when = parse_local(text)
        if when is None:
            return None
        if self.offset is None:
            try:
                return time.mktime(when.timetuple())
            except (OverflowError, ValueError):
                return None
        return calendar.timegm(when.timetuple()) - self.offset

    def now_local(self) -> str:
        return self.local(time.time())


def learn(conn: sqlite3.Connection, *, samples: int = 20) -> tuple[Clock, str | None]:
    """The robot's clock for the database on ``conn``, and a sentence on how it was found (or
    ``None`` when this computer's time zone is used for want of evidence)."""
    try:
        top = conn.execute("SELECT id FROM events ORDER BY id DESC LIMIT 1").fetchone()
        if top is None:
            return Clock(), None
        rows = conn.execute(
            "SELECT ts, item_id FROM events WHERE id > ? AND type = 'conversation.item.created' "
            "AND item_id IS NOT NULL ORDER BY id DESC LIMIT ?", (int(top[0]) - 20000, samples)).fetchall()
        # messages have no index on item_id (the writer keeps none): the newest ones, by rowid
        wanted = {item_id for _, item_id in rows}
        written: dict[str, str] = {}
        for item_id, datetime in conn.execute(
                "SELECT item_id, datetime FROM messages ORDER BY rowid DESC LIMIT ?", (_RECENT_MESSAGES,)):
            if item_id in wanted:
                written.setdefault(item_id, datetime)
        votes: Counter[int] = Counter()
        mine: dict[int, int] = {}
        for ts, item_id in rows:
            found = written.get(item_id)
            when = parse_local(found) if found else None
            if when is None or not isinstance(ts, (int, float)):
                continue
            offset = round((calendar.timegm(when.timetuple()) - ts) / _QUARTER_HOUR) * _QUARTER_HOUR
            votes[offset] += 1
            mine[offset] = time.localtime(ts).tm_gmtoff
    except sqlite3.Error:
        return Clock(), None
    if not votes:
        return Clock(), None
    offset, _ = votes.most_common(1)[0]
    if mine.get(offset) == offset:
        return Clock(), None
    clock = Clock(float(offset))
    return clock, (f"the robot's clock is {clock.describe()} (this computer's is "
                   f"{Clock(float(time.localtime().tm_gmtoff)).describe()}): times are the robot's")
