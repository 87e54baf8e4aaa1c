"""Log set-up and the rules for what goes into a log line.

At INFO the log tells the robot's story, one line per step: what it heard, what it said
(the first ~80 characters), each motion/emotion with its outcome and duration, barge-ins with
how much audio had played, connections, faults. DEBUG adds the agent's own detail, never the
internals of aiosqlite or aiohttp's access log.

Under systemd (``JOURNAL_STREAM`` is set and names our stderr) each line starts with its
syslog priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug) and carries no
timestamp of its own (the journal has one), so ``journalctl -p warning -u ticos-agent``
shows exactly the warnings and errors. Elsewhere lines carry a local timestamp.

A flood never floods the log: :class:`RateLimit` lets each kind of line (logger and message
template) through ``burst`` times per ``window`` seconds, then counts what it held back and
says so once the window turns ("... 4,980 similar lines suppressed").

Peer strings are untrusted: :func:`peer_text` quotes and shortens one for a log line, and
every formatter here escapes control characters in the message (a ``\\n`` in an item id
cannot forge a second log line; ESC sequences never reach the terminal). Tracebacks are
the agent's own and keep their newlines.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

#: loggers that are noise below WARNING, even when the agent runs at DEBUG
QUIET = ("aiosqlite", "aiohttp.access", "asyncio")

_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({c: f"\\u{c:04x}" for c in range(0x80, 0xA0)})  # C1 controls (CSI and friends)
_ESCAPES.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029)})


def escape(text: str) -> str:
    """``text`` with control characters written as escapes (one line, no terminal codes)."""
    return text.translate(_ESCAPES)


def peer_text(value: object, limit: int = 200) -> str:
    """A string from the voice agent, fit for a log line: escaped, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + f"...(+{len(text) - limit})"
    return escape(text)


def said(text: str, limit: int = 80) -> str:
    """The first ``limit`` characters of what was heard or said, quoted, on one line."""
    flat = " ".join(text.split())
    return '"' + peer_text(flat[:limit]) + ('..."' if len(flat) > limit else '"')


class _Escaping(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


class JournalFormatter(_Escaping):
    """``<priority>logger: message`` for the journal (which stamps the time itself)."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        # every line of a traceback gets the prefix too, or journald files it as info
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class ConsoleFormatter(_Escaping):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


class RateLimit(logging.Filter):
    """At most ``burst`` lines of one kind per ``window`` seconds; the rest counted, then told."""

    def __init__(self, burst: int = 20, window: float = 10.0, max_kinds: int = 2048):
        super().__init__()
        self.burst, self.window, self.max_kinds = burst, window, max_kinds
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, int, str], list[float | int]] = {}  # kind -> [window start, count]
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            entry = self._kinds.get(kind)
            if entry is None or now - entry[0] >= self.window:
                held = int(entry[1]) - self.burst if entry is not None else 0
                if len(self._kinds) >= self.max_kinds:
                    self._kinds = {k: v for k, v in self._kinds.items() if now - v[0] < self.window}
                self._kinds[kind] = [now, 1]
                if held > 0:
                    record.msg = f"{record.msg} [{held:,} similar lines suppressed in the last {self.window:g} s]"
                return True
            entry[1] = int(entry[1]) + 1
            if entry[1] <= self.burst:
                return True
            self.suppressed += 1
            return False


def under_journal(stream: object = None) -> bool:
    """Whether our stderr is the journal's stream (systemd's ``JOURNAL_STREAM=dev:inode``)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())  # type: ignore[union-attr]
    except (OSError, ValueError, AttributeError):
        return False
    dev, _, ino = value.partition(":")
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def setup(level: str = "info", *, journal: bool | None = None, stream: object = None) -> logging.Handler:
    """Configure the root logger for ``ticos-agent run``; returns the handler it installed."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
    use_journal = under_journal(stream) if journal is None else journal
    handler.setFormatter(JournalFormatter() if use_journal else ConsoleFormatter())
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
