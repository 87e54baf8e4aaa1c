"""Load benchmark: ticos-agent and its anchors, side by side, in one run on one machine.

Four servers get the same load from the same generator, in interleaved rounds (each round
runs every server once, in a rotated order, so a slow minute of this shared machine does not
land on one row only):

``ticos-agent Agent``         the native API: storage with the event log, a ``*`` handler
``ticos-agent TicosClient``   the ticos-client API on ticos-agent: ``enable_local_storage()``
                              (storage and the event log on), a message handler
``ticos-client 0.7.2``        the SDK ticos-agent replaces, from the package registry in its
                              own environment (``bench/ticos_client_env.py``), same program
``bare aiohttp``              the limit: the same route, ``json.loads`` and the handler call

Every server calls the same handler (``bench/load_servers.py``) on every event that reaches
the integrator. Per server and round it measures: events/s at full speed (the realistic voice
mix below, until the handler has seen the last frame) and server CPU per 10k events; latency
from client send to handler called at a fixed rate over one connection (the sender puts
``sent_ns`` into each event; p50 and p99); RSS idle and after the full-speed load; time from
process spawn to the port accepting connections, and to the start call returning. The table
gives the median over the rounds, and the range below it (this shared 2-core machine varies by
tens of percent between runs). Audio output is off (its bench is ``bench/audio_latency.py``).
Nothing leaves the machine: every server listens on 127.0.0.1 (checked), and runs with
``bench/netguard`` on its ``PYTHONPATH``, which refuses and reports outbound connections.

    .venv/bin/python bench/load.py                     # 100k events, 200 ev/s for 10 s, 3 rounds
    .venv/bin/python bench/load.py --events 20000 --seconds 5 --repetitions 1
    .venv/bin/python bench/load.py --skip ticos-client # without the SDK anchor (or --no-install)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import ticos_client_env  # noqa: E402


@dataclass
class Server:
    key: str      # --skip name and load_servers.py mode
    label: str
    python: str = sys.executable
    env: dict = field(default_factory=dict)
    skipped: str | None = None
    runs: list[dict] = field(default_factory=list)


# --- the load ------------------------------------------------------------------------------

def voice_turn(n: int, long_ids: bool = False) -> list[str]:
    """One user turn and one assistant turn with 12 words of transcript and 20 ms audio chunks.
    ``long_ids``: ids as long as a realtime server's (``item_`` and 21 characters, ``event_`` and 21,
    ``call_`` and 24), for what is stored; short ones otherwise."""
    audio = base64.b64encode(b"\x10\x00" * 480).decode()  # 20 ms at 24 kHz
    pad = (lambda prefix, tag, width=21: f"{prefix}{tag}{n:0{width - len(tag)}d}") if long_ids else \
        (lambda prefix, tag, width=0: f"{prefix}{tag}{n}")
    u, r, a = pad("item_", "U"), pad("resp_", ""), pad("item_", "A")
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
         "item": {"id": pad("item_", "F") if long_ids else f"fc{n}", "type": "function_call",
                  "status": "completed", "name": "set_light", "call_id": pad("call_", "", 24),
                  "arguments": json.dumps({"on": True})}},
        {"type": "response.done", "response": {"id": r, "status": "completed", "output": []}},
        {"type": "rate_limits.updated", "rate_limits": []},
    ]
    for i, e in enumerate(ev):
        e["event_id"] = f"event_{n:018d}_{i:02d}" if long_ids else f"event_{n}_{i}"
    return [json.dumps(e) for e in ev]


def mix(count: int, first_turn: int = 0) -> list[str]:
    out: list[str] = []
    n = first_turn
    while len(out) < count:
        out.extend(voice_turn(n))
        n += 1
    return out[:count]


def control(what: str) -> str:
    """A control frame for the servers' probe: a type that every server hands to its handler."""
    return json.dumps({"type": "session.updated", "event_id": f"bench_{what}", "session": {}, "bench": what})


# --- the process ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def listening_on(port: int) -> list[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            addr, hexport = cols[1].split(":")
            if cols[3] != "0A" or int(hexport, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            if v6:  # four little-endian 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, raw))
            else:
                found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return found


class Child:
    """One server process: its stdout lines (READY, MARK, REPORT ...) as awaitable replies."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.notes: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            text = line.decode().strip()
            if text.startswith("NOTE "):
                self.notes.append(text[5:])
            else:
                await self.lines.put(text)
        await self.lines.put("EOF")

    async def expect(self, word: str, timeout: float) -> str:
        while True:
            line = await asyncio.wait_for(self.lines.get(), timeout)
            if line.split(" ", 1)[0] == word:
                return line
            if line == "EOF" or line.startswith("FAILED"):
                raise RuntimeError(f"server ended before {word}: {line}")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.notes.append("did not stop within 20 s of SIGTERM; killed")
                self.proc.kill()
                await self.proc.wait()
        try:  # the last lines (notes) up to EOF
            await asyncio.wait_for(self._reader, 5)
        except TimeoutError:
            self._reader.cancel()


async def wait_listening(port: int, timeout: float = 60.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.002)
            continue
        at = time.perf_counter()
        writer.close()
        return at
    raise TimeoutError(f"nothing listening on {port} after {timeout:g} s")


def percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1e6


async def measure(server: Server, args, workdir: Path) -> dict:
    port = free_port()
    home = workdir / "home"
    home.mkdir()
    if server.key == "ticos-client":
        ticos_client_env.make_home(home)
    netlog = workdir / "netguard.log"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(BENCH / "netguard"),
           "BENCH_NETGUARD_LOG": str(netlog), "PYTHONDONTWRITEBYTECODE": "1", **server.env}
    stderr = open(workdir / "stderr.log", "wb")  # noqa: SIM115 (closed once the server has stopped)
    out: dict = {}
    spawn = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        server.python, str(BENCH / "load_servers.py"), server.key, str(port), str(workdir),
        stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env, cwd=str(workdir))
    child = Child(proc)
    listening = asyncio.create_task(wait_listening(port))
    try:
        ready = await child.expect("READY", 60)
        out["ready_s"] = time.perf_counter() - spawn
        out["start_call_s"] = float(ready.split()[1])
        out["listen_s"] = await listening - spawn
        addrs = listening_on(port)
        if not addrs or any(not (a.startswith("127.") or a == "::1") for a in addrs):
            raise RuntimeError(f"server listens on {addrs}, not only on loopback; stopped it")
        await run_load(child, port, proc.pid, args, workdir, out)
    except BaseException:
        tail = (workdir / "stderr.log").read_text(errors="replace").strip().splitlines()[-8:]
        print(f"  {server.label}: failed; server stderr ends:\n    " + "\n    ".join(tail), flush=True)
        raise
    finally:
        listening.cancel()
        await child.stop()
        stderr.close()
    out["notes"] = child.notes
    out["netguard"] = netlog.read_text().splitlines() if netlog.exists() else []
    out["stored"] = stored(workdir, home)
    return out


async def run_load(child: Child, port: int, pid: int, args, workdir: Path, out: dict) -> None:
    frames = mix(args.events)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/realtime", max_msg_size=0)
        drain = asyncio.create_task(_drain(ws))
        try:
            await asyncio.sleep(0.5)
            out["idle_rss"] = rss_mb(pid)

            # full speed: every frame sent as fast as the socket takes it, until the handler
            # has seen the mark sent after the last one
            await ws.send_str(control("mark"))
            await child.expect("MARK", 30)
            cpu0, t0 = cpu_seconds(pid), time.perf_counter()
            for f in frames:
                await ws.send_str(f)
            await ws.send_str(control("mark"))
            await child.expect("MARK", 600)
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
            out["rate"] = len(frames) / elapsed
            out["cpu_10k"] = cpu / len(frames) * 10_000
            out["load_rss"] = rss_mb(pid)

            # fixed rate: client send -> handler called
            await asyncio.sleep(1.0)
            await ws.send_str(control("reset"))
            await child.expect("RESET", 30)
            await asyncio.sleep(0.3)
            # each frame ends '"event_id": "...", "sent_ns": <ns>}' (load_servers.py relies on it)
            heads = [f[:-1] + ', "sent_ns": ' for f in mix(int(args.rate * args.seconds), first_turn=10**6)]
            assert all(h.endswith('"event_id": "' + h.rsplit('"event_id": "', 1)[1]) for h in heads[:60])
            start = time.perf_counter()
            for i, head in enumerate(heads):
                delay = start + i / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send_str(f"{head}{time.time_ns()}}}")
            await asyncio.sleep(0.5)
            await ws.send_str(control("report"))
            await child.expect("REPORT", 30)
            report = json.loads((workdir / "latency.json").read_text())
        finally:
            await ws.close()
            drain.cancel()
    if not report["sent"]:
        raise RuntimeError("no stamped event reached the handler (see the server's log)")
    out["sent_lat"] = sorted(report["sent"])
    out["recv_lat"] = sorted(report["received"])


async def _drain(ws) -> None:
    async for _ in ws:
        pass


def stored(workdir: Path, home: Path) -> str:
    """What the server stored: messages (and event-log rows where there is an event log)."""
    for db in (workdir / "ticos.db", home / ".config" / "ticos" / "ticos.db"):
        if not db.exists():
            continue
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
            parts = [f"{con.execute('SELECT COUNT(*) FROM messages').fetchone()[0]} messages"]
            if "events" in tables:
                parts.append(f"{con.execute('SELECT COUNT(*) FROM events').fetchone()[0]} event-log rows")
            return ", ".join(parts)
        finally:
            con.close()
    return "no database"


# --- the run -------------------------------------------------------------------------------

SERVERS = (("agent", "ticos-agent Agent"), ("client-api", "ticos-agent TicosClient"),
           ("client-inline", "TicosClient inline_handlers"),
           ("ticos-client", f"ticos-client {ticos_client_env.VERSION}"), ("bare", "bare aiohttp"))


def prepare(args) -> list[Server]:
    servers = [Server(key, label) for key, label in SERVERS]
    for spec in args.variant:  # a candidate ticos_agent beside this checkout's, same API as client-api
        name, _, root = spec.partition("=")
        if not root or not (Path(root) / "ticos_agent" / "__init__.py").exists():
            sys.exit(f"--variant {spec!r}: expected NAME=DIR with DIR/ticos_agent/__init__.py")
        servers.insert(2, Server("client-api", f"TicosClient [{name}]",
                                 env={"BENCH_AGENT_ROOT": str(Path(root).resolve())}))
    if args.prelude:
        for s in servers:
            if s.key in ("agent", "client-api", "client-inline"):
                s.env["BENCH_PRELUDE"] = str(Path(args.prelude).resolve())
    for s in servers:
        if s.key in args.skip:
            s.skipped = "--skip"
        elif s.key == "ticos-client":
            try:
                s.python = str(ticos_client_env.python(install=not args.no_install))
                print(f"ticos-client anchor: {s.python} ({ticos_client_env.versions()})")
            except ticos_client_env.Unavailable as exc:
                s.skipped = str(exc)
        if s.skipped:
            print(f"skipping {s.label}: {s.skipped}")
    return servers


def summary_line(label: str, r: dict) -> str:
    lat = r["sent_lat"]
    recv = r["recv_lat"]
    text = (f"  {label:<24} {r['rate']:>8,.0f} ev/s, CPU {r['cpu_10k']:.3f} s/10k | send->handler "
            f"p50 {percentile(lat, 0.5):.3f} p99 {percentile(lat, 0.99):.3f} ms (n={len(lat)})")
    if recv:
        text += f" | recv->handler p50 {percentile(recv, 0.5):.3f} p99 {percentile(recv, 0.99):.3f} ms"
    return text + (f" | RSS {r['idle_rss']:.1f}/{r['load_rss']:.1f} MB | listening {r['listen_s']:.2f} s, "
                   f"start() returned {r['ready_s']:.2f} s")


FIGURES = (  # key, header, format, from one run
    ("rate", "events/s", "{:,.0f}", lambda r: r["rate"]),
    ("x_bare", "x bare", "{:.2f}", None),
    ("cpu_10k", "CPU s/10k", "{:.3f}", lambda r: r["cpu_10k"]),
    ("p50", "p50 ms", "{:.3f}", lambda r: percentile(r["sent_lat"], 0.5)),
    ("p99", "p99 ms", "{:.3f}", lambda r: percentile(r["sent_lat"], 0.99)),
    ("n", "lat n", "{:.0f}", lambda r: len(r["sent_lat"])),
    ("recv_p50", "recv p50", "{:.3f}", lambda r: percentile(r["recv_lat"], 0.5) if r["recv_lat"] else None),
    ("recv_p99", "recv p99", "{:.3f}", lambda r: percentile(r["recv_lat"], 0.99) if r["recv_lat"] else None),
    ("idle_rss", "idle MB", "{:.1f}", lambda r: r["idle_rss"]),
    ("load_rss", "load MB", "{:.1f}", lambda r: r["load_rss"]),
    ("listen_s", "listen s", "{:.2f}", lambda r: r["listen_s"]),
    ("ready_s", "start() s", "{:.2f}", lambda r: r["ready_s"]),
)


def table(servers: list[Server], args) -> None:
    done = [s for s in servers if s.runs]
    values: dict[str, dict[str, list[float]]] = {}
    for s in done:
        values[s.label] = {k: [v for r in s.runs if (v := f(r)) is not None] for k, _, _, f in FIGURES if f}
    bare = next((statistics.median(values[s.label]["rate"]) for s in done if s.key == "bare"), None)
    widths = [max(24, *(len(s.label) for s in servers))] + [max(len(h), 9) for _, h, _, _ in FIGURES]
    head = " ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                    enumerate(zip(["server"] + [h for _, h, _, _ in FIGURES], widths)))
    n = max((len(s.runs) for s in done), default=0)
    print(f"\nMedians of {n} round(s): {args.events:,} events at full speed; latency = client send -> "
          f"integrator handler called at {args.rate:g} events/s for {args.seconds:g} s over 1 connection "
          f"(lat n = events stamped that reached the handler: ticos-client passes only 11 event types "
          f"to its handlers; recv = frame reached the intake (intake.ingest) -> handler, where that hook "
          f"exists); RSS idle and after the full-speed load; listen/start() = process spawn -> port accepting / "
          f"start call returned.")
    print(head)
    print("-" * len(head))
    spread_rows = []
    for s in servers:
        if not s.runs:
            print(s.label.ljust(widths[0]) + f" skipped: {s.skipped or 'failed'}")
            continue
        cells, spread = [], []
        for (key, _, fmt, _f), w in zip(FIGURES, widths[1:]):
            if key == "x_bare":
                cells.append((fmt.format(statistics.median(values[s.label]["rate"]) / bare) if bare else "-").rjust(w))
                spread.append("".rjust(w))
                continue
            vals = values[s.label][key]
            cells.append((fmt.format(statistics.median(vals)) if vals else "-").rjust(w))
            ratio = f"{max(vals) / min(vals):.2f}x" if len(vals) > 1 and min(vals) else "-"
            spread.append(ratio.rjust(w))
        print(s.label.ljust(widths[0]) + " " + " ".join(cells))
        spread_rows.append(s.label.ljust(widths[0]) + " " + " ".join(spread))
    if n > 1:
        print("\nSpread (max/min over the rounds, same columns):")
        print("\n".join(spread_rows))


async def run(args) -> None:
    servers = list(prepare(args))
    active = [s for s in servers if not s.skipped]
    for rnd in range(args.repetitions):
        order = active[rnd % len(active):] + active[:rnd % len(active)] if active else []
        print(f"\nround {rnd + 1}/{args.repetitions}:", flush=True)
        for s in order:
            with tempfile.TemporaryDirectory(prefix=f"ticos-bench-{s.key}-") as tmp:
                try:
                    r = await measure(s, args, Path(tmp))
                except Exception as exc:  # one failed server does not end the run
                    print(f"  {s.label}: FAILED: {type(exc).__name__}: {exc}", flush=True)
                    s.skipped = f"failed: {type(exc).__name__}: {exc}"
                    continue
            s.runs.append(r)
            print(summary_line(s.label, r), flush=True)
            for note in r["notes"]:
                print(f"    note: {note}")
            if r["netguard"]:
                print(f"    netguard: {len(r['netguard'])} outbound attempt(s) refused, e.g. {r['netguard'][0]}")
            print(f"    stored: {r['stored']}", flush=True)
    table(servers, args)
    attempts = sum(len(r["netguard"]) for s in servers for r in s.runs)
    print(f"\nOutbound connection attempts refused by the netguard: {attempts}; "
          f"load average now {os.getloadavg()[0]:.2f} (other work on this machine skews every row)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events sent at full speed (default 100000)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s for the latency figure (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds at that rate (default 10)")
    parser.add_argument("--repetitions", type=int, default=3, help="rounds; the table shows medians (default 3)")
    parser.add_argument("--skip", action="append", default=[], choices=[k for k, _ in SERVERS],
                        help="leave a server out (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also measure the TicosClient API with ticos_agent imported from DIR "
                             "(a candidate change exported from another branch); repeatable")
    parser.add_argument("--prelude", metavar="FILE",
                        help="a Python file run in each ticos-agent server before it starts "
                             "(temporary timestamps for an investigation)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not install the ticos-client anchor; skip it when it is not installed yet")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
