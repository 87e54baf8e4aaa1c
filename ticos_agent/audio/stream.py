"""The output stream's life cycle for :class:`~ticos_agent.audio.player.AudioPlayer`:
open, watch, fail, retry, stop.

Blocking PortAudio calls (open, start, abort, close, re-initialise) run in short-lived
*daemon* threads (:func:`in_thread`), so a device that hangs in ALSA never blocks the event
loop nor the interpreter's exit.

Thread rules (``_lock`` is a :class:`threading.Lock`):

* A worker publishes a new stream only under ``_lock``, and only when no ``stop()`` came
  since it was launched (``_gen`` did not change and ``_stopping`` is false); the stream is
  started under the same lock. Otherwise the worker closes the stream it opened itself.
* Closing takes ``self._stream`` under ``_lock`` too (in the closing thread), so a stream is
  never started and closed at the same time, and one that was published is always seen by
  the close. ``_closing`` counts closes in flight.
* ``_open_lock`` serialises opens and PortAudio re-initialisation. Before each *retry*
  PortAudio is terminated and initialised again (its device list is fixed at
  initialisation), but only while no stream is open and none is closing.
* A failure sets ``state`` to ``retrying``/``disabled`` *before* the old stream is closed,
  so ``feed()`` drops (and counts) deltas from that moment even if the close hangs; a close
  that takes longer than ``CLOSE_TIMEOUT`` is logged and left behind in its thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from ..background import thread_call
from .device import (
    MIN_FREE_FDS,
    CallbackFlags,
    CallbackTime,
    NoPortAudio,
    OutputStream,
    close_output,
    free_fds,
    load_portaudio,
    open_output,
    reinit_portaudio,
)
from .envelope import LevelScheduler

if TYPE_CHECKING:
    import numpy as np

    from .buffer import PcmQueue
    from .config import AudioConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

WATCH_SECONDS = 2.0  # a stream whose callback has not run for this long has stalled
CLOSE_TIMEOUT = 2.0  # stop()/a failure waits this long for a device to close, then moves on


def in_thread(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """Run the blocking ``fn(*args)`` in a new *daemon* thread (a device that hangs in ALSA must
    not keep the process from exiting); a future for its result, on the running loop."""
    return thread_call(functools.partial(fn, *args), name="ticos-audio-device", daemon=True)[1]


class StreamLifecycle:
    """Mixin: the stream state of an AudioPlayer (see the module docstring)."""

    # the player's state this works on (AudioPlayer.__init__ sets it)
    config: AudioConfig
    _on_level: Callable[[float], None] | None
    _state: str
    _reason: str | None
    _sd: ModuleType | None
    _stream: OutputStream | None
    _rate: int | None
    _device_name: str | None
    _loop: asyncio.AbstractEventLoop | None
    _queue: PcmQueue
    _levels: LevelScheduler | None
    _task: asyncio.Task[None] | None
    _stopping: bool

    # the player's parts this calls
    def _callback(self, outdata: np.ndarray, frames: int, time_info: CallbackTime, status: CallbackFlags) -> None:
        raise NotImplementedError

    def _cancel_jitter_timer(self) -> None:
        raise NotImplementedError

    def _forget_responses(self) -> None:
        """Drop the per-response state (resamplers, envelope meters) of what was queued."""
        raise NotImplementedError

    def _init_lifecycle(self) -> None:
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._gen = 0  # bumped by stop(): workers launched before it publish nothing
        self._closing = 0  # closes in flight (PortAudio is not re-initialised meanwhile)
        self.portaudio_reinits = 0
        self.portaudio_reinits_skipped = 0

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
        self._gen += 1
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
        self._forget_responses()
        if self._state in ("ok", "retrying"):
            self._set_state("idle", "stopped")

    async def _try_open(self, first: bool = False) -> bool:
        gen = self._gen
        try:
            await in_thread(self._open_blocking, gen, not first)
        except NoPortAudio as exc:
            self._set_state("disabled", str(exc))
            log.warning("audio: disabled: %s", exc)
            return False
        except Exception as exc:  # no such device, open refused, ...
            if self._stopping or gen != self._gen:
                return False
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

    def _open_blocking(self, gen: int, retry: bool) -> None:
        """Load PortAudio (re-initialise it on a retry), open and start the stream (worker
        thread); publish it unless stop() came meanwhile."""
        with self._open_lock:
            if self._sd is None:
                self._sd = load_portaudio()
            elif retry and self.config.rescan_devices:
                self._reinit_portaudio()
            stream, rate, name = open_output(self._sd, self.config, self._callback, self._finished)
            with self._lock:
                if not self._stopping and gen == self._gen and self._stream is None:
                    self._queue.rate = self._rate = rate
                    self._device_name = name
                    try:
                        stream.start()
                    except BaseException:
                        close_output(stream)
                        raise
                    self._stream = stream
                    return
            close_output(stream)  # stop() ran while this thread was opening the device
            raise RuntimeError("stopped while opening")

    def _reinit_portaudio(self) -> None:
        """Re-read PortAudio's device list, unless a stream is open or still closing."""
        with self._lock:
            busy = self._stream is not None or self._closing > 0
        if busy:
            log.debug("audio: PortAudio not re-initialised: a stream is open or closing")
            return
        free = free_fds()
        if free is not None and free < MIN_FREE_FDS:
            self.portaudio_reinits_skipped += 1
            log.warning("audio: PortAudio not re-initialised: only %d file descriptors free (it needs %d)",
                        free, MIN_FREE_FDS)
            return
        assert self._sd is not None  # loaded by the first open
        reinit_portaudio(self._sd)
        self.portaudio_reinits += 1

    def _take_and_close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
            if stream is None:
                return
            self._closing += 1
        try:
            close_output(stream)
        finally:
            with self._lock:
                self._closing -= 1

    async def _close_stream(self) -> None:
        # always through _lock in a thread, never "if self._stream is None: return": a worker
        # may be starting a stream it will publish when the lock is free
        if self._loop is None:
            return
        fut = in_thread(self._take_and_close)
        try:
            await asyncio.wait_for(asyncio.shield(fut), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("audio: closing output device %s hangs (> %gs); carrying on without it",
                        self._device_name, CLOSE_TIMEOUT)
        except Exception as exc:
            log.debug("audio: closing the stream failed: %s", exc)

    def _start_task(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()
        assert self._loop is not None  # set by start()
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
            await asyncio.sleep(WATCH_SECONDS)
            pulls = self._queue.pulls
            if pulls == last and self._stream is not None:
                await self._fail(f"the output stream stalled (no callbacks for {WATCH_SECONDS:g}s)")
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
        stream = self._stream
        if not self._stopping and self._state == "ok" and stream is not None and not stream.active:
            self._start_task(self._fail("the output stream stopped"))  # kept in self._task

    async def _fail(self, why: str) -> None:
        if self._stopping or self._state != "ok":
            return
        reason = f"output device {self._device_name} failed: {why}"
        retry = self.config.retry_seconds > 0
        # state first: feed() drops from now on, even if closing the device hangs
        self._set_state("retrying" if retry else "disabled", reason)
        log.warning("audio: %s", f"{reason}; retrying every {self.config.retry_seconds:g}s" if retry else
                    f"disabled: {reason}")
        self._queue.drop()
        self._cancel_jitter_timer()
        self._forget_responses()
        if self._levels is not None:
            self._levels.cancel()
        await self._close_stream()
        if retry and not self._stopping:
            self._start_task(self._retry())

    def _set_state(self, state: str, reason: str | None) -> None:
        self._state, self._reason = state, reason

    def _describe_device(self) -> str:
        d = self.config.device
        return "(default)" if d is None else repr(d)
