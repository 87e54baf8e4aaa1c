"""Handler registry: integrators' callbacks, called without ever blocking intake.

Register a callback for a topic and get back its unsubscribe function::

    unsubscribe = dispatcher.subscribe("event:response.done", on_done)
    ...
    unsubscribe()

Sync callbacks run one after another, in arrival order, on one worker thread (so a slow
handler delays other handlers but never the socket or ``/health``); async callbacks run as
tasks on the event loop. A callback that raises is logged with the topic and the handler's
name and never reaches the loop. If sync handlers fall more than ``max_backlog`` calls
behind, further calls are dropped and counted (a stuck handler must not eat the robot's
memory).

``inline=True`` (opt-in, per handler) calls a sync callback on the event loop itself, as
ticos-client did: about 0.1 ms sooner (no hop to the worker thread and back through the GIL),
but a slow inline handler delays the socket and ``/health`` for as long as it runs. Use it
only for handlers that return at once (a counter, a queue put).

Thread rules: ``subscribe``/``emit``/``call`` are called on the loop thread. A sync call goes
to the worker at once when the worker is idle and the loop was quiet (below); while it is busy,
the calls one turn of the loop makes are gathered in a list and handed over as one batch, with
one ``queue.SimpleQueue.put`` from a ``loop.call_soon`` callback (a burst of frames costs one
wake-up of the worker, not one per call, and each batch's objects are freed together once it
ran). Order is kept: a call goes straight to the worker only when nothing is queued, and
batches run in the order they were put. At full speed a quick handler leaves the worker idle
again before the next frame, and each frame would wake it with a put (and a yield, below) of
its own: a loop turn that hands calls over within ``BUSY_GAP`` (1 ms) of the one before batches
them as for a busy worker, handed over at the end of the turn without a yield (at 200 events/s
the frames are 5 ms apart and each frame's first sync call still goes at once; a second handler
of the same frame, ``event:*`` beside ``event:<type>``, is batched behind it). The backlog
(``stats()["backlog"]``, held against ``max_backlog``) counts calls, not batches: calls queued
(a counter written on the loop thread only) minus calls finished (one written by the worker
only). The worker hands results back with ``loop.call_soon_threadsafe``.

The wake: the idle worker sleeps in ``get``; the ``put`` wakes it. Measured, the worker then
starts only about when the loop thread next sleeps (its next ``epoll``, after the rest of the
frame and aiohttp's next read), as if Linux had queued it on the loop thread's CPU (its
wake-affine placement; our reading of the figures). So after a put to an idle worker the loop
thread yields its CPU (``os.sched_yield``, one system call that also frees the GIL): the
worker starts at once. The yield gives the worker the GIL too, so the loop thread waits while
the handler runs Python (up to the switch interval, 5 ms); it is made only while the worker's
last batch ran in under ``QUICK_RUN`` (0.5 ms). A handler that computes for longer costs the
loop that wait once, and no yield is made until a batch is quick again.
``bench/thread_hop.py`` measures the wake alone (on the development machine, a container on
2 vCPUs: p50 105 -> 34 us); ``bench/load.py`` the effect (README). A call queued while the
worker is busy, or in a batch of back-to-back turns, is not followed by a yield.

The GIL: a loop that is never idle (a flood of frames) would keep the worker from ever
running (see :meth:`Dispatcher._let_worker_run`), so while the worker is a tenth of
``max_backlog`` behind, the loop sleeps ``WORKER_TURN`` (0.2 ms) at the end of a turn, at most
every ``TURN_GAP`` (1 ms), and less and less often while the worker finishes no call (a handler
blocked on I/O does not make the loop wait for it).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

_STOP = None  # the worker's end-of-jobs marker
_ONE = object()  # in a batch's future slot: no future, and ``args`` is the one argument itself
WORKER_TURN = 0.0002  # seconds the loop sleeps to let a lagging worker take the GIL ...
TURN_GAP = 0.001  # ... at most this often while it keeps up with its turns
QUICK_RUN = 0.0005  # the loop yields its CPU to an idle worker only while its batches take less
BUSY_GAP = 0.001  # a loop turn that hands calls over this soon after the last one batches them
_sched_yield = getattr(os, "sched_yield", None)  # (Linux, the BSDs, macOS)
_clock = time.perf_counter  # (time.monotonic ticks every ~16 ms on Windows)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def handler_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


class _Entry(NamedTuple):
    fn: Callable[..., Any]
    is_async: bool
    inline: bool
    worker: bool  # neither: a call for the handler thread


def _entry(fn: Callable[..., Any], inline: bool) -> _Entry:
    is_async = _is_async(fn)
    inline = inline and not is_async
    return _Entry(fn, is_async, inline, not (is_async or inline))


class Dispatcher:
    def __init__(self, *, max_backlog: int = 10_000):
        self._handlers: dict[str, list[_Entry]] = {}
        # batches of sync calls, each a flat list: topic, fn, args, future (or None), topic, ...
        self._jobs: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self._batch: list[Any] = []  # this loop turn's sync calls, not yet handed over (loop thread)
        self._queued = 0  # sync calls ever queued: written on the loop thread only
        self._done = 0  # sync calls the worker has finished: written on the worker thread only
        self._quick = True  # the worker's last batch took under QUICK_RUN: written by the worker only
        self._flush_due = False  # a _flush is scheduled on the loop (loop thread)
        self._last_hand = -1.0  # when a call last found this turn's batch empty (perf_counter, loop thread)
        self._done_at_turn = -1  # ``_done`` when the loop last let the worker run (loop thread)
        self._next_turn = 0.0  # not before this time (``time.monotonic()``)
        self._idle_turns = 0  # turns in a row after which the worker had finished no call
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.max_backlog = max_backlog
        self._here = 0  # calls of async and inline handlers (loop thread)
        self.errors = 0
        self.dropped = 0
        self._last_drop_log = 0.0

    # --- registration ---------------------------------------------------------------------

    def subscribe(self, topic: str, fn: Callable[..., Any], *, inline: bool = False) -> Callable[[], None]:
        if not callable(fn):
            raise TypeError(f"handler for {topic!r} must be callable, got {type(fn).__name__}")
        entry = _entry(fn, inline)
        # copy-on-write: emit() may be iterating the old list
        self._handlers[topic] = [*self._handlers.get(topic, ()), entry]

        def unsubscribe() -> None:
            handlers = self._handlers.get(topic)
            if handlers and entry in handlers:
                remaining = [h for h in handlers if h is not entry]
                if remaining:
                    self._handlers[topic] = remaining
                else:
                    del self._handlers[topic]

        return unsubscribe

    def has(self, topic: str) -> bool:
        return topic in self._handlers

    def handlers(self, topic: str) -> list[Callable[..., Any]]:
        return [e.fn for e in self._handlers.get(topic, ())]

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name="ticos-handlers", daemon=True)
            self._thread.start()

    async def stop(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - a bound, not a cancellation scope
        """Let queued sync calls finish (up to ``timeout``), then cancel running async ones."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._flush()  # this loop turn's calls are queued too, before the end marker
            self._jobs.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, thread.join, timeout)
            if thread.is_alive():
                log.warning("handler thread still busy after %.1fs; leaving it behind", timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    # --- calling --------------------------------------------------------------------------

    def emit(self, topic: str, *args: Any) -> int:
        """Call every handler of ``topic`` with ``args``; returns how many were scheduled."""
        handlers = self._handlers.get(topic)
        if not handlers:
            return 0
        for entry in handlers:
            self._schedule(topic, entry, args, None)
        return len(handlers)

    def emit_each(self, topics: tuple[str, ...], arg: Any) -> int:
        """``emit(topic, arg)`` for each of ``topics`` in turn (``("event:*", "event:<type>")``
        for every frame), in one call. A sync handler's call is queued without a tuple of its
        own that lives until the worker ran it (every such object counts towards the loop
        thread's next garbage collection), and while this turn's batch is open it is added
        right here. Returns how many calls were scheduled."""
        count = 0
        get = self._handlers.get
        batch = self._batch
        for topic in topics:
            handlers = get(topic)
            if not handlers:
                continue
            count += len(handlers)
            for entry in handlers:
                if not entry.worker:
                    self._schedule(topic, entry, (arg,), None)
                elif batch and self._queued - self._done < self.max_backlog:
                    batch += (topic, entry.fn, arg, _ONE)
                    self._queued += 1
                else:
                    self._queue(topic, entry.fn, arg, _ONE)
                    batch = self._batch
        return count

    def call(self, topic: str, fn: Callable[..., Any], *args: Any,
             registered: str | None = None) -> asyncio.Future[Any]:
        """Call one handler and return a future with its result (or its exception).

        ``fn`` runs as it was subscribed (on the worker, inline or as a task) under
        ``registered`` (default: ``topic``, which names the call in the log)."""
        loop = self._running_loop()
        future = loop.create_future()
        entry = next((e for e in self._handlers.get(registered or topic, ()) if e.fn is fn), None)
        self._schedule(topic, entry or _entry(fn, False), args, future)
        return future

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the dispatcher is not started")
        return self._loop

    def _schedule(self, topic: str, entry: _Entry, args: tuple[Any, ...], future: asyncio.Future[Any] | None) -> None:
        fn = entry.fn
        if entry.worker:
            self._queue(topic, fn, args, future)
            return
        self._here += 1
        if entry.is_async:
            task = self._running_loop().create_task(self._run_async(topic, fn, args, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if future is not None:  # a caller that gives up (timeout) stops the handler too
                future.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
            return
        self._run_inline(topic, fn, args, future)

    def _queue(self, topic: str, fn: Callable[..., Any], args: Any, future: Any) -> None:
        """Add one sync call to this loop turn's batch; ``future`` is ``None``, the caller's
        future, or ``_ONE`` (no future, and ``args`` is the one argument)."""
        if self._thread is None or self._queued - self._done >= self.max_backlog:
            self._drop(topic, fn, None if future is _ONE else future)
            return
        batch = self._batch
        if not batch:
            now = _clock()
            last, self._last_hand = self._last_hand, now
            if self._queued == self._done and now - last >= BUSY_GAP:  # an idle worker, a quiet loop: now
                self._queued += 1
                self._jobs.put([topic, fn, args, future])
                if self._quick and _sched_yield is not None:  # see "The wake" in the module docstring
                    _sched_yield()
                return
            self._flush_soon()
        # flat (topic, fn, args, future, topic, ...): no tuple per call that lives until the
        # worker frees it (each such object counts towards the next garbage collection)
        batch += (topic, fn, args, future)
        self._queued += 1

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self._running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Hand this loop turn's sync calls to the worker, as one batch (loop thread)."""
        self._flush_due = False
        batch = self._batch
        if batch:
            self._batch = []
            self._jobs.put(batch)
        if self._thread is not None and self._queued - self._done >= max(1, self.max_backlog // 10):
            self._let_worker_run()

    def _let_worker_run(self) -> None:
        """The worker lags: give it the GIL for a moment (loop thread).

        A loop that is never idle but calls into the OS (epoll, recv) more often than every
        ``sys.getswitchinterval()`` releases the GIL only for an instant and takes it back
        before the waiting worker wakes: the worker would wait until the loop goes idle, its
        calls piling up to ``max_backlog`` and being dropped (the GIL "convoy"). A short sleep
        (``WORKER_TURN``, at most every ``TURN_GAP``) lets it in; it then runs until it has
        nothing left or for one switch interval. A worker that finished no call over several
        turns is busy in a handler (blocked on I/O, say), not waiting for the GIL: the turns
        then come less and less often (a stuck handler costs the loop a sleep now and then)."""
        now = time.monotonic()
        if now < self._next_turn:
            return
        done = self._done
        self._idle_turns = self._idle_turns + 1 if done == self._done_at_turn else 0
        self._done_at_turn = done
        self._next_turn = now + min(1.0, TURN_GAP * 2 ** max(0, self._idle_turns - 3))
        time.sleep(WORKER_TURN)

    def _drop(self, topic: str, fn: Callable[..., Any], future: asyncio.Future[Any] | None) -> None:
        self.dropped += 1
        if self._thread is not None:
            self._flush_soon()  # the worker's turn comes even while every call is dropped
        now = time.monotonic()
        if now - self._last_drop_log > 5:
            self._last_drop_log = now
            log.error("sync handlers are %d calls behind; dropping %s for %s (dropped so far: %d)",
                      self._queued - self._done, topic, handler_name(fn), self.dropped)
        if future is not None:
            reason = "handler backlog full" if self._thread is not None else "handlers are stopped"
            future.set_exception(RuntimeError(f"{reason}; call dropped"))

    def _run_inline(self, topic: str, fn: Callable[..., Any], args: tuple[Any, ...],
                    future: asyncio.Future[Any] | None) -> None:
        try:
            result = fn(*args)
        except Exception as exc:
            self._failed(topic, fn, exc)
            if future is not None and not future.done():
                future.set_exception(exc)
        else:
            if future is not None and not future.done():
                future.set_result(result)

    async def _run_async(self, topic: str, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                         future: asyncio.Future[Any] | None) -> None:
        try:
            result = await fn(*args)
        except asyncio.CancelledError:
            if future is not None and not future.done():
                future.cancel()
            raise
        except Exception as exc:
            self._failed(topic, fn, exc)
            if future is not None and not future.done():
                future.set_exception(exc)
        else:
            if future is not None and not future.done():
                future.set_result(result)

    def _worker(self) -> None:
        get, run, clock = self._jobs.get, self._run_batch, time.perf_counter
        while True:
            batch = get()  # untimed: a timed get can report Empty while it waits for the GIL
            if batch is _STOP:
                return
            began = clock()
            run(batch)
            self._quick = clock() - began < QUICK_RUN
            # nothing of a finished batch is kept while waiting for the next: its events are
            # freed now, not after the loop made the next batch (fewer objects alive at once
            # means fewer garbage collections on the loop thread)
            del batch

    def _run_batch(self, batch: list[Any]) -> None:
        failed, resolve = self._failed, self._resolve
        calls = iter(batch)
        for topic, fn, args, future in zip(calls, calls, calls, calls):
            if future is _ONE:
                try:
                    fn(args)
                except BaseException as exc:  # SystemExit from a handler must not end this thread
                    failed(topic, fn, exc)
            else:
                try:
                    result = fn(*args)
                except BaseException as exc:
                    failed(topic, fn, exc)
                    if future is not None:
                        resolve(future, None, exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                else:
                    if future is not None:
                        resolve(future, result, None)
            self._done += 1  # this thread alone writes it

    def _resolve(self, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        try:
            self._running_loop().call_soon_threadsafe(settle)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _failed(self, topic: str, fn: Callable[..., Any], exc: BaseException) -> None:
        self.errors += 1
        log.error("handler %s failed on %s: %s: %s", handler_name(fn), topic, type(exc).__name__, exc,
                  exc_info=exc)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def calls(self) -> int:
        """Calls scheduled so far: run on the loop, queued for the worker, or dropped."""
        return self._here + self._queued + self.dropped

    def stats(self) -> dict[str, int]:
        """``backlog``: sync calls queued and not finished yet (calls, not batches)."""
        return {"calls": self.calls, "errors": self.errors, "dropped": self.dropped,
                "backlog": self._queued - self._done}
