"""The jitter buffer: the one place where the event loop and PortAudio's thread meet.

The event loop pushes :class:`Chunk` objects (PCM already at the output rate, volume applied)
and the PortAudio callback pulls samples from them into its output block. Everything shared
is guarded by one :class:`threading.Lock`, held only for a copy of at most one block; the
callback never waits on the loop.

The callback also leaves a small *record* per block that carried audio: its DAC time (when
the block's first sample reaches the speaker) and which chunk spans it played. The loop
takes the records (after a coalesced ``call_soon_threadsafe`` wake-up) to time the lip-sync
envelope; the played-milliseconds counters are kept here, in the callback, so they count
what was handed to the device, not what was fed.

The *gate*: after the queue runs dry the callback closes it and outputs silence; the loop
opens it again when the jitter pre-buffer is satisfied (see ``AudioPlayer``).
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict, deque
from typing import Final, TypeAlias

import numpy as np


class _All(enum.Enum):
    ALL = "all"


ALL: Final = _All.ALL  # drop(): every response


class Chunk:
    """One fed delta, ready to play: int16 PCM at the output rate plus its envelope."""

    __slots__ = ("env_lvl", "env_off", "fed_at", "item_id", "pcm", "read", "response_id", "starts")

    def __init__(self, response_id: str | None, item_id: str | None, pcm: np.ndarray, env_off: np.ndarray,
                 env_lvl: np.ndarray, fed_at: float):
        self.response_id = response_id
        self.item_id = item_id
        self.pcm = pcm
        self.read = 0  # samples already pulled by the callback
        self.env_off = env_off  # sample offsets (in pcm) where envelope windows start
        self.env_lvl = env_lvl
        self.fed_at = fed_at  # loop time (time.monotonic()) at feed
        self.starts = False  # this chunk was fed to an idle player (its latency is measured)


#: ``(chunk, its first sample played in the block, samples played, position in the block)``
Segment: TypeAlias = tuple[Chunk, int, int, int]
#: ``(DAC time of the block, its segments, where the audio ran out in it or -1)``
Record: TypeAlias = tuple[float, list[Segment], int]


class PcmQueue:
    """Thread-safe FIFO of chunks with a gate, per-item played counters and block records."""

    MAX_ITEMS = 256  # played counters kept for this many recent items

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: deque[Chunk] = deque()
        self._frames = 0  # unplayed samples queued
        self._gate = False
        self._records: deque[Record] = deque()
        self._wake_pending = False
        self._dry = False  # the queue ran dry while the gate was open...
        self._dry_response: str | None = None  # ...in the middle of this response (maybe)
        self._last_response: str | None = None  # response of the last chunk played (current_item_id's)
        self.pulls = 0  # callback blocks served (the supervisor watches it move)
        self._played: OrderedDict[str | None, int] = OrderedDict()  # item_id -> samples handed to the device
        self.played_total = 0
        self.current_item_id: str | None = None
        self.last_audio_end = 0.0  # DAC time at which the last sample handed over ends
        self.rate = 1  # output rate, set by the player

    # ---- event loop side -------------------------------------------------------------
    @property
    def queued_frames(self) -> int:
        return self._frames

    @property
    def gate_open(self) -> bool:
        return self._gate

    def push(self, chunk: Chunk) -> tuple[int, bool]:
        """Queue a chunk; returns (queued samples, whether this push ends an underrun gap:
        the queue had run dry in the middle of this chunk's response)."""
        with self._lock:
            gap = self._dry and self._dry_response == chunk.response_id
            self._dry = False
            self._chunks.append(chunk)
            self._frames += chunk.pcm.size
            return self._frames, gap

    def open_gate(self) -> None:
        with self._lock:
            if self._chunks:
                self._gate = True

    def drop(self, response_id: str | _All | None = ALL) -> tuple[int, int, set[str | None]]:
        """Remove queued audio of ``response_id`` (default: all), including a chunk that is
        partly played; returns (samples dropped, untouched chunks dropped, response ids
        dropped). The callback sees the result on its next block."""
        with self._lock:
            keep: deque[Chunk] = deque()
            dropped = 0
            untouched = 0
            ids: set[str | None] = set()
            for c in self._chunks:
                if response_id is ALL or c.response_id == response_id:
                    dropped += c.pcm.size - c.read
                    untouched += c.read == 0
                    ids.add(c.response_id)
                else:
                    keep.append(c)
            self._chunks = keep
            self._frames -= dropped
            if not keep:
                self._gate = False
            if response_id is ALL or self._dry_response == response_id:
                self._dry = False
            self._records = deque(r for r in self._records if not _mentions(r, ids))
            return dropped, untouched, ids

    def take_records(self) -> list[Record]:
        with self._lock:
            out = list(self._records)
            self._records.clear()
            self._wake_pending = False
            return out

    def played_samples(self, item_id: str | None) -> int:
        with self._lock:
            return self._played.get(item_id, 0)

    # ---- PortAudio callback side -----------------------------------------------------
    def pull(self, out: np.ndarray, dac_time: float) -> bool:
        """Fill ``out`` (1-D int16 view of the output block) and return whether the loop
        should be woken to read the records. Silence when the gate is closed."""
        frames = out.shape[0]
        with self._lock:
            self.pulls += 1
            if not self._gate:
                out.fill(0)
                return False
            pos = 0
            segs: list[Segment] = []
            chunks = self._chunks
            c: Chunk | None = None
            while pos < frames and chunks:
                c = chunks[0]
                take = min(frames - pos, c.pcm.size - c.read)
                out[pos : pos + take] = c.pcm[c.read : c.read + take]
                segs.append((c, c.read, take, pos))
                c.read += take
                pos += take
                n = self._played.get(c.item_id)
                if n is None:
                    self._played[c.item_id] = take
                    if len(self._played) > self.MAX_ITEMS:
                        self._played.popitem(last=False)
                else:
                    self._played[c.item_id] = n + take
                if c.read == c.pcm.size:
                    chunks.popleft()
            self._frames -= pos
            self.played_total += pos
            if c is not None:
                self.current_item_id = c.item_id
                self._last_response = c.response_id
                self.last_audio_end = dac_time + pos / self.rate
            ended = -1
            if pos < frames:
                out[pos:] = 0
                if not chunks:  # ran dry: close the gate until the loop reopens it
                    self._gate = False
                    self._dry = True
                    self._dry_response = self._last_response
                    ended = pos
            self._records.append((dac_time, segs, ended))
            wake = not self._wake_pending
            self._wake_pending = True
            return wake


def _mentions(record: Record, ids: set[str | None]) -> bool:
    return any(seg[0].response_id in ids for seg in record[1])
