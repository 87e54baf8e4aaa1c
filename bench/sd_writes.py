"""SD-card writes: bytes written per stored message and fsyncs per conversation minute.

A voice agent talks to a real server process over the WebSocket at a conversational pace
(``--turn-seconds``, one turn every 2 s by default, ``--turns`` 54): each turn is
``bench/load.py``'s ``voice_turn`` (user speech, the user item and its transcript, assistant
transcript and audio deltas, ``response.done``), with its function call kept only every
``--call-every`` turns. Its ids are as long as a realtime server's (``item_`` and 21 characters,
``event_`` and 21; ``--short-ids``: a few characters, as runs before 2026-11-26 sent): they
are in every event-log line and message row. Two pacings (``--pacing``, both by default):

``voice``  as a realtime voice agent sends them: speech starts; at 30 % of the turn the user's
           speech stops, its item is created and the response starts; transcript and audio
           deltas stream until 75 %, the user's transcription arriving half-way through them;
           at 78 % the transcript is done, the call (if any) and ``response.done`` follow
           within a few ms; then the robot speaks until the next turn.
``even``   every frame of the turn evenly spread over it (``bench/card_pull.py``'s pacing).

Per server and place it reads the server process's ``/proc/PID/io`` ``write_bytes`` (bytes
the process caused to be written to storage: page-cache pages it dirtied, so a page written
again before the kernel wrote it back counts once, and one written again after an ``fsync``
or a writeback counts again) from one second after the socket opened until ``--settle``
seconds after the last frame, and divides by the messages stored (``SELECT COUNT(*) FROM
messages`` afterwards). A run of 54 turns ends before SQLite's automatic checkpoint, so
``+ckpt`` adds what the next checkpoint will write for the window's WAL (its distinct pages,
read from the ``-wal`` file, in 4 KiB pages of the database file): the steady-state figure.
fsyncs are counted with ``strace -f -e trace=fsync,fdatasync`` (timestamped; only the calls
inside the window: a server's start and stop are not counted; without strace that column
says ``n/a``). Commits per turn come from ticos-agent's ``/health`` (``storage.commits``).
It also reports what the server wrote during ``--idle`` seconds of silence after the window
(it should be 0).

Places: ``internal``, a folder on this machine's disk (``/var/tmp`` unless ``--dir``), and
``card``: an ext4 (or ``--fstype vfat``) image loop-mounted under a temporary ``media/CARD``
(needs root, ``mkfs`` and loop devices; skipped with the reason otherwise). On the card the
loop device's own write counter (``/sys/block/loopN/stat``) is shown too: every byte the
card would receive, the filesystem's journal and metadata included.

Servers (one process each, with ``bench/netguard`` on ``PYTHONPATH`` and their own ``HOME``):

``ticos-agent``   the ``TicosClient`` API with ``enable_local_storage()`` (event log on), as
                  ``bench/load_servers.py client-api`` runs it; on the card the same program with
                  ``save_mode=SaveMode.EXTERNAL, tf_root_dir=<card>`` (``--serve-card`` below)
``ticos-client``  ticos-client 0.7.2 itself (``bench/ticos_client_env.py``), as
                  ``bench/load_servers.py ticos-client`` runs it; on the card its ``HOME`` is a
                  folder of the card (its storage code is the same for both modes: one
                  ``sqlite3`` connection with the default rollback journal and ``synchronous``)

``--variant NAME=DIR`` adds ticos-agent imported from another checkout (e.g. ``before=/work/main``),
for before/after figures from one run.

    sudo .venv/bin/python bench/sd_writes.py                        # both places, both servers
    .venv/bin/python bench/sd_writes.py --where internal --skip ticos-client --turns 20
    sudo .venv/bin/python bench/sd_writes.py --variant before=/work/main --pacing even
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import ticos_client_env  # noqa: E402

# --- the conversation ----------------------------------------------------------------------

def paced_turn(n: int, seconds: float, pacing: str, call_every: int,
               long_ids: bool = True) -> list[tuple[float, str]]:
    """(offset in seconds from the turn's start, frame) for turn ``n``; ids as long as a realtime
    server's unless ``long_ids`` is false (``--short-ids``)."""
    from load import voice_turn  # aiohttp is imported there: not needed by --serve-card

    frames = [f for f in voice_turn(n, long_ids) if (call_every and n % call_every == 0) or '"function_call"' not in f]
    if pacing == "even":
        return [(seconds * i / len(frames), f) for i, f in enumerate(frames)]
    kinds = [json.loads(f)["type"] for f in frames]
    deltas = [f for f, k in zip(frames, kinds) if k.endswith(".delta")]
    at = {"input_audio_buffer.speech_started": 0.0}
    out: list[tuple[float, str]] = []
    step = 0.004  # a burst: a few ms between frames
    head = ["input_audio_buffer.speech_stopped", "conversation.item.created", "response.created",
            "response.output_item.added"]
    tail = ["response.audio_transcript.done", "response.output_item.done", "response.done", "rate_limits.updated"]
    for f, k in zip(frames, kinds):
        if k in at:
            out.append((at[k] * seconds, f))
        elif k in head:
            out.append((0.30 * seconds + step * head.index(k), f))
        elif k in tail:
            out.append((0.78 * seconds + step * tail.index(k), f))
        elif k == "conversation.item.input_audio_transcription.completed":
            out.append((0.50 * seconds + step / 2, f))
    start, end = 0.32 * seconds, 0.75 * seconds
    out += [(start + (end - start) * i / len(deltas), f) for i, f in enumerate(deltas)]
    out.sort(key=lambda p: p[0])
    return out


SESSION_CREATED = json.dumps({"type": "session.created", "event_id": "event_session",
                              "session": {"id": "sess_sdwrites000000000000", "object": "realtime.session"}})


# --- measuring a process --------------------------------------------------------------------

def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def loop_written(dev: str | None) -> int | None:
    """Bytes written to a loop device so far (``/sys/block/loopN/stat``: sectors of 512 bytes)."""
    if not dev:
        return None
    fields = Path(f"/sys/block/{Path(dev).name}/stat").read_text().split()
    return int(fields[6]) * 512


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


#: tgkill's system call number per machine (Linux): a signal for one thread of a process.
TGKILL = {"x86_64": 234, "aarch64": 131, "armv7l": 268, "armv6l": 268, "i686": 270}


def terminate(pid: int) -> None:
    """SIGTERM to the server's main thread. A signal sent to the process may be handed to any
    thread (under strace it often is), and ``bench/load_servers.py`` waits for it in its main
    thread, which a signal taken by another thread does not wake."""
    import ctypes
    import platform

    number = TGKILL.get(platform.machine())
    if number is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, pid, pid, signal.SIGTERM) == 0:
            return
    os.kill(pid, signal.SIGTERM)


def count_fsyncs(trace: Path, start: float, end: float) -> int:
    """fsync/fdatasync calls started between ``start`` and ``end`` (wall clock), from an
    ``strace -f -ttt`` log: ``PID SECONDS fdatasync(5) = 0`` (a call another thread interrupted
    shows as ``... <unfinished ...>`` and later ``<... fdatasync resumed>``: counted once)."""
    n = 0
    for line in trace.read_text(errors="replace").splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) < 3 or not parts[2].startswith(("fsync(", "fdatasync(")):
            continue
        if start <= float(parts[1]) <= end:
            n += 1
    return n


def pending_checkpoint(db: Path) -> int:
    """Bytes the next checkpoint will write into ``db``: the distinct pages in its WAL (the
    frames of the WAL's current generation), counted in whole 4 KiB pages of the file as the
    kernel counts them. 0 without a WAL (a rollback journal writes the database at each commit).
    """
    try:
        wal = Path(f"{db}-wal").read_bytes()
    except OSError:
        return 0
    if len(wal) < 32:
        return 0
    page_size = int.from_bytes(wal[8:12], "big")
    salts = wal[16:24]
    frame = 24 + page_size
    pages = set()
    for off in range(32, len(wal) - frame + 1, frame):
        if wal[off + 8:off + 16] != salts:  # a frame of an earlier generation: done
            break
        pages.add(int.from_bytes(wal[off:off + 4], "big"))
    return len({(p - 1) * page_size // 4096 for p in pages}) * 4096


def wal_breakdown(db: Path, scratch: Path) -> dict:
    """What the WAL's current generation holds: its commits, and its frames per table or index
    (a copy of the database and its WAL is opened, and SQLite's ``dbstat`` names each page)."""
    wal = Path(f"{db}-wal")
    try:
        data = wal.read_bytes()
    except OSError:
        return {}
    if len(data) < 32:
        return {}
    page_size = int.from_bytes(data[8:12], "big")
    salts, frame = data[16:24], 24 + page_size
    pages: list[int] = []
    commits = 0
    for off in range(32, len(data) - frame + 1, frame):
        if data[off + 8:off + 16] != salts:
            break
        pages.append(int.from_bytes(data[off:off + 4], "big"))
        commits += int.from_bytes(data[off + 4:off + 8], "big") != 0
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / "copy.db"
    shutil.copyfile(db, copy)
    Path(f"{copy}-wal").write_bytes(data)
    con = sqlite3.connect(str(copy))
    try:
        owner = dict(con.execute("SELECT pageno, name FROM dbstat").fetchall())
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    finally:
        con.close()
    by: dict[str, int] = {}
    for page in pages:
        name = "header" if page == 1 else owner.get(page, "free")
        by[name] = by.get(name, 0) + 1
    return {"commits": commits, "frames": len(pages), "page_size": page_size, "by": by}


def health(port: int) -> dict:
    """The server's ``/health`` (ticos-agent's), or ``{}``."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return {}


@dataclass
class Server:
    key: str            # ticos-agent | ticos-client
    label: str
    python: str = sys.executable
    env: dict = field(default_factory=dict)
    skipped: str | None = None


@dataclass
class Place:
    name: str           # internal | card
    root: Path          # where HOME (internal) or the card root (card) is
    device: str | None = None
    skipped: str | None = None


class Card:
    """A filesystem image loop-mounted under ``where/media/CARD``."""

    def __init__(self, where: Path, fstype: str, size_mb: int):
        self.where, self.fstype, self.size_mb = where, fstype, size_mb
        self.image = where / f"card-{fstype}.img"
        self.root = where / "media" / "CARD"
        self.device: str | None = None

    def __enter__(self) -> Card:
        if os.geteuid() != 0:
            raise RuntimeError("mounting a card image needs root")
        mkfs = {"ext4": ["mkfs.ext4", "-q", "-F"], "vfat": ["mkfs.vfat"]}[self.fstype]
        if not shutil.which(mkfs[0]):
            raise RuntimeError(f"no {mkfs[0]} here")
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size_mb << 20)
        for cmd in (mkfs + [str(self.image)],):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
        dev = subprocess.run(["losetup", "-f", "--show", str(self.image)], capture_output=True, text=True)
        if dev.returncode:
            raise RuntimeError(f"losetup: {dev.stderr.strip()}")
        self.device = dev.stdout.strip()
        done = subprocess.run(["mount", self.device, str(self.root)], capture_output=True, text=True)
        if done.returncode:
            subprocess.run(["losetup", "-d", self.device], capture_output=True)
            raise RuntimeError(f"mount: {done.stderr.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", str(self.root)], capture_output=True)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], capture_output=True)


# --- one run --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(server: Server, place: Place, port: int, workdir: Path, home: Path) -> list[str]:
    if server.key == "ticos-agent" and place.name == "card":
        return [server.python, str(Path(__file__).resolve()), "--serve-card", str(port), str(workdir),
                str(place.root)]
    mode = "ticos-client" if server.key == "ticos-client" else "client-api"
    return [server.python, str(BENCH / "load_servers.py"), mode, str(port), str(workdir)]


def database(server: Server, place: Place, home: Path) -> Path:
    if server.key == "ticos-agent" and place.name == "card":
        return place.root / ".config" / "ticos" / "ticos.db"
    return home / ".config" / "ticos" / "ticos.db"


async def measure(server: Server, place: Place, args, workdir: Path, pacing: str) -> dict:
    import aiohttp

    port = free_port()
    home = (place.root / "home") if place.name == "card" and server.key == "ticos-client" else workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    if server.key == "ticos-client":
        ticos_client_env.make_home(home)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(BENCH / "netguard"),
           "BENCH_NETGUARD_LOG": str(workdir / "netguard.log"), "PYTHONDONTWRITEBYTECODE": "1", **server.env}
    env.pop("TICOS_ALLOW_UNMOUNTED_CARD", None)  # the card is a real mount point
    # the trace goes to a tmpfs: strace's own writes must not count (tmpfs pages are never written back)
    trace = Path(tempfile.mkdtemp(prefix="ticos-sd-trace-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)) \
        / "fsyncs.trace"
    cmd = command(server, place, port, workdir, home)
    strace = shutil.which("strace") if not args.no_strace else None
    if strace:
        cmd = [strace, "-f", "-qq", "--seccomp-bpf", "-ttt", "-e", "trace=fsync,fdatasync", "-e", "signal=none",
               "-o", str(trace)] + cmd
    # stdout/stderr go to pipes read here: the server's own log lines are not disk writes of its
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
    pid = proc.pid
    lines: list[str] = []
    ready = threading.Event()

    def read_output() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            text = raw.decode(errors="replace").rstrip()
            lines.append(text)
            if text.startswith(("READY", "FAILED")):
                ready.set()
        ready.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    out: dict = {}
    try:
        if not await asyncio.to_thread(ready.wait, 60) or not any(x.startswith("READY") for x in lines):
            raise RuntimeError("server did not start: " + " | ".join(lines[-6:]))
        if strace:  # the server is strace's child
            deadline = time.monotonic() + 10
            while not (kids := children(proc.pid)) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if not kids:
                raise RuntimeError(f"no child of strace ({proc.pid}) found")
            pid = kids[0]
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/realtime", max_msg_size=0)
            drain = asyncio.create_task(_drain(ws))
            await ws.send_str(SESSION_CREATED)
            await asyncio.sleep(1.0)
            w0, d0, t0 = write_bytes(pid), loop_written(place.device), time.time()
            start = time.monotonic()
            for n in range(args.turns):
                base = start + n * args.turn_seconds
                for offset, frame in paced_turn(n, args.turn_seconds, pacing, args.call_every, not args.short_ids):
                    delay = base + offset - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await ws.send_str(frame)
            await asyncio.sleep(max(0.0, start + args.turns * args.turn_seconds - time.monotonic()) + args.settle)
            w1, d1, t1 = write_bytes(pid), loop_written(place.device), time.time()
            out["checkpoint_bytes"] = pending_checkpoint(database(server, place, home))
            if args.breakdown:
                out["breakdown"] = wal_breakdown(database(server, place, home), workdir / "breakdown")
            out["commits"] = (await asyncio.to_thread(health, port)).get("storage", {}).get("commits")
            await asyncio.sleep(args.idle)
            w2 = write_bytes(pid)
            await ws.close()
            drain.cancel()
        out.update(window_bytes=w1 - w0, idle_bytes=w2 - w1, seconds=t1 - t0,
                   device_bytes=None if d0 is None else d1 - d0)
        terminate(pid)  # the server itself (strace ends with it)
        deadline = time.monotonic() + 30
        while (done := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                out["notes_stop"] = "did not stop within 30 s of SIGTERM; killed"
                deadline = float("inf")
            await asyncio.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(done[1])
        out["fsyncs"] = count_fsyncs(trace, t0, t1) if strace else None
    finally:
        shutil.rmtree(trace.parent, ignore_errors=True)
        if proc.returncode is None:
            for target in {pid, proc.pid}:
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
        reader.join(5)
    db = database(server, place, home)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out["messages"] = con.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        out["events"] = con.execute("SELECT COUNT(*) FROM events").fetchone()[0] if "events" in tables else 0
        out["page_size"] = con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()
    out["notes"] = [x[5:] for x in lines if x.startswith("NOTE ")] + [out[k] for k in ("notes_stop",) if k in out]
    net = workdir / "netguard.log"
    out["netguard"] = net.read_text().splitlines() if net.exists() else []
    return out


async def _drain(ws) -> None:
    async for _ in ws:
        pass


def row(label: str, place: str, pacing: str, r: dict, turns: int) -> str:
    msgs = max(1, r["messages"])
    minutes = r["seconds"] / 60
    fs = "n/a" if r["fsyncs"] is None else f"{r['fsyncs'] / minutes:,.0f}"
    dev = "" if r["device_bytes"] is None else f"{r['device_bytes'] / msgs / 1024:,.1f}"
    commits = "" if r.get("commits") is None else f"{r['commits'] / turns:.2f}"
    return (f"{label:<26} {place:<9} {pacing:<6} {r['window_bytes'] / msgs / 1024:>7,.2f} "
            f"{(r['window_bytes'] + r['checkpoint_bytes']) / msgs / 1024:>7,.2f} {dev:>7} {fs:>9} "
            f"{commits:>8} {r['messages']:>5} {r['events']:>6} {r['page_size']:>5} {r['idle_bytes']:>6}")


HEAD = (f"{'server':<26} {'place':<9} {'pacing':<6} {'KB/msg':>7} {'+ckpt':>7} {'dev KB':>7} {'fsync/min':>9} "
        f"{'com/turn':>8} {'msgs':>5} {'events':>6} {'page':>5} {'idle B':>6}")


async def run(args) -> None:
    servers = [Server("ticos-agent", "ticos-agent")]
    for spec in args.variant:
        name, _, root = spec.partition("=")
        if not root or not (Path(root) / "ticos_agent" / "__init__.py").exists():
            raise SystemExit(f"--variant {spec!r}: expected NAME=DIR with DIR/ticos_agent/__init__.py")
        servers.append(Server("ticos-agent", f"ticos-agent [{name}]",
                              env={"BENCH_AGENT_ROOT": str(Path(root).resolve())}))
    anchor = Server("ticos-client", f"ticos-client {ticos_client_env.VERSION}")
    servers.append(anchor)
    if "ticos-client" in args.skip:
        anchor.skipped = "--skip"
    else:
        try:
            anchor.python = str(ticos_client_env.python(install=not args.no_install))
        except ticos_client_env.Unavailable as exc:
            anchor.skipped = str(exc)
    if "ticos-agent" in args.skip:  # this checkout's (the --variant ones still run)
        servers[0].skipped = "--skip"
    print(f"{args.turns} turns, one every {args.turn_seconds:g} s ({' and '.join(args.pacing)} pacing), a call every "
          f"{args.call_every} turns; window: 1 s after the socket opened to {args.settle:g} s after the last frame")
    if not shutil.which("strace") or args.no_strace:
        print("fsyncs: n/a (no strace here)" if not args.no_strace else "fsyncs: not counted (--no-strace)")
    results: list[str] = []
    base = Path(args.dir) if args.dir else Path("/var/tmp")
    with tempfile.TemporaryDirectory(prefix="ticos-sd-writes-", dir=base) as tmp_name:
        tmp = Path(tmp_name)
        for pacing, where, s in [(p, w, s) for p in args.pacing for w in args.where for s in servers]:
            if s.skipped:
                continue
            workdir = tmp / f"{where}-{len(results)}"
            workdir.mkdir()
            try:
                if where == "card":
                    with Card(workdir / "card", args.fstype, args.size_mb) as card:
                        place = Place("card", card.root, card.device)
                        r = await measure(s, place, args, workdir, pacing)
                else:
                    r = await measure(s, Place("internal", workdir), args, workdir, pacing)
            except Exception as exc:
                line = f"{s.label:<26} {where:<9} {pacing:<6} skipped: {type(exc).__name__}: {exc}"
                print(line, flush=True)
                results.append(line)
                continue
            line = row(s.label, where, pacing, r, args.turns)
            print(HEAD + "\n" + line if not results else line, flush=True)
            for note in r["notes"]:
                print(f"    note: {note}")
            if b := r.get("breakdown"):
                if "by" in b:
                    parts = ", ".join(f"{name} {n / args.turns:.1f}" for name, n in
                                      sorted(b["by"].items(), key=lambda kv: -kv[1]))
                    print(f"    WAL: {b['commits']} commits, {b['frames'] / max(1, b['commits']):.1f} frames of "
                          f"{b['page_size']} B per commit; frames per turn: {parts}")
                else:
                    print(f"    WAL: {b.get('error')}")
            if r["netguard"]:
                print(f"    netguard: {len(r['netguard'])} outbound attempt(s) refused, e.g. {r['netguard'][0]}")
            results.append(line)
    print(f"\n{HEAD}\n" + "\n".join(results))
    print("\nKB/msg: write_bytes of the server process in the window / messages stored; +ckpt: the same plus what "
          "the next checkpoint will write for the window's WAL (its distinct pages, in 4 KiB pages of the file): the "
          "steady-state figure, since a short run may end before SQLite's automatic checkpoint (ticos-client has no "
          "WAL: its commits write the database itself); dev KB: the card's loop device writes per message "
          "(filesystem journal and metadata included, before the checkpoint); fsync/min: fsync+fdatasync calls per "
          "minute of the window; com/turn: commits per turn (ticos-agent's /health); idle B: written during the "
          "idle seconds after the window.")


# --- the card-mode server (ticos-agent's TicosClient on a card) ------------------------------

def serve_card(port: int, workdir: str, tf_root: str) -> None:
    import load_servers

    sys.path.insert(0, load_servers.AGENT_ROOT)
    from ticos_agent import SaveMode, TicosClient

    probe = load_servers.Probe(workdir)
    client = TicosClient(port=port, save_mode=SaveMode.EXTERNAL, tf_root_dir=tf_root)
    client.enable_local_storage()
    client.set_message_handler(probe)
    client.set_function_call_handler(lambda name, args: {"on": args.get("on")})
    if not client.start():
        load_servers.say("FAILED TicosClient.start() returned False")
        sys.exit(1)
    load_servers.say("READY 0")
    load_servers.wait_for_sigterm()
    client.stop()


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-card":
        serve_card(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=54)
    parser.add_argument("--turn-seconds", type=float, default=2.0)
    parser.add_argument("--pacing", action="append", choices=("voice", "even"),
                        help="voice, even (repeatable; default both)")
    parser.add_argument("--call-every", type=int, default=3, help="a function call every N turns (0: none)")
    parser.add_argument("--settle", type=float, default=2.5,
                        help="seconds after the last frame in the window (the event log commits up to 2 s late)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of silence measured after the window")
    parser.add_argument("--where", action="append", choices=("internal", "card"),
                        help="internal, card (repeatable; default both)")
    parser.add_argument("--fstype", choices=("ext4", "vfat"), default="ext4")
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--dir", help="where the internal folder and card images go (default /var/tmp: a disk)")
    parser.add_argument("--skip", action="append", default=[], choices=("ticos-agent", "ticos-client"))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also ticos-agent imported from DIR (e.g. before=/work/main); repeatable")
    parser.add_argument("--no-install", action="store_true", help="do not install the ticos-client anchor")
    parser.add_argument("--breakdown", action="store_true",
                        help="say which tables and indexes the WAL's frames belong to (ticos-agent)")
    parser.add_argument("--no-strace", action="store_true", help="do not count fsyncs")
    parser.add_argument("--short-ids", action="store_true",
                        help="ids of a few characters (item_U7), as runs before 2026-11-26 sent, instead of a "
                             "realtime server's 26-27 (item_ and 21): fewer bytes per event-log line and message")
    args = parser.parse_args()
    args.where = args.where or ["internal", "card"]
    args.pacing = args.pacing or ["voice", "even"]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
