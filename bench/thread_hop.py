"""What the hop to the handler thread costs on this machine, apart from everything else.

    python bench/thread_hop.py [--calls 2000] [--gap 0.005]

``TicosClient`` calls sync handlers on one worker thread (``ticos_agent.dispatch``), so that
a slow handler never delays the socket. At a conversational rate the worker is idle when an
event comes: the loop thread puts the call in a ``queue.SimpleQueue`` and the worker must be
woken. This script measures that wake alone, with the same queue and the same kind of loop,
and nothing of ticos-agent (so it is the floor of the hop, not a figure of the agent):

``threads``   a plain thread puts, then sleeps (the GIL is free at once): the kernel's wake
``asyncio``   an asyncio loop puts, then awaits a timer (as the agent's loop returns to epoll)
``yield``     the same loop, which yields its CPU after the put (``os.sched_yield``), as
              ``ticos_agent.dispatch`` does after a put to an idle worker
``put()``     how long the loop thread itself spends in ``put`` (the wake-up system call)

One call every ``--gap`` seconds (200 calls/s, as ``bench/load.py``'s latency rounds). Compare
the ``asyncio`` row with the gap between ``TicosClient`` and ``inline_handlers=True`` in
``bench/load.py``: where waking a thread is slow (a virtual machine, whose idle vCPU must be
woken by the hypervisor), that row is most of the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import threading
import time


def _figures(name: str, ns: list[int]) -> str:
    ns = sorted(ns)
    pick = lambda q: ns[min(len(ns) - 1, int(len(ns) * q))] / 1e3  # noqa: E731
    return f"{name:<10} p50 {pick(0.5):7.1f} us   p99 {pick(0.99):7.1f} us   max {ns[-1] / 1e3:8.1f} us"


def _worker(jobs: queue.SimpleQueue[int | None], woke: list[int]) -> threading.Thread:
    def run() -> None:
        while (sent := jobs.get()) is not None:
            woke.append(time.perf_counter_ns() - sent)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def from_a_thread(calls: int, gap: float) -> list[int]:
    jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    woke: list[int] = []
    worker = _worker(jobs, woke)
    for _ in range(calls):
        jobs.put(time.perf_counter_ns())
        time.sleep(gap)
    jobs.put(None)
    worker.join()
    return woke


def from_a_loop(calls: int, gap: float, yield_cpu: bool = False) -> tuple[list[int], list[int]]:
    jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    woke: list[int] = []
    put: list[int] = []
    worker = _worker(jobs, woke)

    async def main() -> None:
        for _ in range(calls):
            sent = time.perf_counter_ns()
            jobs.put(sent)
            put.append(time.perf_counter_ns() - sent)
            if yield_cpu:
                os.sched_yield()
            await asyncio.sleep(gap)

    asyncio.run(main())
    jobs.put(None)
    worker.join()
    return woke, put


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per row (default 2000)")
    parser.add_argument("--gap", type=float, default=0.005, help="seconds between calls (default 0.005)")
    args = parser.parse_args()
    print(f"put -> worker thread running, {args.calls} calls, one every {args.gap * 1000:g} ms")
    print(_figures("threads", from_a_thread(args.calls, args.gap)))
    woke, put = from_a_loop(args.calls, args.gap)
    print(_figures("asyncio", woke))
    print(_figures("yield", from_a_loop(args.calls, args.gap, yield_cpu=True)[0]))
    print(_figures("put()", put))


if __name__ == "__main__":
    main()
