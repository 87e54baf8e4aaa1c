"""Soak: a long session into a separate agent process; prints RSS, database and WAL size as it goes.

Voice turns (bench/load.py's realistic mix) with a barge-in every fifth turn, sent at full
speed for ``--turns`` turns over one socket, then a few reconnects, then ``--sessions`` short
sessions (a voice agent restarted: a new socket and session id, one turn, a response never
done, the socket closed under it). Memory that grows with the session length or the number of
sessions instead of levelling off shows up here.

    .venv/bin/python bench/soak.py --turns 20000 --sessions 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import rss_mb, voice_turn


async def processed(session: aiohttp.ClientSession, port: int) -> int:
    """How many frames the agent has taken in (its ``/health`` counter)."""
    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
        return int((await resp.json())["counters"].get("events", 0))


def barge_in(n: int) -> list[str]:
    r, a = f"resp_b{n}", f"item_B{n}"
    events = [
        {"type": "response.created", "response": {"id": r, "status": "in_progress", "output": []}},
        {"type": "response.audio_transcript.delta", "response_id": r, "item_id": a, "delta": "I was about to "},
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 5, "item_id": f"item_UB{n}"},
        {"type": "response.done", "response": {"id": r, "status": "cancelled", "output": []}},
    ]
    return [json.dumps(e) for e in events]


def sizes(db_dir: str) -> str:
    db = Path(db_dir) / "ticos.db"
    wal = Path(db_dir) / "ticos.db-wal"
    mb = lambda p: p.stat().st_size / 2**20 if p.exists() else 0.0  # noqa: E731
    return f"db {mb(db):.1f} MB, wal {mb(wal):.1f} MB"


async def soak(port: int, pid: int, db_dir: str, turns: int, report_every: int, sessions: int) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/realtime")
        drain = asyncio.create_task(_drain(ws))
        sent = await processed(session, port)
        start = time.perf_counter()
        print(f"start: RSS {rss_mb(pid):.1f} MB, {sizes(db_dir)}")
        for n in range(turns):
            frames = voice_turn(n) + (barge_in(n) if n % 5 == 4 else [])
            for f in frames:
                await ws.send_str(f)
            sent += len(frames)
            if (n + 1) % report_every == 0:
                while await processed(session, port) < sent:
                    await asyncio.sleep(0.01)
                print(f"{n + 1:>7} turns, {sent:>9} events, {time.perf_counter() - start:6.1f} s: "
                      f"RSS {rss_mb(pid):.1f} MB, {sizes(db_dir)}")
        await ws.close()
        drain.cancel()
        for _ in range(3):  # reconnects leave nothing behind
            async with session.ws_connect(f"http://127.0.0.1:{port}/realtime") as again:
                await again.send_str(voice_turn(turns)[0])
        await _sessions(session, port, pid, db_dir, turns, sessions)
        await asyncio.sleep(1)
        async with session.get(f"http://127.0.0.1:{port}/health") as resp:
            health = await resp.json()
        print(f"end: RSS {rss_mb(pid):.1f} MB, {sizes(db_dir)}; connections {health['connections']}, "
              f"errors {health['counters']['errors']}, handler backlog {health['handlers']['backlog']}")


async def _sessions(session: aiohttp.ClientSession, port: int, pid: int, db_dir: str, first: int,
                    count: int) -> None:
    start, sent = time.perf_counter(), await processed(session, port)
    for k in range(count):
        n = first + 1 + k
        never_done = {"type": "response.created", "response": {"id": f"resp_x{n}", "status": "in_progress"}}
        frames = [json.dumps({"type": "session.created", "session": {"id": f"sess_{n}"}}), *voice_turn(n),
                  json.dumps(never_done)]
        async with session.ws_connect(f"http://127.0.0.1:{port}/realtime") as ws:
            for f in frames:
                await ws.send_str(f)
            sent += len(frames)
            while await processed(session, port) < sent:
                await asyncio.sleep(0.005)
        if (k + 1) % max(1, count // 5) == 0:
            print(f"{k + 1:>7} sessions, {time.perf_counter() - start:6.1f} s: RSS {rss_mb(pid):.1f} MB, "
                  f"{sizes(db_dir)}")


async def _drain(ws) -> None:
    async for _ in ws:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20_000)
    parser.add_argument("--report-every", type=int, default=2_000)
    parser.add_argument("--sessions", type=int, default=500)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = Path(__file__).with_name("load_servers.py")  # the agent as load.py measures it (127.0.0.1)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, str(servers), "agent", str(port), tmp],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "HOME": tmp})
        ready = proc.stdout.readline() if proc.stdout is not None else ""
        if not ready.startswith("READY"):
            raise SystemExit(f"the agent did not start: {ready!r}")
        try:
            asyncio.run(soak(port, proc.pid, tmp, args.turns, args.report_every, args.sessions))
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
