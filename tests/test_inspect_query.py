"""The inspector's filtered reads (:class:`ticos_agent.storage.finder.Finder`) on databases the
agent's writer made: time ranges as rowid ranges, sessions, grep with and without FTS5."""

from __future__ import annotations

import random
import shutil
import sqlite3

import pytest

from ticos_agent.storage import open_readonly, open_store
from ticos_agent.storage.finder import CALLS, EVENTS, MESSAGES, Finder, Window


async def _store(tmp_path, rows: list[tuple[str, str | None, str]], events: int = 0):
    """Messages ``(role, session, content)`` in order through the agent's Store, with the
    writer's own clock replaced by a steady one (a message a minute)."""
    import ticos_agent.storage.schema as schema

    clock = iter(range(10_000_000))
    base = 1_780_000_000

    def now_local() -> str:
        import time

        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(base + 60 * next(clock)))

    real = schema.now_local
    schema.now_local = now_local
    try:
        store = await open_store("internal", internal_dir=tmp_path, event_retention_days=None)
        for i, (role, session, content) in enumerate(rows):
            store.add_message(role=role, content=content, item_id=None, session_id=session)
            if role == "assistant":
                store.record_call(call_id=f"c{i}", name="motion", arguments="{}", session_id=session)
        for i in range(events):
            store.log_event(f"e{i}", session_id="s", ts=base + 30.0 * i)
        await store.flush()
        await store.close()
    finally:
        schema.now_local = real
    return tmp_path / "ticos.db"


@pytest.fixture
async def minutes(tmp_path):
    """1000 messages a minute apart; 20 deleted (gaps in the rowids)."""
    db = await _store(tmp_path, [("user" if i % 2 else "assistant", f"s{i // 100}", f"message {i}")
                                 for i in range(1000)], events=500)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM messages WHERE rowid % 50 = 7")
    conn.execute("DELETE FROM events WHERE id % 40 = 3")
    conn.commit()
    conn.close()
    return db


def brute(conn, sql: str, params=()) -> list:
    return [r[0] for r in conn.execute(sql, params).fetchall()]


async def test_time_ranges_are_rowid_ranges_and_exact(minutes):
    conn = open_readonly(minutes)
    f = Finder(conn)
    times = brute(conn, "SELECT datetime FROM messages ORDER BY rowid")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    rng = random.Random(3)
    for _ in range(40):
        a, b = sorted(rng.sample(times, 2))
        want = brute(conn, "SELECT content FROM messages WHERE datetime >= ? AND datetime < ? ORDER BY rowid",
                     (a, b))
        statements.clear()
        got = [r["content"] for r in f.scan(MESSAGES, Window(since=a, until=b))]
        assert got == want
        probes = [s for s in statements if "ORDER BY rowid LIMIT 1" in s]
        assert len(probes) <= 2 * 14  # two binary searches over about a thousand rows
    assert f.first_at(MESSAGES, "1999-01-01 00:00:00") == brute(conn, "SELECT MIN(rowid) FROM messages")[0]
    assert f.first_at(MESSAGES, "2999-01-01 00:00:00") is None
    assert f.newest(MESSAGES, Window(since="2999-01-01 00:00:00"), 5) == []
    ts = brute(conn, "SELECT ts FROM events ORDER BY id")
    got = [r["type"] for r in f.scan(EVENTS, Window(since_ts=ts[100], until_ts=ts[200] + 0.5))]
    assert got == brute(conn, "SELECT type FROM events WHERE ts >= ? AND ts < ? ORDER BY id", (ts[100], ts[200] + 0.5))
    conn.close()


async def test_rows_without_a_time_are_stepped_over(minutes, tmp_path):
    """A call whose outcome was stored before the call itself has no ``created`` yet."""
    db = tmp_path / "copy.db"
    shutil.copy(minutes, db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE function_calls SET created = NULL WHERE rowid BETWEEN 150 AND 170 OR rowid > 495")
    conn.commit()
    conn.close()
    ro = open_readonly(db)
    f = Finder(ro)
    times = brute(ro, "SELECT created FROM function_calls WHERE created IS NOT NULL ORDER BY rowid")
    for value in times[::7] + [times[-1]]:
        assert f.first_at(CALLS, value) == brute(
            ro, "SELECT MIN(rowid) FROM function_calls WHERE created >= ?", (value,))[0]
        window = Window(since=value)
        assert [r["call_id"] for r in f.scan(CALLS, window)] == brute(
            ro, "SELECT call_id FROM function_calls WHERE created >= ? ORDER BY rowid", (value,))
    ro.close()


async def test_sessions_newest_first_with_interleaved_and_missing_ids(tmp_path):
    order = ["A", "B", "A", None, "B", "C", "A", None, "D", "C"]
    db = await _store(tmp_path, [("user", s, f"m{i}") for i, s in enumerate(order)])
    conn = open_readonly(db)
    f = Finder(conn)
    found = f.sessions(Window(), 10)
    assert [s["session_id"] for s in found] == ["C", "D", None, "A", "B"]
    assert [s["messages"] for s in found] == [2, 1, 2, 3, 2]
    assert [s["session_id"] for s in f.sessions(Window(), 2)] == ["C", "D"]
    assert [s["session_id"] for s in f.sessions(Window(grep="m2"), 5)] == ["A"]
    assert [r["content"] for r in f.scan(MESSAGES, Window(by_session=True, session=None))] == ["m3", "m7"]
    conn.close()


async def test_session_ids_by_prefix(tmp_path):
    db = await _store(tmp_path, [("user", s, "x") for s in ("sess_abc", "sess_abd", "sess_b", "other")])
    f = Finder(open_readonly(db))
    assert f.match_sessions("sess_ab") == ["sess_abc", "sess_abd"]
    assert f.match_sessions("sess_b") == ["sess_b"]
    assert f.match_sessions("sess_abc") == ["sess_abc"]  # an exact id wins over longer ones
    assert f.match_sessions("zzz") == []
    f.conn.close()


async def test_grep_is_literal_and_ignores_ascii_case(tmp_path):
    db = await _store(tmp_path, [("user", "s", t) for t in ("50% off", "5000 off", "snake_case", "snakeXcase",
                                                             "Wave AT me", "back\\slash")])
    f = Finder(open_readonly(db))

    def grep(text: str) -> list[str]:
        return [r["content"] for r in f.scan(MESSAGES, Window(grep=text))]

    assert grep("50%") == ["50% off"]
    assert grep("snake_") == ["snake_case"]
    assert grep("wave at") == ["Wave AT me"]
    assert grep("k\\s") == ["back\\slash"]
    f.conn.close()


async def test_grep_uses_an_fts5_index_when_the_card_has_one(minutes, tmp_path):
    db = tmp_path / "fts.db"
    shutil.copy(minutes, db)
    conn = sqlite3.connect(db)
    if not conn.execute("SELECT sqlite_compileoption_used('ENABLE_FTS5')").fetchone()[0]:
        pytest.skip("this SQLite has no FTS5")
    # a card indexed by someone else instead of the agent (whose own index is for recall, not grep)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%messages_fts%'"
                                ).fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')
    conn.execute("DROP TABLE IF EXISTS messages_fts")
    conn.execute("DELETE FROM ticos_state WHERE name = 'fts_messages'")
    conn.execute("CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='rowid')")
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
    conn.commit()
    conn.close()
    plain = Finder(open_readonly(minutes))
    indexed = Finder(open_readonly(db))
    assert plain.fts_mark() is not None  # the agent's own: grep scans
    assert indexed.fts_index() == '"messages_fts"' and indexed.fts_mark() is None
    statements: list[str] = []
    indexed.conn.set_trace_callback(statements.append)
    for text in ("message 99", "MESSAGE 1", "message 5"):
        want = [r["content"] for r in plain.scan(MESSAGES, Window(grep=text))]
        got = [r["content"] for r in indexed.scan(MESSAGES, Window(grep=text))]
        assert got == want and got  # whole words and word prefixes: the same rows
    assert any("MATCH" in s for s in statements)
    assert indexed.newest(MESSAGES, Window(grep="essage"), 5) == []  # inside a word: the index does not see it
    assert plain.newest(MESSAGES, Window(grep="essage"), 5) != []
    for f in (plain, indexed):
        f.conn.close()


async def test_keyset_pages_never_offset(minutes):
    conn = open_readonly(minutes)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    f = Finder(conn)
    got = list(f.scan(MESSAGES, Window(role="user"), page=100))
    assert len(got) == brute(conn, "SELECT COUNT(*) FROM messages WHERE role = 'user'")[0]
    pages = [s for s in statements if s.startswith("SELECT rowid, id")]
    assert len(pages) >= 5 and not any("OFFSET" in s for s in statements)
    assert list(f.scan(CALLS, Window(role="user"))) == []  # calls are the assistant's
    conn.close()


async def test_outages_are_runs_of_failed_calls(tmp_path, capsys):
    """A serial device down twice: calls failing a minute apart are one outage, two hours
    later another; a call failing for another reason is counted on its own."""
    import time

    import ticos_agent.storage.schema as schema
    from ticos_agent.cli import main

    base = 1_780_000_000
    minutes = iter([0, 1, 2, 120, 125, 126, 200])
    reasons = ["actuator 'head' (feetech-sts) is down: [Errno 5] Input/output error: '/dev/ttyUSB0'"] * 6 + [
        "unknown motion tag 'moonwalk'; known: nod"]
    real = schema.now_local
    store = await open_store("internal", internal_dir=tmp_path)
    try:
        for i, reason in enumerate(reasons):
            at = base + 60 * next(minutes)
            schema.now_local = lambda at=at: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
            store.add_message(role="assistant", content=f"answer {i}", item_id=f"a{i}", session_id="s",
                              response_id=f"r{i}")
            store.record_call(call_id=f"c{i}", name="motion", arguments='{"motion_tag": "nod"}', session_id="s",
                              response_id=f"r{i}")
            store.set_call_outcome(f"c{i}", "failed", {"status": "failed", "reason": reason})
        await store.flush()
    finally:
        schema.now_local = real
        await store.close()
    assert main(["inspect", "faults", "--db", str(tmp_path / "ticos.db")]) == 0
    lines = capsys.readouterr().out.splitlines()
    outage = next(line for line in lines if line.startswith("actuator outage"))
    assert outage.split()[2] == "6"
    stamp = time.strftime("%H:%M:%S", time.localtime(base + 60 * 126))
    assert "6 call(s) failed in 2 outages (failures over 15 min apart count apart); the latest: 3 call(s) " \
           "from " in outage
    assert f" to {stamp} (6m00s)" in outage and "the last said: actuator 'head' (feetech-sts) is down" in outage
    assert next(line for line in lines if line.startswith("call failed")).split()[2] == "1"


async def test_the_robots_speaking_time_from_its_states(tmp_path, capsys):
    """The summary measures the robot's speaking from the event log's robot.state lines, and
    estimates it from its words where there are none."""
    import time

    import ticos_agent.storage.schema as schema
    from ticos_agent.cli import main

    base = time.time() - 3600
    real = schema.now_local
    schema.now_local = lambda: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(base))
    store = await open_store("internal", internal_dir=tmp_path)
    try:
        store.add_message(role="user", content="tell me everything", item_id="u", session_id="s")
        store.add_message(role="assistant", content="x" * 150, item_id="a", session_id="s", response_id="r")
        for offset, state in ((0, "speaking"), (90, "idle"), (200, "speaking"), (230, "listening")):
            store.log_event(f"robot.state.{state}", ts=base + offset)
        await store.flush()
    finally:
        schema.now_local = real
        await store.close()
    day = time.strftime("%Y-%m-%d", time.localtime(base))
    assert main(["inspect", "summary", "--db", str(tmp_path / "ticos.db"), "--since", day]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert " · robot spoke 2m00s · " in lines[0]  # 90 s + 30 s in the speaking state
    assert lines[-1].split()[4] == "≈10s"  # the session: 150 characters at 15 a second
