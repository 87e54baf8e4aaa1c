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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


def _is_async(fn: Callable) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def handler_name(fn: Callable) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


class Dispatcher:
    def __init__(self, *, max_backlog: int = 10_000):
        self._handlers: dict[str, list[tuple[Callable, bool]]] = {}
        # jobs for the handler thread: a deque (append/popleft are atomic) and a wake-up event
        # that is only set when the thread may be asleep, so a busy thread costs no signalling
        self._jobs: deque = deque()
        self._wake = threading.Event()
        self._worker_busy = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self.max_backlog = max_backlog
        self.calls = 0
        self.errors = 0
        self.dropped = 0
        self._last_drop_log = 0.0

    # --- registration ---------------------------------------------------------------------

    def subscribe(self, topic: str, fn: Callable) -> Callable[[], None]:
        if not callable(fn):
            raise TypeError(f"handler for {topic!r} must be callable, got {type(fn).__name__}")
        entry = (fn, _is_async(fn))
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

    def handlers(self, topic: str) -> list[Callable]:
        return [fn for fn, _ in self._handlers.get(topic, ())]

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name="ticos-handlers", daemon=True)
            self._thread.start()

    async def stop(self, timeout: float = 2.0) -> None:
        """Let queued sync calls finish (up to ``timeout``), then cancel running async ones."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.append(_STOP)
            self._wake.set()
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
        for fn, is_async in handlers:
            self._schedule(topic, fn, is_async, args, None)
        return len(handlers)

    def call(self, topic: str, fn: Callable, *args: Any) -> asyncio.Future:
        """Call one handler and return a future with its result (or its exception)."""
        future = self._loop.create_future()
        self._schedule(topic, fn, _is_async(fn), args, future)
        return future

    def _schedule(self, topic, fn, is_async, args, future) -> None:
        self.calls += 1
        if is_async:
            task = self._loop.create_task(self._run_async(topic, fn, args, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if future is not None:  # a caller that gives up (timeout) stops the handler too
                future.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
            return
        jobs = self._jobs
        if len(jobs) >= self.max_backlog or self._thread is None:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log > 5:
                self._last_drop_log = now
                log.error("sync handlers are %d calls behind; dropping %s for %s (dropped so far: %d)",
                          len(jobs), topic, handler_name(fn), self.dropped)
            if future is not None:
                reason = "handler backlog full" if self._thread is not None else "handlers are stopped"
                future.set_exception(RuntimeError(f"{reason}; call dropped"))
            return
        jobs.append((topic, fn, args, future))
        if not self._worker_busy:
            self._wake.set()

    async def _run_async(self, topic, fn, args, future) -> None:
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
        jobs, wake = self._jobs, self._wake
        while True:
            wake.wait()
            wake.clear()
            self._worker_busy = True
            while jobs:
                job = jobs.popleft()
                if job is _STOP:
                    self._worker_busy = False
                    return
                self._run_sync(*job)
            self._worker_busy = False
            if jobs:  # appended after the last popleft while we still looked busy
                wake.set()

    def _run_sync(self, topic, fn, args, future) -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # SystemExit from a handler must not end this thread
            self._failed(topic, fn, exc)
            if future is not None:
                self._resolve(future, None, exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
        else:
            if future is not None:
                self._resolve(future, result, None)

    def _resolve(self, future, result, exc) -> None:
        def settle():
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _failed(self, topic: str, fn: Callable, exc: BaseException) -> None:
        self.errors += 1
        log.error("handler %s failed on %s: %s: %s", handler_name(fn), topic, type(exc).__name__, exc,
                  exc_info=exc)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, int]:
        return {"calls": self.calls, "errors": self.errors, "dropped": self.dropped, "backlog": len(self._jobs)}
