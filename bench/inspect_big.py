"""A big card for ``ticos-agent inspect``: build it, then time every view and filter.

The database is made with the agent's own schema (:func:`ticos_agent.storage.schema.prepare`)
and the writer's own statements (:mod:`ticos_agent.storage.writes`), shaped like a year of a
busy robot: ``--messages`` messages (default one million) in sessions of 20-200 messages,
``--calls`` function calls (default 200,000) with the outcomes the agent stores (done with
timings, dropped by barge-in, failed: unknown tag or a serial device that is down, busy), and
the event log of the last 30 days (what the retention keeps). Then every view's first page and
every filter is timed, in this process (the query) and as a command (what a person waits for),
and a full export is streamed while its peak memory is measured.

    .venv/bin/python bench/inspect_big.py                      # build (cached) and time
    .venv/bin/python bench/inspect_big.py --db /tmp/big.db --rebuild
    .venv/bin/python bench/inspect_big.py --messages 100000 --calls 20000

Prints one line per measurement. Timings are this machine's; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ticos_agent.storage import schema, writes  # noqa: E402

USER_LINES = [
    "Wave at me!", "What's the weather like today?", "Tell me a story about a dragon",
    "Can you dance for me?", "Nod if you can hear me", "What is your name?", "I'm feeling sad today",
    "Do the moonwalk", "How far away is the moon?", "Sing me a song", "Look at me", "Shake your head",
    "What time is it?", "Can you bow like a knight?", "Tell me a joke about penguins",
    "Why is the sky blue?", "Show me a happy face", "Stop!", "Turn around", "Good night robot",
]
ASSISTANT_LINES = [
    "Sure, waving now!", "It looks sunny with a few clouds, around eighteen degrees.",
    "Once upon a time a small dragon lived in a cave by the sea and collected shiny stones.",
    "Here is my best dance, watch my arms!", "Yes, I can hear you loud and clear.",
    "My name is Ticos, nice to meet you.", "I'm sorry you feel sad. Do you want to talk about it?",
    "I can't moonwalk, but I can do a little dance.", "The moon is about 384,000 kilometres away.",
    "La la la, here is a little song for you.", "I'm looking at you now.", "Shaking my head like this.",
    "It is a quarter past four.", "A deep bow, my lady.", "Why don't penguins fly? They're too cool.",
    "Sunlight scatters off the air, and blue light scatters the most.", "Here's my happiest face!",
    "Okay, stopping.", "Turning around.", "Good night, sleep well!",
]
MOTIONS = ["wave", "nod", "shake", "bow", "dance"]
EMOTIONS = ["happy", "sad", "surprised", "thinking", "angry"]


def _motion_result(tag: str, repeat: int, rid: str, cid: str, rng: random.Random) -> tuple[str, dict]:
    roll = rng.random()
    args = {"motion_tag": tag, "speed": 1.0, "repeat": repeat, "wait": True}
    detail = {"kind": "motion", "tag": tag, "args": args, "notes": [], "actuators": ["arm", "head"],
              "planned_s": 1.2 * repeat, "response_id": rid, "call_id": cid}
    if roll < 0.02:
        known = ", ".join(MOTIONS)
        reason = f"unknown motion tag 'moonwalk'; known: {known}"
        return "failed", {"status": "failed", "reason": reason,
                          "motion": {"status": "failed", "reason": reason, "detail": {**detail, "known": MOTIONS}}}
    if roll < 0.03:
        reason = "actuator 'head' (feetech-sts) is down: [Errno 5] Input/output error: '/dev/ttyUSB0'"
        return "failed", {"status": "failed", "reason": reason,
                          "motion": {"status": "failed", "reason": reason, "detail": detail}}
    if roll < 0.035:
        reason = "actuator 'arm' has 8 commands waiting or running (robot.max_queued)"
        return "busy", {"status": "busy", "reason": reason,
                        "motion": {"status": "busy", "reason": reason, "detail": detail}}
    elapsed = round(1.2 * repeat + rng.random() * 0.01, 4)
    return "done", {"status": "done", "reason": None, "motion": {
        "status": "done", "reason": None, "detail": {**detail, "elapsed_s": elapsed, "late_max_ms": 1.2}}}


def _emotion_result(tag: str, rid: str, cid: str, rng: random.Random) -> tuple[str, dict]:
    args = {"emotion_tag": tag, "intensity": 1.0, "duration": None, "fade_in": 0.0}
    detail = {"kind": "emotion", "tag": tag, "args": args, "notes": [], "actuators": ["face", "head"],
              "response_id": rid, "call_id": cid, "elapsed_s": 0.3}
    return "done", {"status": "done", "reason": None, "emotion": {"status": "done", "reason": None, "detail": detail}}


def build(path: Path, messages: int, calls: int, days: float = 365.0, event_days: float = 30.0,
          seed: int = 11) -> None:
    """Write the big database at ``path`` (replacing it)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema.prepare(str(path))
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    turns = messages // 2
    call_every = turns / max(1, calls)
    end = time.time() - 60
    step = days * 86400 / turns  # mean seconds between turns, gaps between sessions included
    idle = max(0.0, step - 10.0)  # of which the robot waits (a turn itself takes about 10 s)
    *_, last = _turns(seed, turns, idle)  # a first pass over the clock alone: the card ends now
    t = end - last.end
    event_from = end - event_days * 86400
    next_id = int(t)
    msg_rows: list[tuple] = []
    call_rows: list[tuple] = []
    outcome_rows: list[tuple] = []
    event_rows: list[tuple] = []
    session = ""
    call_debt = 0.0
    made_calls = 0
    ev_n = 0
    base = t
    conn.execute("BEGIN")

    def local(ts: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))

    def new_id(ts: float) -> str:
        nonlocal next_id
        next_id = max(next_id + 1, int(ts))
        return str(next_id)

    def event(ts: float, etype: str, item: str | None = None, rid: str | None = None) -> None:
        nonlocal ev_n
        if ts >= event_from:
            ev_n += 1
            event_rows.append((ts, etype, session, f"event_{ev_n}", item, rid))

    for turn, tt in enumerate(_turns(seed, turns, idle)):
        if tt.new_session:
            session = "sess_" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
                                        for _ in range(20))
            event(base + tt.session_at, "session.created")
        t = base + tt.start
        uid, aid, rid = f"item_U{turn}", f"item_A{turn}", f"resp_{turn}"
        event(t, "input_audio_buffer.speech_started", f"item_U{turn}")
        t = base + tt.heard
        event(t, "input_audio_buffer.speech_stopped", uid)
        event(t + 0.01, "conversation.item.created", uid)
        roll = rng.random()
        if roll < 0.02:
            msg_rows.append((new_id(t), "user", "", uid, "nobody", local(t), session, "transcription_failed", None))
            event(t + 0.4, "conversation.item.input_audio_transcription.failed", uid)
        else:
            msg_rows.append((new_id(t), "user", rng.choice(USER_LINES), uid, "nobody", local(t), session,
                             "completed", None))
            event(t + 0.4, "conversation.item.input_audio_transcription.completed", uid)
        t = base + tt.answer
        event(t, "response.created", None, rid)
        event(t + 0.05, "response.output_item.added", aid, rid)
        barge, text = tt.barge, tt.text
        call_debt += 1
        n_calls = 0
        while call_debt >= call_every and made_calls < calls:
            call_debt -= call_every
            n_calls += 1
        for k in range(n_calls):
            made_calls += 1
            cid = f"call_{turn}_{k}"
            kind = rng.random()
            ct = t + 0.2 + 0.1 * k
            if kind < 0.6:
                tag, repeat = rng.choice(MOTIONS), rng.choice([1, 1, 1, 2, 3])
                name, args = "motion", {"motion_tag": tag, "repeat": repeat}
                status, result = _motion_result(tag, repeat, rid, cid, rng)
            elif kind < 0.9:
                tag = rng.choice(EMOTIONS)
                name, args = "emotion", {"emotion_tag": tag}
                status, result = _emotion_result(tag, rid, cid, rng)
            else:
                name, args = "get_weather", {"city": rng.choice(["Paris", "Oslo", "Lima"])}
                status, result = "done", {"status": "done", "reason": None, "result": {"sky": "clear", "c": 18}}
            if barge:
                reason = "interrupted (barge-in or cancelled response)"
                status, result = "dropped", {"status": "dropped", "reason": reason}
            event(ct, "response.output_item.done", f"item_{cid}", rid)
            call_rows.append((cid, name, json.dumps(args), session, rid, f"item_{cid}", "received", local(ct)))
            outcome_rows.append((cid, status, json.dumps(result), local(ct + 1.5)))
        if barge:
            words = text.split()
            said = " ".join(words[: max(1, len(words) // 2)])
            t = base + tt.end - 0.05
            event(t, "input_audio_buffer.speech_started", f"item_U{turn}b")
            t = base + tt.end
            event(t, "response.done", None, rid)
            msg_rows.append((new_id(t), "assistant", said, aid, "nobody", local(t), session, "cancelled", rid))
        else:
            t = base + tt.end
            event(t - 0.1, "response.audio_transcript.done", aid, rid)
            event(t - 0.05, "response.output_item.done", aid, rid)
            event(t, "response.done", None, rid)
            msg_rows.append((new_id(t), "assistant", text, aid, "nobody", local(t), session, "completed", rid))
        if turn % 997 == 0:
            event(t + 0.2, "error")
        if len(msg_rows) >= 20000:
            _flush(conn, msg_rows, call_rows, outcome_rows, event_rows)
    _flush(conn, msg_rows, call_rows, outcome_rows, event_rows)
    for i in range(2000):
        conn.execute(writes.SQL_ADD_MEMORY, ("long_term" if i % 5 == 0 else "short_term",
                                             f"the child likes {rng.choice(MOTIONS)}ing robots (note {i})",
                                             "nobody", local(end - (2000 - i) * 3600)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


class _Turn:
    """When one turn's moments fall, in seconds from the start of the card."""

    __slots__ = ("answer", "barge", "end", "heard", "new_session", "session_at", "start", "text")


def _turns(seed: int, turns: int, idle: float):
    """The clock of every turn, from its own random numbers (so a first pass can find where
    the card ends without making any row)."""
    rng = random.Random(seed * 7919 + 1)
    t = 0.0
    left = 0
    for _ in range(turns):
        tt = _Turn()
        tt.new_session = left <= 0
        if tt.new_session:
            left = rng.randint(10, 100)
            t += idle * 0.5 * left  # the robot sits idle between conversations
            tt.session_at = t
        left -= 1
        t += idle * rng.random() + 2.0
        tt.start = t
        t += 1.5 + rng.random() * 2
        tt.heard = t
        t += 0.6
        tt.answer = t
        tt.barge = rng.random() < 0.08
        tt.text = rng.choice(ASSISTANT_LINES)
        t += (1.05 + rng.random()) if tt.barge else (2.0 + len(tt.text) / 15.0)
        tt.end = t
        yield tt


def _flush(conn: sqlite3.Connection, msgs: list, calls: list, outcomes: list, events: list) -> None:
    conn.executemany(writes.SQL_ADD_MESSAGE, msgs)
    conn.executemany(writes.SQL_RECORD_CALL, calls)
    conn.executemany(writes.SQL_CALL_OUTCOME, outcomes)
    conn.executemany(writes.SQL_LOG_EVENT, events)
    for rows in (msgs, calls, outcomes, events):
        rows.clear()


def counts(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        n = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
             for t in ("messages", "function_calls", "events", "memories")]
    finally:
        conn.close()
    size = path.stat().st_size / 2**20
    return f"{n[0]:,} messages, {n[1]:,} calls, {n[2]:,} events, {n[3]:,} memories; {size:.0f} MB"


def _cli(args: list[str], db: Path) -> tuple[float, int, str]:
    """The whole command, as a person runs it: Python's start and imports included."""
    env = {**os.environ, "HOME": tempfile.gettempdir(), "NO_COLOR": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ticos_agent.cli", *args, "--db", str(db)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    took = time.perf_counter() - start
    return took, done.returncode, done.stdout if done.returncode == 0 else done.stderr


def _evict(path: Path) -> None:
    """Drop this file's pages from the page cache (only its own): the next read is cold, as
    from a card just put in."""
    for p in (path, Path(str(path) + "-wal")):
        if p.exists():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _in_process(args: list[str], db: Path) -> tuple[float, int, int]:
    """The view alone (imports done): seconds, exit status, lines written."""
    import contextlib
    import io

    from ticos_agent.cli import main as cli_main

    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = cli_main([*args, "--db", str(db)])
    return time.perf_counter() - start, rc, len(out.getvalue().splitlines())


CASES: list[tuple[str, list[str]]] = [
    ("transcript (last session)", ["inspect"]),
    ("transcript --session <prefix>", ["inspect", "transcript", "--session", "{prefix}"]),
    ("transcript of a session 6 months ago", ["inspect", "transcript", "--session", "{old}"]),
    ("messages", ["inspect", "messages"]),
    ("messages --since 2h", ["inspect", "messages", "--since", "2h"]),
    ("messages --since 200d --until 199d", ["inspect", "messages", "--since", "200d", "--until", "199d"]),
    ("messages --until <a day 300 days ago>", ["inspect", "messages", "--until", "{day300}"]),
    ("messages --role system (none: scans all)", ["inspect", "messages", "--role", "system"]),
    ("messages --role user", ["inspect", "messages", "--role", "user"]),
    ("messages --grep dragon", ["inspect", "messages", "--grep", "dragon"]),
    ("messages --grep (no match: scans all)", ["inspect", "messages", "--grep", "xylophone"]),
    ("messages --session <old> --grep moon", ["inspect", "messages", "--session", "{old}", "--grep", "moon"]),
    ("calls", ["inspect", "calls"]),
    ("calls --grep moonwalk", ["inspect", "calls", "--grep", "moonwalk"]),
    ("calls --since 3d", ["inspect", "calls", "--since", "3d"]),
    ("events", ["inspect", "events"]),
    ("events --session <prefix>", ["inspect", "events", "--session", "{prefix}"]),
    ("events --grep error", ["inspect", "events", "--grep", "error"]),
    ("memories", ["inspect", "memories"]),
    ("sessions", ["inspect", "sessions"]),
    ("sessions --grep dragon", ["inspect", "sessions", "--grep", "dragon"]),
    ("faults", ["inspect", "faults"]),
    ("faults --since 7d", ["inspect", "faults", "--since", "7d"]),
    ("summary", ["inspect", "summary"]),
    ("summary --since 3d", ["inspect", "summary", "--since", "3d"]),
    ("transcript --format markdown", ["inspect", "--format", "markdown"]),
]


def _params(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        last = conn.execute("SELECT session_id FROM messages ORDER BY rowid DESC LIMIT 1").fetchone()[0]
        n = conn.execute("SELECT MAX(rowid) FROM messages").fetchone()[0]
        old = conn.execute("SELECT session_id FROM messages WHERE rowid = ?", (n // 2,)).fetchone()[0]
    finally:
        conn.close()
    day300 = time.strftime("%Y-%m-%d", time.localtime(time.time() - 300 * 86400))
    return {"prefix": last[:9], "old": old, "day300": day300}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "ticos-inspect-big" / "ticos.db")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rebuild", action="store_true", help="build the database again even if it exists")
    ap.add_argument("--runs", type=int, default=3, help="warm runs per case (the best is printed)")
    ap.add_argument("--build-only", action="store_true")
    a = ap.parse_args()
    if a.rebuild or not a.db.exists():
        start = time.perf_counter()
        build(a.db, a.messages, a.calls)
        print(f"built {a.db} in {time.perf_counter() - start:.0f} s")
    print(f"database: {counts(a.db)}")
    if a.build_only:
        return 0
    params = _params(a.db)
    os.environ["NO_COLOR"] = "1"
    print("seconds per case: the view in this process from a cold page cache (the card just put in) and warm\n"
          "(best of --runs), and the whole command (Python's start and imports included, warm)")
    print(f"{'case':<44} {'cold':>6} {'warm':>6} {'command':>8}  lines")
    worst = 0.0
    for name, argv in CASES:
        argv = [x.format(**params) for x in argv]
        _evict(a.db)
        cold, rc, lines = _in_process(argv, a.db)
        if rc:
            print(f"{name:<44} FAILED: {_cli(argv, a.db)[2].strip()}")
            continue
        warm = min(_in_process(argv, a.db)[0] for _ in range(a.runs))
        command = min(_cli(argv, a.db)[0] for _ in range(a.runs))
        worst = max(worst, warm)
        print(f"{name:<44} {cold:6.3f} {warm:6.3f} {command:8.3f}  {lines}")
    print(f"slowest view (warm): {worst:.3f} s")
    _power_cut(a.db)
    _export(a.db)
    return 0


CUT = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('PRAGMA wal_autocheckpoint=0')
c.execute("INSERT INTO messages (id, role, content, datetime, session_id, status) VALUES "
          "('9999999999', 'user', 'the last words', datetime('now', 'localtime'), 'sess_cut', 'completed')")
os._exit(0)
"""


def _power_cut(db: Path) -> None:
    """The same card left by a power cut (-wal and -shm beside it): the first look recovers a
    copy into this computer's cache, the next ones reuse it."""
    with tempfile.TemporaryDirectory() as tmp:
        card = Path(tmp) / "card" / "ticos.db"
        card.parent.mkdir()
        shutil.copyfile(db, card)
        subprocess.run([sys.executable, "-c", CUT, str(card)], check=True)
        env = {**os.environ, "HOME": tmp, "XDG_CACHE_HOME": str(Path(tmp) / "cache"), "NO_COLOR": "1"}
        times = []
        for _ in range(3):
            _evict(card)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ticos_agent.cli", "inspect", "--db", str(card)],
                           capture_output=True, env=env, cwd=ROOT, check=True)
            times.append(time.perf_counter() - start)
        print(f"a card left by a power cut: first look {times[0]:.2f} s (a recovered copy is made), "
              f"then {min(times[1:]):.2f} s (the copy is reused)")


def _export(db: Path) -> None:
    """A full export through a pipe: lines, seconds, and the exporting process's peak memory
    (VmRSS; RssAnon is its own heap, the rest mapped files)."""
    for fmt in ("jsonl", "csv", "markdown"):
        env = {**os.environ, "HOME": tempfile.gettempdir()}
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", "export", "--db", str(db),
                                 "--events", "--format", fmt], stdout=subprocess.PIPE, env=env, cwd=ROOT)
        assert proc.stdout is not None
        lines, peak = 0, {"VmRSS": 0, "RssAnon": 0}
        for _ in proc.stdout:
            lines += 1
            if lines % 20000 == 0:
                _sample(proc.pid, peak)
        rc = proc.wait()
        took = time.perf_counter() - start
        print(f"export --events --format {fmt:<8} {took:6.1f} s  {lines:,} lines  peak VmRSS "
              f"{peak['VmRSS'] / 1024:.0f} MB (RssAnon {peak['RssAnon'] / 1024:.0f} MB)  exit {rc}")


def _sample(pid: int, peak: dict[str, int]) -> None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in peak:
                    peak[key] = max(peak[key], int(value.split()[0]))
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
