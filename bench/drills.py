"""Attack drills against a real agent process: a flood of calls, idle sockets, bad frames, a
reconnect mid-response. Prints what happened; asserts nothing (the tests check behaviour).

The agent runs as ``ticos-agent run`` in its own process (the default simulated robot,
storage in a temporary folder, audio off), so its RSS, open file descriptors and log volume
can be read from outside. Drills, each against a fresh agent:

``calls``   20,000 ``motion`` calls as fast as one socket sends them, while another client
            polls ``/health``: calls answered busy, the arm's queue, ``/health`` latency
            (p50/max), RSS before and after.
``idle``    1,100 raw TCP sockets opened and left silent (more than ``server.max_connections``):
            how many were refused at once, how many the agent closed by itself within
            ``server.request_timeout``, its open file descriptors, ``/health`` latency meanwhile.
``frames``  5,000 hostile frames (bad JSON, wrong shapes, NUL bytes, deep nesting, huge ids
            with newlines): error replies, log bytes written, ``/health`` afterwards.
``reconnect`` a response cut off by a dropped socket and continued on a new one: rows stored
            per item (must be one each).

    .venv/bin/python bench/drills.py [calls idle frames reconnect]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    """``ticos-agent run`` in a process of its own, its log in a file."""

    def __init__(self, workdir: Path, **server: object):
        self.port = free_port()
        self.workdir = workdir
        cfg = workdir / "robot.toml"
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.items())
        cfg.write_text(f'[server]\nport = {self.port}\n{extra}[storage]\ndir = "{workdir / "db"}"\n'
                       "[audio]\nenabled = false\n[conversation]\nreconnect_grace = 0.5\n")
        self.log = open(workdir / "agent.log", "wb")  # noqa: SIM115 - closed in stop()
        flags = os.environ.get("DRILL_PYFLAGS", "").split()  # e.g. "-m cProfile -o FILE"
        self.proc = subprocess.Popen([sys.executable, *flags, "-m", "ticos_agent.cli", "run", "--config", str(cfg)],
                                     stdout=self.log, stderr=self.log, cwd=ROOT,
                                     env={**os.environ, "HOME": str(workdir)})

    async def ready(self) -> None:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    async with http.get(self.url("/health")) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("the agent did not come up; see " + str(self.workdir / "agent.log"))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> float:
        started = time.monotonic()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        return time.monotonic() - started


async def health_poller(agent: Agent, stop: asyncio.Event, samples: list[float]) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            async with http.get(agent.url("/health")) as resp:
                await resp.read()
            samples.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)


def latency(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    return f"p50 {statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms ({len(samples)} polls)"


def call(i: int) -> str:
    return json.dumps({"type": "response.output_item.done", "response_id": f"r{i % 50}", "output_index": 1,
                       "item": {"id": f"fc{i}", "type": "function_call", "status": "completed", "name": "motion",
                                "call_id": f"c{i}", "arguments": json.dumps({"motion_tag": "wave"})}})


async def drill_calls(agent: Agent, count: int = 20_000) -> None:
    for round_ in (1, 2, 3, 4):  # RSS after each round: growth must stop
        await _flood_calls(agent, count, round_)
        await asyncio.sleep(3)
        print(f"  RSS 3 s after round {round_}: {agent.rss_mb():.1f} MB")


async def _flood_calls(agent: Agent, count: int, round_: int) -> None:
    rss0, cpu0 = agent.rss_mb(), agent.cpu_s()
    stop, samples = asyncio.Event(), []
    poller = asyncio.create_task(health_poller(agent, stop, samples))
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as http, http.ws_connect(agent.url("/realtime")) as ws:
        drain = asyncio.create_task(_drain(ws))
        for i in range(count):
            await ws.send_str(call(i + round_ * count))
        while True:
            async with http.get(agent.url("/health")) as resp:
                h = await resp.json()
            if h["counters"]["events"] >= count * round_:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        drain.cancel()
    stop.set()
    await poller
    busy = h["counters"].get("busy_calls", 0) + h["actuators"].get("busy", 0)
    queued = max(a["queued"] for a in h["actuators"]["actuators"].values())
    print(f"calls round {round_}: {count:,} motion calls taken in {elapsed:.1f} s (agent CPU "
          f"{agent.cpu_s() - cpu0:.1f} s); {busy:,} answered busy; "
          f"longest actuator queue {queued}; /health {latency(samples)}; RSS {rss0:.1f} -> {agent.rss_mb():.1f} MB")


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass


async def drill_idle(agent: Agent, count: int = 1100) -> None:
    stop, samples = asyncio.Event(), []
    poller = asyncio.create_task(health_poller(agent, stop, samples))
    socks, refused = [], 0
    for _ in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", agent.port), timeout=2))
        except OSError:
            refused += 1
    await asyncio.sleep(0.5)
    fds_open = agent.fds()
    answered_503 = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(64).startswith(b"HTTP/1.1 503"):
                answered_503 += 1
        except BlockingIOError:
            pass
        except OSError:
            pass
    await asyncio.sleep(11)  # past server.request_timeout (10 s)
    closed = 0
    for s in socks:
        try:
            if s.recv(64) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    stop.set()
    await poller
    print(f"idle: {count:,} silent sockets: {answered_503:,} refused with 503 at once, {refused} not connected; "
          f"agent fds while they were open {fds_open}; closed by the agent within request_timeout: {closed:,}; "
          f"/health {latency(samples)}")


def hostile(i: int) -> str | bytes:
    kinds = [
        "{broken",
        json.dumps({"type": "response.created", "response": "nope"}),
        json.dumps({"no": "type"}),
        "[" * 5000 + "]" * 5000,
        json.dumps({"type": "conversation.item.input_audio_transcription.failed",
                    "item_id": f"u{i}\nERROR forged\x1b[31m" + "x" * 2000}),
        b'{"type": "x\x00"}',
        json.dumps({"type": "response.audio.delta", "item_id": "a", "delta": "!!not base64!!"}),
    ]
    return kinds[i % len(kinds)]


async def drill_frames(agent: Agent, count: int = 5000) -> None:
    log = agent.workdir / "agent.log"
    before = log.stat().st_size
    errors = 0
    async with aiohttp.ClientSession() as http, http.ws_connect(agent.url("/realtime"), max_msg_size=0) as ws:
        for i in range(count):
            frame = hostile(i)
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        while True:  # until the agent has been quiet for a second
            try:
                msg = await ws.receive(timeout=1.0)
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            errors += json.loads(msg.data).get("type") == "error"
        async with http.get(agent.url("/health")) as resp:
            status = (await resp.json())["status"]
    grown = log.stat().st_size - before
    unusable = sum(i % 7 in (0, 1, 2, 3, 5) for i in range(count))
    print(f"frames: {count:,} hostile frames ({unusable:,} of them unusable): {errors:,} error replies; "
          f"log grew {grown / 1024:.1f} KB; /health says {status}")


async def drill_reconnect(agent: Agent) -> None:
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(agent.url("/realtime"))
        for event in ({"type": "session.created", "session": {"id": "s1"}},
                      {"type": "conversation.item.created", "item": {"id": "U1", "type": "message", "role": "user",
                                                                    "content": [{"type": "input_audio"}]}},
                      {"type": "response.created", "response": {"id": "r1"}},
                      {"type": "response.audio_transcript.delta", "response_id": "r1", "item_id": "A1",
                       "delta": "Hello, "}):
            await first.send_json(event)
        await first.close()
        second = await http.ws_connect(agent.url("/realtime"))
        for event in ({"type": "conversation.item.input_audio_transcription.completed", "item_id": "U1",
                       "transcript": "hi"},
                      {"type": "response.audio_transcript.delta", "response_id": "r1", "item_id": "A1",
                       "delta": "world"},
                      {"type": "response.done", "response": {"id": "r1", "status": "completed"}}):
            await second.send_json(event)
        await second.close()
    await asyncio.sleep(1.0)


def rows(agent: Agent) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(f"file:{agent.workdir / 'db' / 'ticos.db'}?mode=ro", uri=True)
    return db.execute("SELECT item_id, content, status FROM messages ORDER BY rowid").fetchall()


async def run(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(Path(tmp))
        try:
            await agent.ready()
            await {"calls": drill_calls, "idle": drill_idle, "frames": drill_frames,
                   "reconnect": drill_reconnect}[name](agent)
        finally:
            seconds = agent.stop()
        if name == "reconnect":
            got = rows(agent)
            print(f"reconnect: rows {got} (one per item expected)")
        print(f"  {name}: the agent stopped {seconds:.2f} s after SIGTERM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ["calls", "idle", "frames", "reconnect"]
    parser.add_argument("drills", nargs="*", help="which drills (default: all): " + ", ".join(names))
    chosen = parser.parse_args().drills or names
    for name in chosen:
        if name not in names:
            parser.error(f"no drill {name!r}; choose from " + ", ".join(names))
    for name in chosen:
        asyncio.run(run(name))


if __name__ == "__main__":
    main()
