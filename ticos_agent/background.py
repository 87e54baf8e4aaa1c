"""Background tasks the agent waits for (briefly) when it stops: calls being carried out,
replies being sent. A task that fails is logged; it never reaches the loop's handler.

:func:`in_thread` runs the agent's occasional blocking file work (opening the database,
writing session_config, probing the TF card) on a thread that ends with it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def thread_call(fn: Callable[[], T], *, name: str, daemon: bool = False
                ) -> tuple[threading.Thread, asyncio.Future[T]]:
    """Start ``fn()`` on a new thread (called on the loop); the future gets its result or its
    exception on the loop. A future the caller cancelled (a timeout) is left alone."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():  # the caller was cancelled
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, exc = fn(), None
        except BaseException as error:
            result, exc = None, error
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop closed meanwhile: nobody waits for it
            pass

    thread = threading.Thread(target=run, name=name, daemon=daemon)
    thread.start()
    return thread, future


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``await asyncio.to_thread(fn, *args, **kwargs)``, on a thread of its own that ends with the call.

    asyncio's default executor keeps its threads, each with its stack and a malloc arena of its
    own (a few hundred kB of a small board's memory), for the rest of the run, for work done
    once at start or every few minutes. As with ``to_thread``, a caller that is cancelled does
    not stop the call, and the interpreter waits for it at exit."""
    _, future = thread_call(partial(fn, *args, **kwargs), name=f"ticos-io-{getattr(fn, '__name__', 'call')}")
    return await future


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %s", task.exception(), exc_info=task.exception())

    async def drain(self, grace: float = 2.0) -> None:
        """Let running tasks finish for up to ``grace`` seconds, then cancel the rest (a call
        task stores its outcome as dropped when cancelled)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace)
