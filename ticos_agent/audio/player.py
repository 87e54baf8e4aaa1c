"""AudioPlayer: the assistant's voice through a sounddevice (PortAudio) output stream.

How it works::

    feed()  (event loop)                      PortAudio callback thread
      base64 -> int16 -> envelope levels        every 10 ms block:
      -> resample -> volume -> Chunk  ──push──>  PcmQueue.pull(): copy queued samples, count
      jitter gate: open when jitter_ms of        played samples per item, note the block's
      audio is queued or jitter_ms passed        DAC time; silence when the gate is closed
                                                        │ call_soon_threadsafe (coalesced)
    _drain() (event loop)  <────────────────────────────┘
      envelope levels -> LevelScheduler -> on_level(level) when the audio reaches the speaker

* The stream stays open and outputs silence between responses, so a new response starts at
  the next 10 ms block: delta-to-sound is the jitter pre-buffer (at most ``jitter_ms``) +
  one block + the device latency.
* ``flush()`` removes the queued audio under the buffer's lock, so the callback outputs
  silence from its next block (10 ms + what PortAudio already holds: at most the output
  latency, which the config caps at 0.04 s, so under 50 ms). Deltas that still arrive for a
  flushed response id are dropped (counted in ``dropped_deltas``); ``flush(None, also=rid)``
  also marks a response whose audio has not arrived yet; a new response id plays normally.
* An underrun is a gap inside a response: the queue ran dry and then more audio of the
  same response arrived. It is counted once per gap (silence between responses is not an
  underrun); the player pre-buffers again after a gap.
* No PortAudio (``OSError``/``ImportError`` importing sounddevice): disabled for good. No such
  device, an open failure, or a stream that stops or stalls while running: retried every
  ``retry_seconds`` (``state == "retrying"``), or disabled when that is 0. One warning line
  is logged when audio goes away and one info line when it comes back; nothing raises.
  PortAudio is re-initialised before each retry (while no stream is open), so a device that
  appears after start is found. The life cycle and its thread rules are in :mod:`.stream`.
* A stream is "stalled" when its callback has not run for 2 s; it is then closed and
  retried like a failed device.
* Extras for benchmarks and diagnostics: ``start_latencies`` (seconds from the first delta
  of a response reaching an idle player to the DAC time of its first sample),
  ``envelope_stats`` (levels delivered / dropped as late), ``device_underflows``
  (PortAudio's own underflow flags).
* At most ``MAX_QUEUED_SECONDS`` (120 s) of audio is queued; beyond it deltas are dropped
  and counted in ``overflow_deltas`` (and ``dropped_deltas``). A failing device leaves
  ``"ok"`` before it is closed, so a close that hangs never lets the queue fill.
* Valid deltas fed while audio is not available are discarded and counted in
  ``dropped_deltas``; bad deltas raise :class:`~ticos_agent.errors.BadAudio` in every state.

``health()["state"]``: ``"ok"`` the stream is open; ``"idle"`` not started yet or stopped;
``"retrying"`` the device failed and will be tried again; ``"disabled"`` by config, or
PortAudio or the device is missing and no retry is configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import BadAudio
from .buffer import Chunk, PcmQueue
from .config import SOURCE_RATE, AudioConfig
from .device import CallbackFlags, CallbackTime, OutputStream
from .envelope import WINDOW_SECONDS, EnvelopeMeter, LevelScheduler
from .pcm import decode_pcm
from .resample import StreamResampler, apply_volume
from .stream import StreamLifecycle

log = logging.getLogger(__name__)

MAX_QUEUED_SECONDS = 120  # beyond this much queued audio (11.5 MB at 48 kHz), deltas are dropped


class _Response:
    """Per-response stream state: its resampler, envelope meter and output position."""

    __slots__ = ("meter", "pos", "resampler")

    def __init__(self, out_rate: int):
        self.resampler = StreamResampler(SOURCE_RATE, out_rate)
        self.meter = EnvelopeMeter(int(SOURCE_RATE * WINDOW_SECONDS))
        self.pos = 0  # samples (output rate) of this response queued so far


class AudioPlayer(StreamLifecycle):
    """Plays audio deltas, flushes on barge-in, counts played time, drives lip sync.

    ``on_level(level)`` is called on the event loop thread with a level 0..1 per 20 ms of
    audio (``min(1, RMS / 32768 * config.mouth_gain)``), at the time that audio leaves the
    speaker; 0.0 closes the mouth after a flush
    and when the audio runs out.
    """

    def __init__(self, config: AudioConfig, *, on_level: Callable[[float], None] | None = None):
        self.config = config
        self._on_level = on_level
        self._state = "idle"
        self._reason: str | None = "not started"
        self._sd: ModuleType | None = None
        self._stream: OutputStream | None = None
        self._rate: int | None = None
        self._device_name: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue = PcmQueue()
        self._levels: LevelScheduler | None = None
        self._responses: OrderedDict[str | None, _Response] = OrderedDict()
        self._flushed: OrderedDict[str, bool] = OrderedDict()
        self._jitter_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # retry or watch task
        self._stopping = False
        self.underruns = 0
        self.dropped_deltas = 0
        self.rejected_deltas = 0
        self.device_underflows = 0  # PortAudio's own output-underflow flags
        self.overflow_deltas = 0  # dropped because MAX_QUEUED_SECONDS of audio was queued
        self.start_latencies: deque[float] = deque(maxlen=2000)  # seconds, delta -> DAC
        self._init_lifecycle()

    # ---- the PortAudio callback (its own thread) -------------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, time_info: CallbackTime, status: CallbackFlags) -> None:
        try:
            if status.output_underflow:
                self.device_underflows += 1
            dac = time_info.outputBufferDacTime or time_info.currentTime
            if self._queue.pull(outdata[:, 0], dac) and self._loop is not None:
                self._loop.call_soon_threadsafe(self._drain)
        except Exception:  # never let an exception reach PortAudio; play silence
            outdata.fill(0)

    # ---- event loop side ------------------------------------------------------------
    def feed(self, audio: str | bytes, *, response_id: str | None, item_id: str | None) -> None:
        """Queue one delta (base64 ``str`` or raw PCM16LE mono 24 kHz ``bytes``).

        Raises BadAudio for that delta only. Cheap: decode, envelope, resample, append.
        """
        try:
            pcm = decode_pcm(audio)
        except BadAudio:
            self.rejected_deltas += 1
            raise
        if self._state != "ok" or (response_id is not None and response_id in self._flushed):
            self.dropped_deltas += 1
            return
        queue = self._queue
        loop, rate = self._loop, self._rate
        assert loop is not None and rate is not None  # state "ok": started, with an open stream
        if queue.queued_frames + pcm.size * rate // SOURCE_RATE > MAX_QUEUED_SECONDS * rate:
            self.dropped_deltas += 1
            self.overflow_deltas += 1
            if self.overflow_deltas == 1 or self.overflow_deltas % 1000 == 0:
                log.warning("audio: %gs of audio queued; dropping deltas (%d so far)",
                            MAX_QUEUED_SECONDS, self.overflow_deltas)
            return
        rs = self._responses.get(response_id)
        if rs is None:
            rs = self._responses[response_id] = _Response(rate)
            if len(self._responses) > 16:
                self._responses.popitem(last=False)
        starts, levels = rs.meter.process(pcm)
        if levels.size:
            levels = np.minimum(levels * np.float32(self.config.mouth_gain), np.float32(1.0))
        out = apply_volume(rs.resampler.process(pcm), self.config.volume)
        if out.size == 0:
            return
        if rate != SOURCE_RATE:
            starts = (starts * rate + SOURCE_RATE // 2) // SOURCE_RATE
        offsets = np.clip(starts - rs.pos, 0, out.size - 1)
        rs.pos += out.size
        chunk = Chunk(response_id, item_id, out, offsets, levels, loop.time())
        chunk.starts = queue.queued_frames == 0 and not queue.gate_open
        queued, gap = queue.push(chunk)
        if gap:
            self.underruns += 1
        if not queue.gate_open:
            if queued >= self.config.jitter_ms * rate // 1000:
                self._open_gate()
            elif self._jitter_timer is None:
                self._jitter_timer = loop.call_later(self.config.jitter_ms / 1000, self._open_gate)

    def _open_gate(self) -> None:
        self._cancel_jitter_timer()
        self._queue.open_gate()

    def _cancel_jitter_timer(self) -> None:
        if self._jitter_timer is not None:
            self._jitter_timer.cancel()
            self._jitter_timer = None

    def _forget_responses(self) -> None:
        self._responses.clear()

    def flush(self, response_id: str | None = None, *, also: str | None = None) -> None:
        """Barge-in/cancel: drop the queued audio of ``response_id`` (None: everything).

        Later deltas of every flushed response are dropped: ``response_id``, or with None
        every response the player has seen, plus ``also`` -- a response id to mark as
        flushed even if none of its audio has arrived yet (a barge-in before the
        interrupted response's first delta: ``flush(None, also=rid)``). The output is
        silent from the callback's next block; the mouth gets one 0.0.
        """
        if response_id is None:
            _frames, chunks, ids = self._queue.drop()
            ids |= set(self._responses)
        else:
            _frames, chunks, ids = self._queue.drop(response_id)
            ids.add(response_id)
        if also is not None:
            ids.add(also)
        self.dropped_deltas += chunks
        for rid in ids:
            self._responses.pop(rid, None)
            if rid is not None:
                self._flushed[rid] = True
                self._flushed.move_to_end(rid)
        while len(self._flushed) > 64:
            self._flushed.popitem(last=False)
        if not self._queue.queued_frames:
            self._cancel_jitter_timer()
        if self._levels is not None:
            self._levels.cancel(response_id)

    def _drain(self) -> None:
        """Turn the callback's block records into timed envelope levels and latencies."""
        records = self._queue.take_records()
        loop, rate, levels = self._loop, self._rate, self._levels
        if not records or self._stream is None or loop is None or rate is None or levels is None:
            return  # (a stream is open only once started, with its rate known)
        loop_now = loop.time()
        try:
            to_loop = loop_now - self._stream.time
        except Exception:
            to_loop = 0.0
        for dac, segs, ended in records:
            base = dac + to_loop if dac else loop_now
            for chunk, off, n, pos in segs:
                t0 = base + (pos - off) / rate  # loop time of the chunk's sample 0
                if off == 0 and chunk.starts:
                    self.start_latencies.append(base + pos / rate - chunk.fed_at)
                env = chunk.env_off
                lo, hi = np.searchsorted(env, (off, off + n))
                for k in range(lo, hi):
                    levels.schedule(t0 + env[k] / rate, float(chunk.env_lvl[k]), chunk.response_id)
            if ended >= 0:
                levels.schedule(base + ended / rate, 0.0, None, force=True)

    # ---- queries --------------------------------------------------------------------
    def _stream_time(self) -> float | None:
        try:
            return self._stream.time if self._stream is not None else None
        except Exception:
            return None

    def played_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id`` handed to the device, less what is still ahead of the
        stream clock in the device buffer (0 for an unknown item)."""
        samples = self._queue.played_samples(item_id)
        if not samples or not self._rate:
            return 0
        now = self._stream_time()
        if now is not None and item_id == self._queue.current_item_id:
            ahead = self._queue.last_audio_end - now
            if 0 < ahead < 1.0:
                samples = max(0, samples - int(ahead * self._rate))
        return samples * 1000 // self._rate

    @property
    def playing(self) -> bool:
        """Audio of some response is queued, or still leaving the speaker."""
        if self._queue.queued_frames:
            return True
        now = self._stream_time()
        return now is not None and self._queue.last_audio_end > now

    @property
    def current_item_id(self) -> str | None:
        """The item whose audio is playing or was playing last."""
        return self._queue.current_item_id

    @property
    def current_response_id(self) -> str | None:
        """The response of :attr:`current_item_id`."""
        return self._queue._last_response

    @property
    def envelope_stats(self) -> dict[str, int]:
        """Lip-sync counters: levels delivered and dropped as late."""
        lv = self._levels
        return {"delivered": lv.delivered if lv else 0, "dropped_late": lv.dropped_late if lv else 0}

    def health(self) -> dict[str, Any]:
        """State for ``/health`` (see the module docstring for the states)."""
        rate = self._rate or 0
        return {
            "state": self._state,
            "reason": self._reason,
            "device": self._device_name,
            "sample_rate": self._rate,
            "underruns": self.underruns,
            "played_ms": self._queue.played_total * 1000 // rate if rate else 0,
            "dropped_deltas": self.dropped_deltas,
            "rejected_deltas": self.rejected_deltas,
            "overflow_deltas": self.overflow_deltas,
        }
