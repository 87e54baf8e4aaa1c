"""Card-pull drill: the agent writes to a loop-mounted TF card image that is pulled and put back.

Runs the real agent (``ticos-agent run``) in its own process with ``storage.mode =
"external"`` on a small ext4 image loop-mounted under a temporary ``media/CARD``; a voice
agent sends voice turns at a conversational pace (bench/load.py's turn: a user turn, an
assistant turn with transcript and audio deltas, a function call; spread over
``--turn-seconds``). Then:

1. ``--before`` seconds on the card;
2. the card is pulled (``umount -l``: the agent's open database keeps working on the detached
   filesystem unless the agent notices); ``/health`` is polled every 10 ms until it says
   ``degraded``;
3. ``--away`` seconds on the fallback database;
4. the image is mounted again (once the detached filesystem is released: two mounts of one
   disk would be two writers); ``/health`` is polled until it is ``ok`` with no fallback rows;
5. ``--after`` seconds on the card again, then a clean stop (SIGTERM).

Afterwards the card and the fallback database are read and compared with what was sent:
every message (by item id), function call (by call id) and event-log line (by event id).
It prints what was written where, rows lost (must be 0), duplicates, the time to detect the
pull and the time to return and merge. Needs root (mount, losetup) and ``mkfs.ext4``.

    sudo .venv/bin/python bench/card_pull.py [--pulls 2] [--backlog 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import voice_turn


def run(*cmd: str) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {done.stderr.strip()}")


def attached(image: Path) -> bool:
    return bool(subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout.strip())


class Drill:
    def __init__(self, tmp: Path, turn_seconds: float):
        self.tmp = tmp
        self.image, self.root, self.internal = tmp / "card.img", tmp / "media" / "CARD", tmp / "internal"
        self.turn_seconds = turn_seconds
        self.sent: list[tuple[int, str]] = []  # (turn, phase)
        self.phase = "card"
        self.stop_sending = asyncio.Event()
        self.backlog: list[str] = []  # event ids of the extra events sent while away

    async def health(self, session, port: int) -> dict:
        async with session.get(f"http://127.0.0.1:{port}/health") as resp:
            return await resp.json()

    async def talk(self, ws) -> None:
        n = 0
        while not self.stop_sending.is_set():
            frames = voice_turn(n)
            self.sent.append((n, self.phase))
            pause = self.turn_seconds / len(frames)
            for frame in frames:
                await ws.send_str(frame)
                await asyncio.sleep(pause)
            n += 1

    async def until(self, session, port, predicate, timeout=60.0) -> tuple[float, dict]:
        start = time.monotonic()
        while True:
            h = await self.health(session, port)
            if predicate(h):
                return time.monotonic() - start, h
            if time.monotonic() - start > timeout:
                raise SystemExit(f"timed out after {timeout} s; /health: {json.dumps(h['storage'])}")
            await asyncio.sleep(0.01)

    async def fill(self, ws, count: int) -> None:
        """Extra event-log rows while the card is out (a long outage's backlog, quickly)."""
        for k in range(count):
            event_id = f"backlog_{len(self.backlog)}"
            self.backlog.append(event_id)
            await ws.send_str(json.dumps({"type": "rate_limits.updated", "event_id": event_id, "rate_limits": []}))
            if k % 500 == 499:
                await asyncio.sleep(0.01)

    async def pull_and_return(self, session, port: int, away: float, ws=None, backlog: int = 0) -> dict:
        self.phase = "away"
        t0 = time.monotonic()
        run("umount", "-l", str(self.root))
        detect, h = await self.until(session, port, lambda h: h["storage"]["state"] == "degraded")
        reason = h["storage"]["reason"]
        moved, _ = await self.until(session, port, lambda h: h["storage"]["mode"] == "internal")
        started = time.monotonic()
        if backlog:
            await self.fill(ws, backlog)
        await asyncio.sleep(max(0.0, away - (time.monotonic() - started)))
        await asyncio.sleep(0.3)  # let the last batch reach the fallback
        h = await self.health(session, port)
        waiting = h["storage"]["fallback_rows"]
        start = time.monotonic()
        while attached(self.image):  # the agent lets go of the detached filesystem at the fallback
            await asyncio.sleep(0.01)
        released = time.monotonic() - start
        run("mount", "-o", "loop", str(self.image), str(self.root))
        self.phase = "card"
        back, h = await self.until(session, port, lambda h: h["status"] == "ok"
                                   and h["storage"]["fallback_rows"] == 0)
        return {"detect_s": detect, "moved_s": detect + moved, "reason": reason, "fallback_rows": waiting,
                "released_s": released,
                "return_s": back, "merged": h["storage"]["fallback"]["merged"],
                "away_s": time.monotonic() - t0}

    async def drive(self, port: int, args) -> list[dict]:
        pulls = []
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    await self.health(session, port)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/realtime")
            drain = asyncio.create_task(_drain(ws))
            talking = asyncio.create_task(self.talk(ws))
            await asyncio.sleep(args.before)
            for _ in range(args.pulls):
                pulls.append(await self.pull_and_return(session, port, args.away, ws, args.backlog))
                await asyncio.sleep(args.after)
            self.stop_sending.set()
            await talking
            await asyncio.sleep(0.5)
            await ws.close()
            drain.cancel()
        return pulls


async def _drain(ws) -> None:
    async for _ in ws:
        pass


def read(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=float, default=3.0, help="seconds on the card before a pull")
    parser.add_argument("--away", type=float, default=5.0, help="seconds without the card")
    parser.add_argument("--after", type=float, default=3.0, help="seconds on the card after its return")
    parser.add_argument("--pulls", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=0,
                        help="extra event-log rows sent while the card is out (a long outage's backlog)")
    parser.add_argument("--turn-seconds", type=float, default=1.0, help="one voice turn's frames spread over this")
    parser.add_argument("--size-mb", type=int, default=64)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the drill mounts a card image: run it as root")
    with tempfile.TemporaryDirectory(prefix="ticos-card-pull-") as tmp_name:
        tmp = Path(tmp_name)
        drill = Drill(tmp, args.turn_seconds)
        drill.root.mkdir(parents=True)
        with open(drill.image, "wb") as f:
            f.truncate(args.size_mb << 20)
        run("mkfs.ext4", "-q", "-F", str(drill.image))
        run("mount", "-o", "loop", str(drill.image), str(drill.root))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = tmp / "robot.toml"
        config.write_text(f'[server]\nport = {port}\n[storage]\nmode = "external"\ntf_root = "{drill.root}"\n'
                          f'dir = "{drill.internal}"\n[audio]\nenabled = false\n')
        env = {k: v for k, v in os.environ.items() if k != "TICOS_ALLOW_UNMOUNTED_CARD"}
        log = tmp / "agent.log"
        with open(log, "w") as out:
            agent = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", "run", "--config", str(config)],
                                     stdout=out, stderr=subprocess.STDOUT, env={**env, "HOME": str(tmp)})
        try:
            try:
                pulls = asyncio.run(drill.drive(port, args))
            finally:
                agent.terminate()
                rc = agent.wait(timeout=30)
            report(drill, pulls, rc, log)
        finally:
            while os.path.ismount(drill.root):
                if subprocess.run(["umount", "-l", str(drill.root)], capture_output=True).returncode:
                    break


def report(drill: Drill, pulls: list[dict], rc: int, log: Path) -> None:
    card = drill.root / ".config" / "ticos" / "ticos.db"
    fallback = drill.internal / "ticos-fallback.db"
    turns = [n for n, _ in drill.sent]
    phases = dict(drill.sent)
    want_items = {f"item_U{n}" for n in turns} | {f"item_A{n}" for n in turns}
    want_calls = {f"call_{n}" for n in turns}
    want_events = {json.loads(f)["event_id"] for n in turns for f in voice_turn(n)  # the log skips deltas
                   if not json.loads(f)["type"].endswith(".delta")} | set(drill.backlog)
    print(f"agent stopped with rc {rc}; {len(turns)} voice turns sent "
          f"({sum(p == 'away' for p in phases.values())} while the card was out), "
          f"{len(want_items)} messages, {len(want_calls)} calls, {len(want_events)} events")
    for i, p in enumerate(pulls, 1):
        print(f"pull {i}: {p['reason']}")
        print(f"    detected: /health degraded {p['detect_s'] * 1000:.0f} ms after umount -l, "
              f"the writer on the fallback {p['moved_s'] * 1000:.0f} ms after it")
        print(f"    away {p['away_s'] - p['return_s']:.1f} s: {p['fallback_rows']} rows in the fallback; the detached "
              f"filesystem was already released ({p['released_s'] * 1000:.0f} ms wait)")
        print(f"    returned: /health ok with 0 fallback rows {p['return_s'] * 1000:.0f} ms after the image was "
              f"mounted again ({p['merged']} rows merged since start)")
    where = {}
    for name, db in (("card", card), ("fallback", fallback)):
        items = [r[0] for r in read(db, "SELECT item_id FROM messages")]
        calls = [r[0] for r in read(db, "SELECT call_id FROM function_calls")]
        events = [r[0] for r in read(db, "SELECT event_id FROM events")]
        where[name] = (items, calls, events)
        print(f"{name:>8} {db}: {len(items)} messages, {len(calls)} calls, {len(events)} events")
    items = where["card"][0] + where["fallback"][0]
    calls = where["card"][1] + where["fallback"][1]
    events = where["card"][2] + where["fallback"][2]
    lost = (len(want_items - set(items)), len(want_calls - set(calls)), len(want_events - set(events)))
    twice = (len(items) - len(set(items)), len(calls) - len(set(calls)), len(events) - len(set(events)))
    print(f"lost: {lost[0]} messages, {lost[1]} calls, {lost[2]} events (must be 0)")
    print(f"duplicates: {twice[0]} messages, {twice[1]} calls, {twice[2]} events")
    print("agent's storage log:")
    back_at = None
    for line in log.read_text().splitlines():
        if "storage" in line and ("TF card" in line or "fallback" in line):
            print("   ", line[:300])
            stamp = _stamp(line)
            if "the TF card is back" in line:
                back_at = stamp
            elif "back on the TF card" in line and back_at is not None and stamp is not None:
                print(f"    (the merge itself: {(stamp - back_at) * 1000:.0f} ms; the rest of the return is "
                      f"the wait for the next probe, every 3 s)")
    if any(lost) or any(twice):
        raise SystemExit(1)


def _stamp(line: str) -> float | None:
    import datetime

    try:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


if __name__ == "__main__":
    main()
