"""The dispatcher's handler thread: calls handed over in batches, in order, counted as calls.

A real :class:`Dispatcher` on the test's own event loop, and a real agent on a loopback port;
a handler held on a ``threading.Event`` makes the worker busy at a known moment.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import aiohttp
from helpers import agent_config, wait_for

from ticos_agent import Agent
from ticos_agent.dispatch import Dispatcher


async def _started(**kw) -> Dispatcher:
    d = Dispatcher(**kw)
    d.start(asyncio.get_running_loop())
    return d


async def test_calls_keep_their_order_across_loop_turns_batches_and_the_idle_worker():
    d = await _started()
    seen: list[tuple[str, int]] = []
    gate = threading.Event()
    d.subscribe("event:*", lambda e: seen.append(("*", e)))
    d.subscribe("event:*", lambda e: gate.wait(5) if e == 0 else None)  # holds the worker at the first call
    d.subscribe("event:x", lambda e: seen.append(("x", e)))
    try:
        n = 0
        for turn in range(20):  # some turns hand over one call, some many; the worker is held, then free
            for _ in range(turn % 4 + 1):
                if n % 2:
                    d.emit_each(("event:*",), n)
                    d.emit("event:x", n)
                else:  # the per-frame path: both topics in one call
                    assert d.emit_each(("event:*", "event:x", "event:nobody"), n) == 3
                n += 1
            if turn == 10:
                gate.set()
            await asyncio.sleep(0 if turn % 3 else 0.01)
        await wait_for(lambda: len(seen) == 2 * n)
        assert seen == [(topic, i) for i in range(n) for topic in ("*", "x")]
        assert d.stats() == {"calls": 3 * n, "errors": 0, "dropped": 0, "backlog": 0}
    finally:
        gate.set()
        await d.stop()


async def test_a_blocked_handler_counts_calls_not_batches_and_drops_past_max_backlog(caplog):
    caplog.set_level(logging.ERROR, logger="ticos_agent")
    d = await _started(max_backlog=5)
    gate = threading.Event()
    running = threading.Event()
    ran: list[int] = []

    def stuck(n: int) -> None:
        running.set()
        gate.wait(5)
        ran.append(n)

    d.subscribe("t", stuck)
    try:
        d.emit("t", 0)
        await wait_for(running.is_set)  # the worker runs call 0 and is stuck in it
        d.emit("t", 1)
        d.emit("t", 2)
        await asyncio.sleep(0)  # one batch handed over
        d.emit("t", 3)
        await asyncio.sleep(0)  # a second batch
        assert d.stats()["backlog"] == 4  # the running call and three queued ones, in two batches
        d.emit_each(("t",), 4)  # the fifth: the backlog is full now
        d.emit("t", 5)
        d.emit_each(("t",), 6)
        dropped = d.call("t", stuck, 7)
        assert d.stats() == {"calls": 8, "errors": 0, "dropped": 3, "backlog": 5}
        assert dropped.done() and "handler backlog full" in str(dropped.exception())
        assert any("5 calls behind" in r.getMessage() and "stuck" in r.getMessage() for r in caplog.records)
        gate.set()
        await wait_for(lambda: d.stats()["backlog"] == 0)
        assert ran == [0, 1, 2, 3, 4]
        d.emit("t", 8)  # room again
        await wait_for(lambda: ran[-1] == 8)
    finally:
        gate.set()
        await d.stop()


async def test_stop_runs_the_calls_of_the_current_turn_that_were_not_handed_over_yet():
    d = await _started()
    gate = threading.Event()
    ran: list[int] = []
    d.subscribe("t", lambda n: (gate.wait(5) if n == 0 else None, ran.append(n)))
    d.emit("t", 0)
    await wait_for(lambda: d.stats()["backlog"] == 1 and not d._batch)
    for n in range(1, 6):  # the worker is busy: these wait in this turn's batch
        d.emit("t", n)
    assert len(d._batch) == 5 * 4  # not handed over yet (four slots a call)
    threading.Timer(0.05, gate.set).start()
    await d.stop()
    assert ran == [0, 1, 2, 3, 4, 5]
    assert d.stats()["backlog"] == 0
    d.emit("t", 6)  # after stop: dropped, not queued for a worker that is gone
    assert d.stats()["dropped"] == 1 and ran == [0, 1, 2, 3, 4, 5]


async def test_a_raising_handler_inside_a_batch_is_logged_by_name_and_topic_and_the_rest_run(caplog):
    caplog.set_level(logging.ERROR, logger="ticos_agent")
    d = await _started()
    ran: list[int] = []

    def picky_handler(n: int) -> None:
        if n % 2:
            raise ValueError(f"odd {n}")
        ran.append(n)

    d.subscribe("event:picky", picky_handler)
    loop = asyncio.get_running_loop()
    futures = []
    try:
        for n in range(6):
            d.emit_each(("event:picky",), n)
        futures = [d.call("event:picky", picky_handler, n) for n in (10, 11)]
        await wait_for(lambda: d.stats()["backlog"] == 0 and all(f.done() for f in futures))
        assert ran == [0, 2, 4, 10]
        assert futures[0].result() is None and isinstance(futures[1].exception(), ValueError)
        failures = [r.getMessage() for r in caplog.records if "picky_handler" in r.getMessage()]
        assert len(failures) == 4 and all("event:picky" in m and "ValueError: odd" in m for m in failures)
        assert d.stats()["errors"] == 4
        assert loop.is_running()
    finally:
        await d.stop()


async def test_emit_each_calls_async_and_inline_handlers_as_emit_does():
    d = await _started()
    got: list[tuple[str, object]] = []
    loop_thread = threading.get_ident()

    async def later(event):
        got.append(("async", event))

    d.subscribe("event:*", later)
    d.subscribe("event:*", lambda e: got.append(("inline", threading.get_ident() == loop_thread)), inline=True)
    d.subscribe("event:*", lambda e: got.append(("worker", threading.get_ident() != loop_thread)))
    try:
        assert d.emit_each(("event:*",), {"n": 1}) == 3
        assert d.emit_each(("event:none",), {"n": 1}) == 0
        await wait_for(lambda: len(got) == 3)
        assert sorted(got, key=str) == sorted([("async", {"n": 1}), ("inline", True), ("worker", True)], key=str)
    finally:
        await d.stop()


async def test_a_blocked_sync_handler_holds_up_neither_the_socket_nor_health(tmp_path, connect):
    agent = Agent(agent_config(tmp_path))
    gate = threading.Event()
    seen: list[int] = []

    def handler(event: dict) -> None:
        gate.wait(10)
        seen.append(event["n"])

    agent.on("custom.tick", handler)
    await agent.start()
    try:
        peer = await connect(agent)
        await peer.send(*({"type": "custom.tick", "n": i} for i in range(500)))
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: agent.counters["events"] >= 500)  # every frame was taken in
            t0 = time.perf_counter()
            async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
                health = await resp.json()
            assert time.perf_counter() - t0 < 1.0
        assert health["handlers"]["backlog"] == 500 and seen == []
        gate.set()
        await wait_for(lambda: len(seen) == 500)
        assert seen == list(range(500)) and agent.dispatcher.stats()["backlog"] == 0
    finally:
        gate.set()
        await agent.stop()


async def test_a_loop_that_is_never_idle_still_lets_the_worker_run():
    """The GIL convoy: a loop busy in Python that calls into the OS (epoll) every millisecond
    takes the GIL back before the waiting worker wakes; without a turn of its own the worker
    would wait for the loop to go idle while its calls pile up and are dropped."""
    d = await _started(max_backlog=2_000)
    ran = [0]

    def handler(n: int) -> None:
        ran[0] += 1

    d.subscribe("event:*", handler)
    try:
        sent = 0
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:
            turn_ends = time.perf_counter() + 0.001
            for _ in range(100):  # 100k calls a second: more than the intake takes at full speed
                d.emit_each(("event:*",), sent)
                sent += 1
            while time.perf_counter() < turn_ends:  # the rest of a busy millisecond
                pass
            await asyncio.sleep(0)  # the loop polls epoll (releasing the GIL for an instant)
        assert d.stats()["dropped"] == 0, f"{d.stats()} after {sent} calls"
        await wait_for(lambda: ran[0] == sent)
    finally:
        await d.stop()


async def test_a_stuck_handler_does_not_make_the_loop_wait_for_it_turn_after_turn(monkeypatch):
    """Turns for a lagging worker are for a worker waiting for the GIL; one blocked in a handler
    gets them less and less often, so a stuck handler costs the loop almost nothing."""
    import ticos_agent.dispatch as dispatch

    d = await _started(max_backlog=500)
    gate = threading.Event()
    ran: list[int] = []
    d.subscribe("t", lambda n: (gate.wait(10), ran.append(n)))
    sleeps = []
    real_sleep = time.sleep
    monkeypatch.setattr(dispatch.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    try:
        sent = 0
        deadline = time.perf_counter() + 0.5
        while time.perf_counter() < deadline:
            for _ in range(50):
                d.emit("t", sent)
                sent += 1
            await asyncio.sleep(0.0005)
        turns = [s for s in sleeps if s == dispatch.WORKER_TURN]
        assert 1 <= len(turns) <= 15, f"{len(turns)} turns in 0.5 s with the handler stuck"
        assert d.stats()["backlog"] == 500 and d.stats()["dropped"] == sent - 500
    finally:
        monkeypatch.undo()
        gate.set()
    await wait_for(lambda: d.stats()["backlog"] == 0)
    assert ran == list(range(500))
    await d.stop()


async def test_the_loop_yields_to_an_idle_worker_only_while_its_handlers_are_quick(monkeypatch):
    """The yield after a put to the idle worker hands it the GIL; a handler that computes for
    milliseconds would hold the loop that long at every call, so it gets no more yields."""
    from ticos_agent import dispatch

    yields = [0]
    monkeypatch.setattr(dispatch, "_sched_yield", lambda: yields.__setitem__(0, yields[0] + 1))
    clock = iter(range(10**6))  # each hand-over a second after the last: never back to back
    monkeypatch.setattr(dispatch, "_clock", lambda: float(next(clock)))
    d = await _started()
    ran: list[str] = []

    def spin(event: str) -> None:
        if event == "slow":
            end = time.perf_counter() + 0.003
            while time.perf_counter() < end:
                pass
        ran.append(event)

    d.subscribe("event:*", spin)
    sequence = ("quick", "slow", "slow", "slow", "quick", "quick")
    yielded: list[bool] = []
    try:
        for event in sequence:
            before = yields[0]
            d.emit("event:*", event)  # each goes to an idle worker
            yielded.append(yields[0] > before)
            await wait_for(lambda: len(ran) == len(yielded) and d.stats()["backlog"] == 0)
        assert ran == list(sequence)
        assert yielded[0]  # a fresh worker: the loop yields to it
        assert not any(yielded[i + 1] for i, event in enumerate(sequence[:-1]) if event == "slow"), yielded
    finally:
        await d.stop()


async def test_turns_back_to_back_hand_calls_over_as_batches_without_waking_the_worker_each_time(monkeypatch):
    """At full speed each frame found the worker idle again (a quick handler) and woke it with a
    put and a yield of its own; turns that hand calls over within ``BUSY_GAP`` of the last one
    batch them instead, as for a busy worker. A call after a pause goes at once again."""
    from ticos_agent import dispatch

    yields = [0]
    monkeypatch.setattr(dispatch, "_sched_yield", lambda: yields.__setitem__(0, yields[0] + 1))
    now = [100.0]
    monkeypatch.setattr(dispatch, "_clock", lambda: now[0])
    d = await _started()
    ran: list[int] = []
    d.subscribe("event:*", ran.append)
    try:
        d.emit("event:*", 0)  # a quiet loop, an idle worker: handed over now, with a yield
        assert (d._batch, yields[0]) == ([], 1)
        await wait_for(lambda: ran == [0] and d.stats()["backlog"] == 0)
        for n in range(1, 4):  # the next turns come within BUSY_GAP of each other
            now[0] += dispatch.BUSY_GAP / 2
            d.emit("event:*", n)
            assert len(d._batch) == 4 and yields[0] == 1, n  # kept for the end of this turn
            await wait_for(lambda n=n: ran[-1:] == [n] and d.stats()["backlog"] == 0)
        now[0] += dispatch.BUSY_GAP * 2  # a pause: at once again
        d.emit("event:*", 4)
        assert (d._batch, yields[0]) == ([], 2)
        await wait_for(lambda: ran == [0, 1, 2, 3, 4])
    finally:
        await d.stop()
