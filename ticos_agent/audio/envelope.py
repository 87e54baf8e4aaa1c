"""Lip sync: a loudness envelope of the speech, delivered when the audio leaves the speaker.

Two halves:

* :class:`EnvelopeMeter` (event loop, at feed time) cuts one response's 24 kHz PCM into
  20 ms windows counted from the response's first sample, and gives the RMS of each full
  window as a level 0..1 (RMS / 32768; a full-scale square wave is 1.0). Windows that span
  two deltas are joined, so the levels do not depend on how the audio was chunked. The level
  is measured before the volume is applied: the mouth moves with the voice, not with the
  speaker's loudness setting. A last partial window (under 20 ms) gives no level; the mouth
  is closed with a 0.0 when the audio runs out instead.
* :class:`LevelScheduler` (event loop) holds levels stamped with the time their window
  reaches the speaker (from the output stream's DAC clock) and calls ``on_level`` at that
  time. A level whose window has already finished playing (more than one window late) when
  it is scheduled or when its timer fires is dropped and counted, never delivered late.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

WINDOW_SECONDS = 0.020


class EnvelopeMeter:
    """RMS per ``window`` samples of one continuous stream (one response)."""

    def __init__(self, window: int = 480):
        self.window = window
        self._sumsq = 0.0
        self._count = 0  # samples in the current partial window
        self._seen = 0  # samples seen so far

    def process(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed the next int16 chunk; returns (window start sample indexes, levels) of the
        windows this chunk completed (possibly none)."""
        w = self.window
        x = pcm.astype(np.float64) * (1.0 / 32768.0)
        starts: list[int] = []
        levels: list[float] = []
        i = 0
        if self._count:
            head = x[: w - self._count]
            self._sumsq += float(np.dot(head, head))
            self._count += head.size
            i = head.size
            if self._count == w:
                starts.append(self._seen - (w - head.size))
                levels.append(np.sqrt(self._sumsq / w))
                self._sumsq, self._count = 0.0, 0
        full = (x.size - i) // w
        if full:
            block = x[i : i + full * w].reshape(full, w)
            rms = np.sqrt(np.einsum("ij,ij->i", block, block) / w)
            base = self._seen + i
            starts.extend(range(base, base + full * w, w))
            levels.extend(rms.tolist())
            i += full * w
        if i < x.size:
            rest = x[i:]
            self._sumsq += float(np.dot(rest, rest))
            self._count += rest.size
        self._seen += x.size
        return np.asarray(starts, dtype=np.int64), np.minimum(np.asarray(levels, dtype=np.float32), 1.0)


class LevelScheduler:
    """Delivers levels to ``on_level`` at their loop-clock due time; drops the late ones.

    Lives on the event loop thread only. ``key`` tags a level with its response so a flush
    can cancel what is pending for that response.
    """

    def __init__(self, loop, on_level: Callable[[float], None] | None, late_after: float = WINDOW_SECONDS):
        self._loop = loop
        self._on_level = on_level
        self._late_after = late_after
        self._pending: deque[tuple[float, float, object, bool]] = deque()
        self._timer = None
        self._last = 0.0  # last level delivered
        self.delivered = 0  # envelope levels delivered (closing zeros not counted)
        self.dropped_late = 0
        self._errors = 0

    def schedule(self, due: float, level: float, key: object, force: bool = False) -> None:
        """Deliver ``level`` at loop time ``due``; ``force`` (mouth-closing zeros) is never
        dropped for lateness."""
        if self._on_level is None:
            return
        if not force and self._loop.time() > due + self._late_after:
            self.dropped_late += 1
            return
        self._pending.append((due, level, key, force))
        if self._timer is None:
            self._arm()

    def cancel(self, key: object = None, *, close: bool = True) -> None:
        """Forget pending levels of ``key`` (None: all); then close the mouth (one 0.0) if it
        is open or something was pending."""
        had = bool(self._pending)
        if key is None:
            self._pending.clear()
        else:
            self._pending = deque(p for p in self._pending if p[2] != key)
        if self._timer is not None and not self._pending:
            self._timer.cancel()
            self._timer = None
        if close and (had or self._last != 0.0):
            self._deliver(0.0)

    def close(self) -> None:
        """Stop: cancel the timer and pending levels (no delivery)."""
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._timer = self._loop.call_at(self._pending[0][0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._pending and self._pending[0][0] <= now:
            due, level, _key, force = self._pending.popleft()
            if not force and now > due + self._late_after:
                self.dropped_late += 1
                continue
            self._deliver(level, counted=not force)
        if self._pending:
            self._arm()

    def _deliver(self, level: float, counted: bool = False) -> None:
        self._last = level
        if counted:
            self.delivered += 1
        if self._on_level is None:
            return
        try:
            self._on_level(level)
        except Exception:  # an actuator problem must not stop the audio
            self._errors += 1
            if self._errors == 1 or self._errors % 1000 == 0:
                log.exception("audio: on_level callback failed (%d times)", self._errors)
