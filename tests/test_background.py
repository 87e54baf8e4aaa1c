"""``in_thread``: blocking work on a thread of its own that ends with the call."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ticos_agent.background import in_thread


async def test_the_call_runs_off_the_loop_on_a_thread_that_ends_with_it():
    loop_thread = threading.get_ident()
    seen: list[threading.Thread] = []

    def work(a: int, *, b: int) -> int:
        seen.append(threading.current_thread())
        return a + b

    assert await in_thread(work, 2, b=3) == 5
    assert seen[0].ident != loop_thread
    seen[0].join(1)
    assert not seen[0].is_alive()  # unlike the default executor's, which would idle on


async def test_an_exception_reaches_the_caller():
    def fails() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await in_thread(fails)


async def test_a_caller_that_gives_up_leaves_the_call_to_finish_quietly():
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    release = threading.Event()
    done = threading.Event()

    def slow() -> str:
        release.wait(5)
        done.set()
        return "late"

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(in_thread(slow), 0.05)
    release.set()
    for _ in range(500):
        if done.is_set():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # its result arrives on the loop and is dropped without an error
    assert done.is_set()
    assert errors == []  # setting the result of the cancelled future would be reported here
