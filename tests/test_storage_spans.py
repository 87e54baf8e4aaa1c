"""Session spans (schema 6): a session's rows found by rowid range, kept by triggers, and a
hot path that writes them once per session."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from ticos_agent import Agent
from ticos_agent.storage import open_store
from ticos_agent.storage.finder import MESSAGES, Finder, Window
from ticos_agent.storage.queries import count_messages, iter_messages, read_messages
from ticos_agent.storage.schema import MIGRATIONS, migrate
from ticos_agent.storage.spans import SPANS, close_sql
from ticos_agent.storage.writes import SQL_ADD_MESSAGE, SQL_CALL_OUTCOME, SQL_RECORD_CALL


def _schema_5(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(1, 6):
        MIGRATIONS[version](conn)
        conn.execute("INSERT INTO db_version (version, updated_at) VALUES (?, '2026-11-01 10:00:00')", (version,))
    return conn


def _message(conn, mid: str, session: str | None) -> None:
    conn.execute(SQL_ADD_MESSAGE, (mid, "user", f"words {mid}", None, "nobody", "2026-11-26 10:00:00", session,
                                   None, None))


def _span(conn, session: str) -> tuple:
    return conn.execute(f"SELECT first_message, last_message, first_call, last_call FROM {SPANS} "
                        "WHERE session_id = ?", (session,)).fetchone()


async def span_when(path, session: str, closed: bool) -> tuple:
    """``session``'s span once it is closed (``closed``) or open, polled for up to 5 s."""
    for _ in range(100):
        with sqlite3.connect(path) as conn:
            span = _span(conn, session)
        if span is not None and (span[1] is not None) == closed:
            break
        await asyncio.sleep(0.05)
    return span


def _by_column(conn, session: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM messages WHERE session_id = ? ORDER BY rowid DESC",
                                       (session,))]


def test_migration_fills_spans_from_interleaved_sessions_and_drops_the_indexes(tmp_path):
    conn = _schema_5(tmp_path / "ticos.db")
    order = ["A", "A", "B", "A", None, "B", "C", "A", "B"]
    for i, session in enumerate(order, 1):
        _message(conn, str(i), session)
    conn.execute("INSERT INTO function_calls (call_id, name, arguments, session_id, status, created) "
                 "VALUES ('call_1', 'wave', '{}', 'B', 'queued', '2026-11-26 10:00:01')")  # schema 5's table
    before = {s: _by_column(conn, s) for s in "ABC"}
    assert migrate(conn) == 5
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "idx_messages_session" not in indexes and "idx_calls_session" not in indexes
    assert _span(conn, "A") == (1, 8, None, None)
    assert _span(conn, "B") == (3, 9, 1, 1)
    assert _span(conn, "C") == (7, 7, None, None)
    for session, ids in before.items():
        assert [m["id"] for m in read_messages(conn, session_id=session)] == ids
        assert [m["id"] for m in iter_messages(conn, session_id=session)] == ids[::-1]
        assert count_messages(conn, session_id=session) == len(ids)
    assert read_messages(conn, session_id="nobody's") == [] and count_messages(conn, session_id="Z") == 0


def test_a_session_read_goes_through_its_rowid_range(tmp_path):
    conn = _schema_5(tmp_path / "ticos.db")
    migrate(conn)
    for i in range(200):
        _message(conn, str(i), "old" if i < 100 else "new")
    sql = conn.execute("EXPLAIN QUERY PLAN SELECT id FROM messages WHERE " + Finder(conn).where(
        MESSAGES, Window(by_session=True, session="old"))[0], ("old",) * 3).fetchall()
    assert any("rowid>" in row[3] and "rowid<" in row[3] for row in sql), sql


def test_an_open_span_costs_the_hot_path_nothing_and_a_closed_one_grows(tmp_path):
    conn = _schema_5(tmp_path / "ticos.db")
    migrate(conn)
    _message(conn, "1", "S")
    assert _span(conn, "S") == (1, None, None, None)  # open: reaches the end of the table
    changes = conn.total_changes
    _message(conn, "2", "T")
    _message(conn, "3", "S")
    _message(conn, "4", None)
    assert conn.total_changes - changes == 4  # three messages and T's span: nothing for S's
    conn.execute(close_sql(1), ("T",))  # S closes, T is kept open
    assert _span(conn, "S") == (1, 3, None, None) and _span(conn, "T") == (2, None, None, None)
    changes = conn.total_changes
    _message(conn, "5", "S")  # a late message of a closed session moves its end
    assert conn.total_changes - changes == 2 and _span(conn, "S") == (1, 5, None, None)
    assert [m["id"] for m in read_messages(conn, session_id="S")] == ["5", "3", "1"]
    assert [m["id"] for m in read_messages(conn, session_id="T")] == ["2"]
    # a message moved to another session, below that session's first row, moves its first down
    conn.execute("UPDATE messages SET session_id = 'T' WHERE id = '1'")
    assert _span(conn, "T")[0] == 1
    assert [m["id"] for m in read_messages(conn, session_id="T")] == ["2", "1"]
    assert [m["id"] for m in read_messages(conn, session_id="S")] == ["5", "3"]


def test_a_calls_outcome_stored_before_its_record_is_one_row_in_its_sessions_span(tmp_path):
    """Since schema 7 the session is part of a call's key: the outcome carries it (the upsert no
    longer sets a session on a row without one)."""
    conn = _schema_5(tmp_path / "ticos.db")
    migrate(conn)
    conn.execute(SQL_CALL_OUTCOME, ("call_9", "done", None, "2026-11-26 10:00:02", "S"))  # outcome first
    conn.execute(SQL_RECORD_CALL, ("call_9", "wave", "{}", "S", None, None, "queued", "2026-11-26 10:00:01"))
    assert conn.execute("SELECT call_id, session_id, name, status FROM function_calls").fetchall() == [
        ("call_9", "S", "wave", "done")]
    assert _span(conn, "S") == (None, None, 1, None)
    assert read_messages(conn, session_id="S") == []  # a span with calls only: no messages, no scan


def test_rows_written_without_the_triggers_are_still_found(tmp_path):
    conn = _schema_5(tmp_path / "ticos.db")
    migrate(conn)
    conn.execute("DROP TRIGGER session_spans_messages_insert")
    _message(conn, "1", "ghost")
    assert [m["id"] for m in read_messages(conn, session_id="ghost")] == ["1"]  # no span: the whole table


async def test_the_store_reads_sessions_while_open_and_after_closing(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    try:
        store._spans.idle = 0.2
        ids = {"A": [], "B": []}
        for i in range(6):
            session = "AB"[i % 2]
            ids[session].append(store.add_message(role="user", content=f"m{i}", item_id=None, session_id=session))
        await store.flush()
        for session, want in ids.items():
            assert [m["id"] for m in await store.messages(session_id=session)] == want[::-1]
            assert await store.count_messages(session_id=session) == len(want)
        path = tmp_path / "ticos.db"
        with sqlite3.connect(path) as conn:
            assert _span(conn, "A")[1] is None  # open while the session talks
        assert (await span_when(path, "A", closed=True))[:2] == (1, 5)  # closed once quiet
        assert (await span_when(path, "B", closed=True))[:2] == (2, 6)
        ids["A"].append(store.add_message(role="user", content="late", item_id=None, session_id="A"))
        await store.flush()
        assert [m["id"] for m in await store.messages(session_id="A")] == ids["A"][::-1]
    finally:
        await store.close()


async def test_spans_left_open_by_a_power_cut_close_at_the_next_open(tmp_path):
    path = tmp_path / "ticos.db"
    store = await open_store("internal", internal_dir=tmp_path)
    store.add_message(role="user", content="hello", item_id=None, session_id="cut")
    await store.close()  # the store closes no span itself: as after a SIGKILL
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE session_spans SET last_message = NULL")
    store = await open_store("internal", internal_dir=tmp_path)
    try:
        assert (await span_when(path, "cut", closed=True))[:2] == (1, 1)
    finally:
        await store.close()


def test_statements_with_their_own_conflict_rule_keep_the_span(tmp_path):
    """A trigger's statements take the conflict rule of the statement that fired it."""
    conn = _schema_5(tmp_path / "ticos.db")
    migrate(conn)
    record = ("call_1", "wave", "{}", "S", None, None, "queued", "2026-11-26 10:00:01")
    conn.execute(SQL_RECORD_CALL, record)
    conn.execute(SQL_RECORD_CALL, ("call_2", *record[1:]))
    conn.execute(SQL_RECORD_CALL, record)  # recorded again: the upsert's update must not fail
    conn.execute("INSERT INTO function_calls (call_id, status) VALUES ('call_3', 'done')")
    conn.execute(SQL_RECORD_CALL, ("call_3", *record[1:]))  # its outcome came first
    assert conn.execute("SELECT COUNT(*) FROM function_calls WHERE session_id = 'S'").fetchone() == (3,)
    _message(conn, "1", "S")
    conn.execute("INSERT OR REPLACE INTO messages (id, role, content, datetime, session_id) "
                 "VALUES ('2', 'user', 'b', '2026-11-26 10:00:02', 'S')")
    conn.execute("INSERT OR ABORT INTO messages (id, role, content, datetime, session_id) "
                 "VALUES ('3', 'user', 'c', '2026-11-26 10:00:03', 'S')")
    assert _span(conn, "S") == (1, None, 1, None)
    assert [m["id"] for m in read_messages(conn, session_id="S")] == ["3", "2", "1"]


def test_rowids_at_the_top_of_the_range_are_read(tmp_path):
    conn = _schema_5(tmp_path / "ticos.db")
    migrate(conn)
    _message(conn, "1", "S")
    conn.execute("INSERT INTO messages (rowid, id, role, content, datetime, session_id) "
                 "VALUES (9223372036854775806, '2', 'user', 'b', '2026-11-26 10:00:02', 'S')")
    _message(conn, "3", "S")
    assert [m["id"] for m in read_messages(conn, session_id="S")] == ["3", "2", "1"]


async def test_a_session_that_ended_is_closed_at_once_and_a_quiet_one_stays_open(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    path = tmp_path / "ticos.db"
    try:
        for session in ("talking", "ended", "quiet"):
            store.add_message(role="user", content="hi", item_id=None, session_id=session)
        await store.flush()
        store.session_ended("ended")
        store.add_message(role="assistant", content="bye", item_id=None, session_id="ended")  # its last row
        assert (await span_when(path, "ended", closed=True))[:2] == (2, 4)  # closed after its last row committed
        with sqlite3.connect(path) as conn:
            assert _span(conn, "talking")[1] is None and _span(conn, "quiet")[1] is None  # minutes of grace
        # the voice agent is back with the same session: its span opens again (one write), so
        # that its further commits write nothing for it
        store.add_message(role="user", content="back", item_id=None, session_id="ended")
        await store.flush()
        assert (await span_when(path, "ended", closed=False))[:2] == (2, None)
        assert [m["content"] for m in await store.messages(session_id="ended")] == ["back", "bye", "hi"]
    finally:
        await store.close()


def _closer_of_a_talking_session(path, failing: bool = False):
    """A database with one message of session ``talking`` and a span closer that saw it;
    ``failing``: the spans table is renamed away, so a step's statements fail."""
    from ticos_agent.storage.spans import SpanCloser

    conn = _schema_5(path)
    MIGRATIONS[6](conn)
    _message(conn, "m1", "talking")
    if failing:
        conn.execute(f"ALTER TABLE {SPANS} RENAME TO spans_away")
    conn.close()
    closer = SpanCloser()
    closer.note([(SQL_ADD_MESSAGE, ("m1", "user", "hi", None, "nobody", "now", "talking", None, None))])
    return closer


async def test_a_session_ending_while_a_span_step_runs_gets_a_step_of_its_own(tmp_path):
    import aiosqlite

    closer = _closer_of_a_talking_session(tmp_path / "t.db")
    async with aiosqlite.connect(tmp_path / "t.db") as db:
        step = asyncio.create_task(closer.step(db))
        await asyncio.sleep(0)  # the step waits for its statements in aiosqlite's thread
        closer.ended("talking")  # the voice agent's socket closed meanwhile: this step kept it open
        await step
        await db.commit()
        assert closer.wait() == 0.0
        await closer.step(db)
        await db.commit()
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert _span(conn, "talking")[:2] == (1, 1)


async def test_a_session_ending_while_a_span_step_fails_is_not_put_off_with_its_retry(tmp_path):
    import aiosqlite

    closer = _closer_of_a_talking_session(tmp_path / "t.db", failing=True)
    async with aiosqlite.connect(tmp_path / "t.db") as db:
        step = asyncio.create_task(closer.step(db))
        await asyncio.sleep(0)  # the step waits for its statements in aiosqlite's thread
        closer.ended("talking")  # the voice agent's socket closed meanwhile
        await step  # failed: its own retry is minutes away, but not this session's step
        assert closer.wait() == 0.0
        await db.execute(f"ALTER TABLE spans_away RENAME TO {SPANS}")
        await closer.step(db)
        await db.commit()
        assert closer.wait() is None
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert _span(conn, "talking")[:2] == (1, 1)


async def test_a_failed_span_step_is_tried_again_after_idle(tmp_path):
    import aiosqlite

    from ticos_agent.storage.spans import SpanCloser

    conn = _schema_5(tmp_path / "t.db")
    MIGRATIONS[6](conn)
    conn.execute(f"DROP TABLE {SPANS}")
    conn.close()
    closer = SpanCloser(idle=60.0)
    async with aiosqlite.connect(tmp_path / "t.db") as db:
        closer.ended("gone")
        await closer.step(db)
        wait = closer.wait()
        assert wait is not None and wait > 30.0


async def test_a_voice_agent_closing_its_socket_closes_its_span_and_coming_back_opens_it(tmp_path, connect):
    from helpers import agent_config, wait_for
    from traces import ev, response_done, session_created, transcription, user_item

    agent = Agent(agent_config(tmp_path))
    await agent.start()
    try:
        path = agent.store.location.path

        def last() -> tuple:
            with sqlite3.connect(path) as conn:
                return _span(conn, "sess_1") or (None, "none yet")

        first = await connect(agent)
        await first.send(session_created("sess_1"), user_item("U1"), transcription("U1", "hi robot"),
                         ev("response.audio_transcript.done", response_id="r1", item_id="A1", transcript="Hello!"),
                         response_done("r1"))
        await wait_for(lambda: last()[0] is not None and last()[1] is None)  # stored; open while it talks
        await first.close()
        await wait_for(lambda: last()[1] is not None)  # closed once the socket closed
        second = await connect(agent)
        await second.send(session_created("sess_1"), user_item("U2"), transcription("U2", "again"))
        await wait_for(lambda: last()[1] is None)  # the same session talks again: open
        assert [m["content"] for m in await agent.store.messages(session_id="sess_1")] == [
            "again", "Hello!", "hi robot"]
    finally:
        await agent.stop()


async def test_the_card_coming_back_closes_the_spans_of_sessions_that_ended_meanwhile(tmp_path, monkeypatch):
    from storage_helpers import loop_card

    from ticos_agent.storage.location import ALLOW_UNMOUNTED_ENV

    monkeypatch.delenv(ALLOW_UNMOUNTED_ENV, raising=False)
    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=tmp_path / "in", probe_interval=0.1)
        try:
            for session in ("talking", "ended"):
                store.add_message(role="user", content="hi", item_id=None, session_id=session)
            await store.flush()
            card.pull()
            store.add_message(role="user", content="still here", item_id=None, session_id="talking")
            await store.flush()
            assert store.health()["mode"] == "internal"
            store.session_ended("ended")  # its voice agent left while the card was out
            await asyncio.to_thread(card.put_back)
            for _ in range(1000):
                if store.health()["mode"] == "external" and store.health()["fallback_rows"] == 0:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("not back on the card")
            assert (await span_when(card.db, "ended", closed=True))[:2] == (2, 2)  # its span on the card
            assert (await span_when(card.db, "talking", closed=False))[:2] == (1, None)
            assert [m["content"] for m in await store.messages(session_id="talking")] == ["still here", "hi"]
        finally:
            await store.close()


async def test_forgetting_every_message_leaves_spans_only_to_sessions_with_calls(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    path = tmp_path / "ticos.db"
    try:
        store.add_message(role="user", content="hi", item_id=None, session_id="talk")
        store.add_message(role="user", content="move", item_id=None, session_id="moved")
        store.record_call(call_id="c1", name="motion", arguments="{}", session_id="moved")
        await store.flush()
        assert await store.forget(everything=True, messages=True) == 2
        with sqlite3.connect(path) as conn:
            assert conn.execute(f"SELECT * FROM {SPANS}").fetchall() == [("moved", None, None, 1, None)]
        assert await store.messages(session_id="talk") == []
        store.add_message(role="user", content="again", item_id=None, session_id="moved")
        await store.flush()
        assert [m["content"] for m in await store.messages(session_id="moved")] == ["again"]
    finally:
        await store.close()



async def test_more_sessions_talking_at_once_than_sqlite_takes_parameters_keep_their_spans_right(tmp_path, caplog):
    """A step names every session talking (rows within ``idle``) in one statement; past
    SQLite's 32,766 parameters it failed, every time, and no span closed or opened again. Only
    the newest ``MAX_TALKING`` are kept as talking: an older one's span closes (and opens again
    when it adds a row, as any closed span)."""
    import aiosqlite

    from ticos_agent.storage.spans import SpanCloser

    caplog.set_level(logging.WARNING, logger="ticos_agent.storage")
    conn = _schema_5(tmp_path / "t.db")
    MIGRATIONS[6](conn)
    _message(conn, "m1", "s0")
    _message(conn, "m2", "s32999")
    conn.close()
    closer = SpanCloser()
    closer.note([(SQL_ADD_MESSAGE, (f"m{n}", "user", "hi", None, "nobody", "now", f"s{n}", None, None))
                 for n in range(33_000)])  # the oldest first
    async with aiosqlite.connect(tmp_path / "t.db") as db:
        await closer.step(db)
        await db.commit()
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert _span(conn, "s0")[:2] == (1, 1) and _span(conn, "s32999")[:2] == (2, None)
    assert not [r for r in caplog.records if "session spans failed" in r.getMessage()]
