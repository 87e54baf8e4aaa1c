"""Load benchmark: a realistic realtime mix over the socket into a separate agent process.

Prints events/s at full speed, CPU seconds per 10k events, handler latency p50/p99 at a fixed
rate, the server's RSS idle and after load, and time to ready. Storage (with the event log)
and dispatch (a message handler on every event, as a ticos-client integrator has) are on;
audio output is off (its own bench is bench/audio_latency.py).

    .venv/bin/python bench/load.py                 # defaults: 100k events, 200 ev/s for 10 s
    .venv/bin/python bench/load.py --events 20000 --rate 200 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the server side -----------------------------------------------------------------------

def serve(port: int, db_dir: str, report: str) -> None:
    from ticos_agent import Agent

    latencies: list[tuple[int, int]] = []
    received: dict[str, int] = {}

    def on_event(event: dict) -> None:
        sent = event.get("sent_ns")
        if sent is not None:
            now = time.time_ns()
            latencies.append((now - sent, now - received.pop(event["event_id"], now)))
        if event.get("type") == "bench.report":
            Path(report).write_text(json.dumps(latencies))
            latencies.clear()

    def timed(agent):
        ingest = agent.ingest

        def ingest_timed(frame, conn):  # bench only: note when the frame reached the agent
            if "sent_ns" in frame:
                received[json.loads(frame)["event_id"]] = time.time_ns()
            return ingest(frame, conn)

        agent.ingest = ingest_timed

    async def main() -> None:
        t0 = time.perf_counter()
        agent = Agent({"server": {"port": port}, "storage": {"dir": db_dir}, "audio": {"enabled": False}})
        agent.on("*", on_event)
        timed(agent)
        agent.on_function("set_light", lambda call: {"on": call.arguments.get("on")})
        await agent.start()
        print(f"READY {time.perf_counter() - t0:.4f}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(15, stop.set)
        await stop.wait()
        await agent.stop()

    asyncio.run(main())


# --- the load side -------------------------------------------------------------------------

def voice_turn(n: int) -> list[str]:
    """One user turn and one assistant turn with 12 words of transcript and 20 ms audio chunks."""
    audio = base64.b64encode(b"\x10\x00" * 480).decode()  # 20 ms at 24 kHz
    u, r, a = f"item_U{n}", f"resp_{n}", f"item_A{n}"
    ev = [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": u},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": u},
        {"type": "conversation.item.created", "item": {"id": u, "type": "message", "role": "user",
                                                       "content": [{"type": "input_audio", "transcript": None}]}},
        {"type": "response.created", "response": {"id": r, "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "response_id": r, "output_index": 0,
         "item": {"id": a, "type": "message", "role": "assistant", "content": []}},
    ]
    for i in range(12):
        ev.append({"type": "response.audio_transcript.delta", "response_id": r, "item_id": a, "output_index": 0,
                   "content_index": 0, "delta": f"word{i} "})
        for _ in range(3):
            ev.append({"type": "response.audio.delta", "response_id": r, "item_id": a, "output_index": 0,
                       "content_index": 0, "delta": audio})
    ev += [
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": u, "content_index": 0,
         "transcript": f"user turn {n}"},
        {"type": "response.audio_transcript.done", "response_id": r, "item_id": a, "transcript": None},
        {"type": "response.output_item.done", "response_id": r, "output_index": 1,
         "item": {"id": f"fc{n}", "type": "function_call", "status": "completed", "name": "set_light",
                  "call_id": f"call_{n}", "arguments": json.dumps({"on": True})}},
        {"type": "response.done", "response": {"id": r, "status": "completed", "output": []}},
        {"type": "rate_limits.updated", "rate_limits": []},
    ]
    for i, e in enumerate(ev):
        e["event_id"] = f"event_{n}_{i}"
    return [json.dumps(e) for e in ev]


def mix(count: int) -> list[str]:
    out: list[str] = []
    n = 0
    while len(out) < count:
        out.extend(voice_turn(n))
        n += 1
    return out[:count]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def processed(session, port: int) -> int:
    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
        return (await resp.json())["counters"].get("events", 0)


async def run_load(port: int, pid: int, events: int, rate: float, seconds: float, report: Path) -> None:
    frames = mix(events)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/realtime", max_msg_size=0)
        reader = asyncio.create_task(_drain(ws))
        await asyncio.sleep(0.5)
        print(f"idle RSS: {rss_mb(pid):.1f} MB")

        # full speed
        base = await processed(session, port)
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        for f in frames:
            await ws.send_str(f)
        while await processed(session, port) - base < len(frames):
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
        print(f"full speed: {len(frames)} events in {elapsed:.2f} s = {len(frames) / elapsed:,.0f} events/s; "
              f"server CPU {cpu / len(frames) * 10_000:.3f} s per 10k events")
        print(f"RSS after load: {rss_mb(pid):.1f} MB")

        # fixed rate, handler latency
        await asyncio.sleep(1.0)
        await ws.send_str(json.dumps({"type": "bench.report"}))  # reset
        await asyncio.sleep(0.3)
        ticks = int(rate * seconds)
        sample = mix(ticks)
        start = time.perf_counter()
        for i, f in enumerate(sample):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            obj = json.loads(f)
            obj["sent_ns"] = time.time_ns()
            await ws.send_str(json.dumps(obj))
        await asyncio.sleep(0.5)
        report.unlink(missing_ok=True)
        await ws.send_str(json.dumps({"type": "bench.report"}))
        for _ in range(200):
            if report.exists() and report.stat().st_size:
                break
            await asyncio.sleep(0.02)
        pairs = json.loads(report.read_text())
        for label, lat in (("frame received -> handler called", sorted(p[1] for p in pairs)),
                           ("client send -> handler called", sorted(p[0] for p in pairs))):
            if lat:
                p50 = statistics.median(lat) / 1e6
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6
                print(f"handler latency at {rate:g} events/s ({len(lat)} events), {label}: "
                      f"p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        await ws.close()
        reader.cancel()


async def _drain(ws) -> None:
    async for _ in ws:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "DB_DIR", "REPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "latency.json"
        spawn = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), tmp, str(report)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "HOME": tmp})
        line = proc.stdout.readline()
        ready_wall = time.perf_counter() - spawn
        print(f"ready: Agent.start() {float(line.split()[1]) * 1000:.0f} ms; process spawn to ready {ready_wall * 1000:.0f} ms")
        try:
            asyncio.run(run_load(port, proc.pid, args.events, args.rate, args.seconds, report))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        db = Path(tmp) / "ticos.db"
        if db.exists():
            import sqlite3

            con = sqlite3.connect(db)
            n_msg = con.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            n_ev = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            print(f"stored: {n_msg} messages, {n_ev} event-log rows")


if __name__ == "__main__":
    main()
