"""State-change latency: a turn event received -> the first serial byte / pin change of its look.

The real agent in this process, with a serial-line MCU on a pseudo-terminal (a reader thread
timestamps every byte) and an RGB LED on gpiozero's mock PWM pins, both showing the
``listening`` and ``thinking`` looks (``[states.*]``). A real WebSocket client sends
``speech_started`` / ``speech_stopped`` pairs; the time each frame reached the agent's intake
is noted, and compared with the MCU's first byte and the LED's first pin change after it.

    .venv/bin/python bench/state_latency.py [--turns 200]

Target (issue 10): the listening look within 20 ms of ``speech_started``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import statistics
import tempfile
import threading
import time
import tty

import aiohttp


class Reader(threading.Thread):
    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd, self.stop = fd, False
        self.arrivals: list[float] = []

    def run(self) -> None:
        while not self.stop:
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                os.read(self.fd, 4096)
                self.arrivals.append(time.monotonic())


def figures(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: no samples"
    ms = sorted(v * 1000 for v in values)
    return (f"{label}: p50 {statistics.median(ms):.2f} ms, p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.2f} ms,"
            f" max {ms[-1]:.2f} ms ({len(ms)} changes)")


async def main(turns: int) -> None:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    master, slave = os.openpty()
    tty.setraw(slave)
    reader = Reader(master)
    reader.start()
    from ticos_agent import Agent

    tmp = tempfile.mkdtemp()
    agent = Agent({
        "server": {"port": 0}, "storage": {"dir": tmp}, "audio": {"enabled": False},
        "actuators": {"mcu": {"driver": "serial-line", "port": os.ttyname(slave), "emotion": "FACE {face}"},
                      "face": {"driver": "gpio-rgbled", "red": 17, "green": 27, "blue": 22}},
        "emotions": {"attentive": {"color": "#0000FF", "face": "ears-up"}, "pondering": {"color": "#FF0000"}},
        "states": {"listening": {"emotion": "attentive", "hold": 0.0},
                   "thinking": {"emotion": "pondering", "hold": 0.0}},
        "life": {"sleep_after": 0},
    })
    received: list[tuple[str, float]] = []
    await agent.start()
    assert agent.intake is not None
    ingest = agent.intake.ingest

    def noted(frame, peer):  # bench only: when the frame reached the intake
        received.append((json.loads(frame)["type"], time.monotonic()))
        return ingest(frame, peer)

    agent.intake.ingest = noted  # type: ignore[method-assign]
    pins = [Device.pin_factory.pin(17), Device.pin_factory.pin(22)]  # red (thinking), blue (listening)
    serial_lat: list[float] = []
    pin_lat: list[float] = []
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime") as ws:
            await asyncio.sleep(0.5)
            for i in range(turns):
                for kind in ("speech_started", "speech_stopped"):
                    n_bytes = len(reader.arrivals)
                    before = [(len(p.states), p._last_change) for p in pins]
                    await ws.send_str(json.dumps({"type": f"input_audio_buffer.{kind}", "item_id": f"u{i}"}))
                    await asyncio.sleep(0.05)
                    t_in = received[-1][1]
                    if len(reader.arrivals) > n_bytes:
                        serial_lat.append(reader.arrivals[n_bytes] - t_in)
                    changes = [last + p.states[n].timestamp  # mock pin timestamps: deltas from the previous change
                               for p, (n, last) in zip(pins, before) if len(p.states) > n]
                    if changes:
                        pin_lat.append(min(changes) - t_in)
    finally:
        await agent.stop()
        reader.stop = True
    print(figures("state change -> first serial byte", serial_lat))
    print(figures("state change -> first LED pin change", pin_lat))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=200)
    asyncio.run(main(ap.parse_args().turns))
