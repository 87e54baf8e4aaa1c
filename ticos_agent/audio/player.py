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
  silence from its next block (10 ms + what PortAudio already holds, ~10-35 ms on ALSA).
  Deltas that still arrive for a flushed response id are dropped (counted in
  ``dropped_deltas``); a new response id plays normally.
* An underrun is a gap inside a response: the queue ran dry and then more audio of the
  same response arrived. It is counted once per gap (silence between responses is not an
  underrun); the player pre-buffers again after a gap.
* No PortAudio (``OSError``/``ImportError`` importing sounddevice): disabled for good. No such
  device, an open failure, or a stream that stops or stalls while running: retried every
  ``retry_seconds`` (``state == "retrying"``), or disabled when that is 0. One warning line
  is logged when audio goes away and one info line when it comes back; nothing raises.
* A stream is "stalled" when its callback has not run for 2 s; it is then closed and
  retried like a failed device.
* Extras for benchmarks and diagnostics: ``start_latencies`` (seconds from the first delta
  of a response reaching an idle player to the DAC time of its first sample),
  ``envelope_stats`` (levels delivered / dropped as late), ``device_underflows``
  (PortAudio's own underflow flags).
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
from typing import Callable

import numpy as np

from ..errors import BadAudio
from .pcm import decode_pcm
from .buffer import Chunk, PcmQueue
from .config import SOURCE_RATE, AudioConfig
from .device import NoPortAudio, close_output, load_portaudio, open_output
from .envelope import WINDOW_SECONDS, EnvelopeMeter, LevelScheduler
from .resample import StreamResampler, apply_volume

log = logging.getLogger(__name__)

MAX_QUEUED_SECONDS = 600  # beyond this much queued audio, deltas are dropped
_WATCH_SECONDS = 2.0  # a stream whose callback has not run for this long has stalled


class _Response:
    """Per-response stream state: its resampler, envelope meter and output position."""

    __slots__ = ("resampler", "meter", "pos")

    def __init__(self, out_rate: int):
        self.resampler = StreamResampler(SOURCE_RATE, out_rate)
        self.meter = EnvelopeMeter(int(SOURCE_RATE * WINDOW_SECONDS))
        self.pos = 0  # samples (output rate) of this response queued so far


class AudioPlayer:
    """Plays audio deltas, flushes on barge-in, counts played time, drives lip sync.

    ``on_level(level)`` is called on the event loop thread with an RMS level 0..1 per 20 ms
    of audio, at the time that audio leaves the speaker; 0.0 closes the mouth after a flush
    and when the audio runs out.
    """

    def __init__(self, config: AudioConfig, *, on_level: Callable[[float], None] | None = None):
        self.config = config
        self._on_level = on_level
        self._state = "idle"
        self._reason: str | None = "not started"
        self._sd = None
        self._stream = None
        self._rate: int | None = None
        self._device_name: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue = PcmQueue()
        self._levels: LevelScheduler | None = None
        self._responses: OrderedDict = OrderedDict()
        self._flushed: OrderedDict = OrderedDict()
        self._jitter_timer = None
        self._task: asyncio.Task | None = None  # retry or watch task
        self._stopping = False
        self.underruns = 0
        self.dropped_deltas = 0
        self.rejected_deltas = 0
        self.device_underflows = 0  # PortAudio's own output-underflow flags
        self.start_latencies: deque[float] = deque(maxlen=2000)  # seconds, delta -> DAC

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Open the output stream; on failure disable or retry (one log line). Never raises."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._levels = LevelScheduler(self._loop, self._on_level)
        if not self.config.enabled:
            self._set_state("disabled", "disabled in config ([audio] enabled = false)")
            log.info("audio: disabled in config")
            return
        await self._try_open(first=True)

    async def stop(self) -> None:
        """Stop and close the stream and cancel timers and tasks."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        self._cancel_jitter_timer()
        if self._levels is not None:
            self._levels.close()
        self._queue.drop()
        await self._close_stream()
        self._responses.clear()
        if self._state in ("ok", "retrying"):
            self._set_state("idle", "stopped")

    async def _try_open(self, first: bool = False) -> bool:
        try:
            await asyncio.to_thread(self._open_blocking)
        except NoPortAudio as exc:
            self._set_state("disabled", str(exc))
            log.warning("audio: disabled: %s", exc)
            return False
        except Exception as exc:  # no such device, open refused, ...
            reason = f"cannot open output device {self._describe_device()}: {exc}"
            if self.config.retry_seconds > 0:
                if first or self._state != "retrying":
                    log.warning("audio: %s; retrying every %gs", reason, self.config.retry_seconds)
                self._set_state("retrying", reason)
                if first:
                    self._start_task(self._retry())
            else:
                self._set_state("disabled", reason)
                log.warning("audio: disabled: %s", reason)
            return False
        if not first:
            log.info("audio: output device %s is back (%d Hz)", self._device_name, self._rate)
        else:
            log.info("audio: playing on %s at %d Hz", self._device_name, self._rate)
        self._set_state("ok", None)
        self._start_task(self._watch())
        return True

    def _open_blocking(self) -> None:
        """Load PortAudio, open and start the stream (in a worker thread)."""
        if self._sd is None:
            self._sd = load_portaudio()
        stream, rate, name = open_output(self._sd, self.config, self._callback, self._finished)
        if self._stopping:  # stop() ran while this thread was opening the device
            close_output(stream)
            raise RuntimeError("stopped while opening")
        self._queue.rate = self._rate = rate
        self._device_name = name
        self._stream = stream
        stream.start()

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                await asyncio.to_thread(close_output, stream)
            except Exception as exc:
                log.debug("audio: closing the stream failed: %s", exc)

    def _start_task(self, coro) -> None:
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = self._loop.create_task(coro)

    async def _retry(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.config.retry_seconds)
            if await self._try_open():
                return

    async def _watch(self) -> None:
        """Notice a stream that stalls (its callback stops running) while open."""
        last = self._queue.pulls
        while not self._stopping and self._stream is not None:
            await asyncio.sleep(_WATCH_SECONDS)
            pulls = self._queue.pulls
            if pulls == last and self._stream is not None:
                await self._fail("the output stream stalled (no callbacks for %gs)" % _WATCH_SECONDS)
                return
            last = pulls

    def _finished(self) -> None:  # PortAudio thread: the stream became inactive
        loop = self._loop
        if loop is not None and not self._stopping:
            try:
                loop.call_soon_threadsafe(self._on_finished)
            except RuntimeError:
                pass

    def _on_finished(self) -> None:
        if not self._stopping and self._stream is not None and not self._stream.active:
            self._loop.create_task(self._fail("the output stream stopped"))

    async def _fail(self, why: str) -> None:
        if self._stopping or self._state != "ok":
            return
        self._queue.drop()
        self._cancel_jitter_timer()
        self._responses.clear()
        if self._levels is not None:
            self._levels.cancel()
        await self._close_stream()
        reason = f"output device {self._device_name} failed: {why}"
        if self.config.retry_seconds > 0:
            log.warning("audio: %s; retrying every %gs", reason, self.config.retry_seconds)
            self._set_state("retrying", reason)
            self._start_task(self._retry())
        else:
            log.warning("audio: disabled: %s", reason)
            self._set_state("disabled", reason)

    def _set_state(self, state: str, reason: str | None) -> None:
        self._state, self._reason = state, reason

    def _describe_device(self) -> str:
        d = self.config.device
        return "(default)" if d is None else repr(d)

    # ---- the PortAudio callback (its own thread) -------------------------------------
    def _callback(self, outdata, frames, time_info, status) -> None:
        try:
            if status.output_underflow:
                self.device_underflows += 1
            dac = time_info.outputBufferDacTime or time_info.currentTime
            if self._queue.pull(outdata[:, 0], dac):
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
        rate = self._rate
        if queue.queued_frames > MAX_QUEUED_SECONDS * rate:
            self.dropped_deltas += 1
            return
        rs = self._responses.get(response_id)
        if rs is None:
            rs = self._responses[response_id] = _Response(rate)
            if len(self._responses) > 16:
                self._responses.popitem(last=False)
        starts, levels = rs.meter.process(pcm)
        out = apply_volume(rs.resampler.process(pcm), self.config.volume)
        if out.size == 0:
            return
        if rate != SOURCE_RATE:
            starts = (starts * rate + SOURCE_RATE // 2) // SOURCE_RATE
        offsets = np.clip(starts - rs.pos, 0, out.size - 1)
        rs.pos += out.size
        chunk = Chunk(response_id, item_id, out, offsets, levels, self._loop.time())
        chunk.starts = queue.queued_frames == 0 and not queue.gate_open
        queued, gap = queue.push(chunk)
        if gap:
            self.underruns += 1
        if not queue.gate_open:
            if queued >= self.config.jitter_ms * rate // 1000:
                self._open_gate()
            elif self._jitter_timer is None:
                self._jitter_timer = self._loop.call_later(self.config.jitter_ms / 1000, self._open_gate)

    def _open_gate(self) -> None:
        self._cancel_jitter_timer()
        self._queue.open_gate()

    def _cancel_jitter_timer(self) -> None:
        if self._jitter_timer is not None:
            self._jitter_timer.cancel()
            self._jitter_timer = None

    def flush(self, response_id: str | None = None) -> None:
        """Barge-in/cancel: drop the queued audio of ``response_id`` (None: everything).

        The output is silent from the callback's next block; later deltas of a flushed
        response are dropped; the mouth gets one 0.0.
        """
        if response_id is None:
            _frames, chunks, ids = self._queue.drop()
            ids |= set(self._responses)
        else:
            _frames, chunks, ids = self._queue.drop(response_id)
            ids.add(response_id)
        self.dropped_deltas += chunks
        for rid in ids:
            self._responses.pop(rid, None)
            if rid is not None:
                self._flushed[rid] = True
        while len(self._flushed) > 64:
            self._flushed.popitem(last=False)
        if not self._queue.queued_frames:
            self._cancel_jitter_timer()
        if self._levels is not None:
            self._levels.cancel(response_id)

    def _drain(self) -> None:
        """Turn the callback's block records into timed envelope levels and latencies."""
        records = self._queue.take_records()
        if not records or self._stream is None:
            return
        loop_now = self._loop.time()
        try:
            to_loop = loop_now - self._stream.time
        except Exception:
            to_loop = 0.0
        rate = self._rate
        levels = self._levels
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
    def envelope_stats(self) -> dict:
        """Lip-sync counters: levels delivered and dropped as late."""
        lv = self._levels
        return {"delivered": lv.delivered if lv else 0, "dropped_late": lv.dropped_late if lv else 0}

    def health(self) -> dict:
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
        }
