"""The inspector in a terminal and in a pipe: one-line errors, colour only on a TTY, output
that ``less`` and ``jq`` take as it is, files written with ``--output``."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest
from inspect_cards import build_card, copy_card, jsonl

from ticos_agent.cli import main

ESC = "\x1b["


@pytest.fixture(scope="module")
def card_db(tmp_path_factory):
    return build_card(tmp_path_factory.mktemp("robot"))


def cli(*argv: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    full.pop("NO_COLOR", None) if env is None or "NO_COLOR" not in env else None
    return subprocess.run([sys.executable, "-m", "ticos_agent.cli", *argv], capture_output=True, text=True,
                          timeout=60, env=full, **kw)


def in_a_terminal(*argv: str, columns: int = 60, env: dict | None = None) -> str:
    """What a person sees: the command on a real pseudo-terminal of ``columns`` columns."""
    main_fd, tty_fd = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(tty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full = {**os.environ, "TERM": "xterm", **(env or {})}
    full.pop("NO_COLOR", None)
    full.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", *argv], stdin=tty_fd, stdout=tty_fd,
                            stderr=tty_fd, env=full, close_fds=True)
    os.close(tty_fd)
    chunks = []
    while True:
        ready, _, _ = select.select([main_fd], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(main_fd, 65536)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(main_fd)
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.mark.parametrize(("argv", "code", "says"), [
    (["inspect", "--limit", "-3"], 2, "ticos-agent inspect: --limit must be 1 or more, not -3"),
    (["inspect", "--limit", "many"], 2, "ticos-agent inspect: --limit must be a whole number of 1 or more, not 'many'"),
    (["inspect", "mesages"], 2, "ticos-agent inspect: unknown view 'mesages'; did you mean 'messages'?"),
    (["inspect", "--format", "yaml"], 2,
     "ticos-agent inspect: unknown format 'yaml' (one of: text, jsonl, csv, markdown)"),
    (["inspect", "--role", "robto"], 2, "ticos-agent inspect: unknown role 'robto'; did you mean 'robot'?"),
    (["inspect", "memories", "--role", "user"], 2, "ticos-agent inspect: --role does not apply to memories"),
    (["inspect", "--since", "last tuesday"], 2, "ticos-agent inspect: --since 'last tuesday' is not a time"),
    (["inspect", "--since", "1h", "--until", "2h"], 2, "ticos-agent inspect: --since '1h' is not before --until '2h'"),
    (["inspect", "--grep", "  "], 2, "ticos-agent inspect: --grep needs some text to look for"),
    (["inspect", "--frobnicate"], 2, "ticos-agent inspect: unrecognized arguments: --frobnicate"),
    (["export", "--session", "sess_nope"], 1, "ticos-agent: no session 'sess_nope'"),
    (["inspect", "--session", "sess_"], 1,
     "ticos-agent: session prefix 'sess_' is ambiguous: sess_first_1, sess_main_42"),
])
def test_a_bad_argument_is_one_line_and_a_non_zero_exit(card_db, argv, code, says):
    done = cli(*argv, "--db", str(card_db))
    assert done.returncode == code
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(says), done.stderr


def test_a_path_that_is_not_a_database(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n" * 100)
    done = cli("inspect", "--db", str(tmp_path / "notes.txt"))
    assert (done.returncode, done.stdout) == (1, "")
    notes = tmp_path / "notes.txt"
    assert done.stderr == f"ticos-agent: cannot open database {notes} read-only: file is not a database\n"
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    done = cli("inspect", "--db", str(other))
    assert done.returncode == 1
    assert done.stderr == f"ticos-agent: {other} is not a ticos-agent or ticos-client database (no messages table)\n"
    done = cli("inspect", "--db", str(tmp_path / "missing.db"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no such file" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other.db"]  # nothing created


def test_colour_and_wrapping_in_a_terminal_only(card_db):
    seen = in_a_terminal("inspect", "--db", str(card_db), columns=60)
    assert ESC in seen  # coloured
    plain = re.sub(r"\x1b\[[0-9;]*m", "", seen)
    assert max(len(line) for line in plain.splitlines()) <= 60  # wrapped to the terminal
    cont = plain.splitlines()[plain.splitlines().index(next(
        line for line in plain.splitlines() if "↳ nod failed" in line)) + 1]
    assert cont.startswith(" " * 18)  # a wrapped line goes on under its text
    assert ESC not in in_a_terminal("inspect", "--db", str(card_db), env={"NO_COLOR": "1"})
    assert ESC not in in_a_terminal("inspect", "--db", str(card_db), "--color", "never")
    piped = cli("inspect", "--db", str(card_db))
    assert ESC not in piped.stdout and piped.stderr == ""
    assert any(len(line) > 100 for line in piped.stdout.splitlines())  # no terminal: lines are not cut
    forced = cli("inspect", "--db", str(card_db), "--color", "always")
    assert ESC in forced.stdout


def test_through_a_pipe_into_jq_and_head(card_db, tmp_path):
    for view in ("transcript", "messages", "calls", "events", "sessions", "faults", "summary"):
        done = cli("inspect", view, "--db", str(card_db), "--format", "jsonl")
        assert done.returncode == 0 and done.stderr == ""
        objects = jsonl(done.stdout)  # every line is one JSON object
        assert objects and all(isinstance(o, dict) and "kind" in o for o in objects)
        jq = subprocess.run(["jq", "-c", ".kind"], input=done.stdout, capture_output=True, text=True)
        assert jq.returncode == 0 and jq.stdout.splitlines() == [json.dumps(o["kind"]) for o in objects]
    head = subprocess.run(f"{sys.executable} -m ticos_agent.cli export --db {card_db} --events | head -1",
                          shell=True, capture_output=True, text=True, timeout=60)
    assert len(head.stdout.splitlines()) == 1 and "Traceback" not in head.stderr and "Broken pipe" not in head.stderr


def test_csv_has_stable_columns_whatever_the_card(card_db, tmp_path):
    from storage_helpers import make_sdk_v1

    old = make_sdk_v1(tmp_path / "old.db")
    for view, first in (("messages", ["card", "source", "id", "role", "content"]),
                        ("calls", ["card", "source", "call_id", "name", "arguments"]),
                        ("transcript", ["card", "source", "session_id", "time", "kind", "who", "text"])):
        heads = []
        for db in (card_db, old):
            done = cli("export", view, "--db", str(db), "--format", "csv")
            assert done.returncode == 0
            heads.append(next(csv.reader(io.StringIO(done.stdout))))
        assert heads[0] == heads[1] and heads[0][:len(first)] == first
    done = cli("export", "--db", str(card_db), "--format", "csv", "--events")
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["kind"] for r in table} == {"message", "memory", "call", "event"}
    assert next(r for r in table if r["call_id"] == "call_moon")["outcome"].startswith("failed: unknown motion tag")


def test_output_to_a_file_and_never_over_the_database(card_db, tmp_path):
    out = tmp_path / "bug.md"
    done = cli("inspect", "--db", str(card_db), "--format", "markdown", "--output", str(out))
    assert done.returncode == 0 and done.stdout == ""
    assert out.read_text().startswith("**Session sess\\_main\\_42")
    db = copy_card(card_db, tmp_path / "CARD")
    before = db.read_bytes()
    for target in (db, db.with_name("ticos.db-wal")):
        done = cli("export", "--db", str(db), "--output", str(target))
        assert done.returncode == 1 and "is the database being read" in done.stderr
    assert db.read_bytes() == before and not db.with_name("ticos.db-wal").exists()


def test_export_streams_in_constant_memory(card_db, tmp_path):
    """Ten times the rows, the same peak memory: rows are written as they are read."""
    import sqlite3
    import tracemalloc

    db = copy_card(card_db, tmp_path / "CARD")
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT role, content, session_id FROM messages").fetchall()

    def grow(n: int) -> None:
        conn.executemany("INSERT INTO messages (id, role, content, datetime, session_id, status) "
                         "VALUES (?, ?, ?, datetime('now'), ?, 'completed')",
                         [(f"x{n}_{i}", *rows[i % len(rows)]) for i in range(n)])
        conn.commit()

    peaks = []
    for n in (2000, 18000):
        grow(n)
        with open(os.devnull, "w") as sink:
            tracemalloc.start()
            stdout, sys.stdout = sys.stdout, sink
            try:
                assert main(["export", "--db", str(db), "--events"]) == 0
            finally:
                sys.stdout = stdout
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    conn.close()
    assert peaks[1] < peaks[0] * 1.5 + 200_000, peaks


def test_help_lists_views_and_filters():
    done = cli("inspect", "--help")
    assert done.returncode == 0
    for word in ("transcript", "faults", "summary", "--since", "--until", "--session", "--role", "--grep",
                 "--limit", "--format", "--output", "--tf-root", "--db", "--fallback", "--verbose"):
        assert word in done.stdout
    assert json.dumps  # (json is used by the helpers)
