"""Saying what blocks the event loop, and where (``[log] loop_stall``).

Every socket, ``/health``, the robot's queued motions and the audio feed wait while one piece
of code runs on the event loop. Sync handlers run on the handler thread and cannot do that;
an ``async`` handler that calls ``time.sleep`` or a blocking read, or a sync handler
subscribed with ``inline=True`` that computes, can. Nothing takes the loop back from such
code, but this says where it is, so that the integrator can mend it::

    WARNING ticos_agent.stall: the event loop has been blocked for at least 1.0 s (sockets,
    /health and the robot wait): in /home/pi/robot.py:42 on_event (innermost: .../socket.py:706 readinto)
    WARNING ticos_agent.stall: the event loop ran again, after at least 2.3 s blocked in /home/pi/robot.py:42 ...

("at least": the loop's last beat came up to ``PERIOD`` before the blocking code began.)
Under systemd's watchdog the first line comes before the watchdog's kill when ``WatchdogSec``
is longer than the threshold and a half-second. ``/health`` reports ``loop``: how many stalls,
the longest, and where the last one was.

Thread rules and timing: the loop sets ``_beat`` from a timer every ``PERIOD`` (0.25 s); the
watch thread wakes every ``PERIOD``, reads it, and when it is older than the threshold reads
the loop thread's stack (``sys._current_frames``) and notes the stall (``_stuck``) once, unless
the loop beat meanwhile: ``_beat`` and ``_stuck`` are written under a lock (the thread's first
look is without it, and checked again under it before it notes anything).
What the loop makes of a stall once it runs again (its end, the counts) is written on the loop
thread. The cost at rest: one timer on the loop and one wake of the thread every 0.25 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any

log = logging.getLogger(__name__)

PERIOD = 0.25  # seconds between the loop's beats, and between the watch thread's looks
_ASYNCIO = os.path.dirname(asyncio.__file__) + os.sep
_PACKAGE = os.path.dirname(__file__) + os.sep
_AIOHTTP = os.sep + "aiohttp" + os.sep  # its request task runs our intake, which runs inline handlers


class LoopWatch:
    """Watch one event loop from a thread; ``threshold`` seconds without a beat is a stall."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.stalls = 0
        self.longest = 0.0
        self.last: str | None = None  # where the last stall was
        self._beat = 0.0
        self._stuck: tuple[float, str] | None = None  # (since, where): the stall the thread saw
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop_thread = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # _beat and _stuck, read and written together

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching ``loop``; call on the loop's own thread."""
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._stop.clear()
        self._beat = time.monotonic()
        self._timer = loop.call_later(PERIOD, self._heartbeat)
        self._thread = threading.Thread(target=self._watch, name="ticos-loop-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2 * PERIOD)

    def health(self) -> dict[str, Any]:
        return {"stall_after_s": self.threshold, "stalls": self.stalls, "longest_s": round(self.longest, 3),
                "last": self.last}

    def _heartbeat(self) -> None:
        if self._stop.is_set():
            return
        with self._lock:  # the watch thread may be noting this stall right now
            now = time.monotonic()
            stuck, self._stuck = self._stuck, None
            self._beat = now
        if stuck is not None:
            since, where = stuck
            blocked = now - since
            self.stalls += 1
            self.longest = max(self.longest, blocked)
            self.last = where
            log.warning("the event loop ran again, after at least %.1f s blocked in %s", blocked, where)
        assert self._loop is not None
        self._timer = self._loop.call_later(PERIOD, self._heartbeat)

    def _watch(self) -> None:
        while not self._stop.wait(PERIOD):
            beat = self._beat
            if time.monotonic() - beat < self.threshold + PERIOD or self._stuck is not None:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            where = _where(frame)
            del frame
            with self._lock:
                if self._beat != beat:  # the loop ran meanwhile: no stall to note
                    continue
                self._stuck = (beat + PERIOD, where)
                late = time.monotonic() - beat
            log.warning("the event loop has been blocked for at least %.1f s (sockets, /health and the robot "
                        "wait): in %s", late - PERIOD, where)


def _where(frame: Any) -> str:
    """Where the loop is stuck, as ``file:line function``: the first frame the loop's callback
    (or task step) reached outside asyncio, aiohttp and this package (the integrator's handler,
    usually), and the innermost frame when that is another."""
    if frame is None:
        return "(the loop's thread runs no Python code)"
    stack = traceback.extract_stack(frame)
    del frame
    if not stack:
        return "(no frame)"
    innermost = stack[-1]
    run = max((i for i, f in enumerate(stack) if f.filename.startswith(_ASYNCIO) and f.name == "_run"), default=None)
    if run is None:  # between callbacks: the thread waited for Python's lock, held by another thread
        return f"no callback (another thread may have held Python's lock; innermost: {_frame_text(innermost)})"
    below = [f for f in stack[run + 1:]
             if not f.filename.startswith((_ASYNCIO, _PACKAGE)) and _AIOHTTP not in f.filename]
    culprit = below[0] if below else innermost
    text = _frame_text(culprit)
    return text if culprit is innermost else f"{text} (innermost: {_frame_text(innermost)})"


def _frame_text(f: traceback.FrameSummary) -> str:
    return f"{f.filename}:{f.lineno} {f.name}"
