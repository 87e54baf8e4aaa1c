"""Benchmark: function call -> first serial byte latency, and keyframe timing jitter.

Runs the real ActuatorSystem with a Feetech STS driver on a pseudo-terminal; a reader thread
on the master side timestamps every byte that arrives (same monotonic clock as the loop).

    .venv/bin/python bench/actuator_latency.py [--calls 500] [--frames 200]

Targets: latency p99 < 2 ms, jitter p99 < 5 ms on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import statistics
import threading
import time
import tty

from ticos_agent.actuators import ActuatorSystem, parse_actuators_config
from ticos_agent.arguments import MotionArgs


class Reader(threading.Thread):
    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd = fd
        self.arrivals: list[tuple[float, int]] = []
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                data = os.read(self.fd, 4096)
                now = time.monotonic()
                self.arrivals.append((now, data.count(b"\xff\xff\xfe")))  # frames started in this read


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def report(name: str, values_s: list[float]) -> None:
    ms = [v * 1000 for v in values_s]
    print(f"{name:<34} n={len(ms):<5} p50={pct(ms, 50):.3f} ms  p99={pct(ms, 99):.3f} ms  max={max(ms):.3f} ms  "
          f"mean={statistics.fmean(ms):.3f} ms")


async def main(calls: int, frames: int, spacing: float) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    reader = Reader(master)
    reader.start()
    track = [[round((k + 1) * spacing, 6), [(-1) ** k * 10, 0]] for k in range(frames)]
    doc = {
        "robot": {"default_library": False},
        "actuators": {"head": {"driver": "feetech-sts", "port": os.ttyname(slave), "ids": [1, 2]}},
        "motions": {"tap": {"head": [[0.0, [5, 0]]]}, "sweep": {"head": track}},
    }
    system = ActuatorSystem(parse_actuators_config(doc))
    await system.start()
    await asyncio.sleep(0.2)

    latencies = []
    for _ in range(calls):
        n0 = len(reader.arrivals)
        t_call = time.monotonic()
        await system.motion(MotionArgs("tap", wait=False))
        while len(reader.arrivals) == n0:
            await asyncio.sleep(0.0005)
        latencies.append(reader.arrivals[n0][0] - t_call)
        await asyncio.sleep(0.005)

    n0 = len(reader.arrivals)
    out = await system.motion(MotionArgs("sweep"))
    await asyncio.sleep(0.05)
    times = [t for t, count in reader.arrivals[n0:] for _ in range(count)]
    jitter = [abs((t - times[0]) - k * spacing) for k, t in enumerate(times)]
    await system.stop()
    reader.stop = True

    print(f"cpus={os.cpu_count()}  frames received={len(times)}/{frames}  outcome={out.status} "
          f"(late_max={out.detail.get('late_max_ms')} ms on the loop)")
    report("function_call -> first serial byte", latencies)
    report(f"keyframe jitter ({spacing * 1000:.0f} ms spacing)", jitter)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--spacing", type=float, default=0.02, help="seconds between keyframes")
    a = ap.parse_args()
    asyncio.run(main(a.calls, a.frames, a.spacing))
