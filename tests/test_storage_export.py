"""Streaming every row for an export: iter_messages/iter_memories/iter_calls/iter_events."""

from __future__ import annotations

import sqlite3

from storage_helpers import V1_MESSAGES, make_sdk_v1

from ticos_agent.storage import (
    iter_calls,
    iter_events,
    iter_memories,
    iter_messages,
    open_readonly,
    open_store,
    read_calls,
    read_events,
    read_memories,
    read_messages,
)


def traced(conn):
    statements = []
    conn.set_trace_callback(statements.append)
    return statements


def test_every_message_of_an_unmigrated_sdk_database_oldest_first(tmp_path):
    db = make_sdk_v1(tmp_path / "ticos.db")
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO messages VALUES (?, 'user', ?, NULL, 'nobody', '2024-01-01 00:00:00')",
                     [(str(1700000000 + i), f"m{i}") for i in range(1200)])
    conn.commit()
    conn.close()
    conn = open_readonly(db)
    statements = traced(conn)
    got = list(iter_messages(conn))
    assert len(got) == 1200 + len(V1_MESSAGES)  # not capped at 500
    assert [m["id"] for m in got[:4]] == [m[0] for m in V1_MESSAGES]
    assert [m["content"] for m in got[4:]] == [f"m{i}" for i in range(1200)]
    assert not any("OFFSET" in s for s in statements) and len(statements) >= 3  # keyset pages
    assert got[0] == read_messages(conn, limit=1, offset=1203)[0]  # the same fields
    assert list(iter_messages(conn, session_id="s")) == []  # no session column: nothing
    assert [m["content"] for m in iter_memories(conn)] == [m["content"] for m in reversed(read_memories(conn))]
    assert list(iter_calls(conn)) == [] and list(iter_events(conn)) == []  # no such tables
    conn.close()


async def test_every_row_of_a_store_database_with_small_pages_and_gaps(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    for i in range(1003):
        store.log_event(f"e{i}", session_id="a" if i % 3 else "b")
        store.add_message(role="user", content=f"m{i}", item_id=None, session_id="a" if i % 3 else "b")
    for i in range(612):
        store.record_call(call_id=f"c{i}", name="motion", arguments="{}")
        store.add_memory("short_term", f"mem{i}")
    await store.flush()
    await store._db.execute("DELETE FROM events WHERE id % 10 = 0")
    await store.close()
    conn = open_readonly(tmp_path / "ticos.db")
    events = list(iter_events(conn, page=7))
    assert [e["type"] for e in events] == [f"e{i}" for i in range(1003) if (i + 1) % 10]
    assert events[-1] == read_events(conn, limit=1)[0]
    assert [e["type"] for e in iter_events(conn, session_id="b", page=50)] == [
        f"e{i}" for i in range(1003) if i % 3 == 0 and (i + 1) % 10]
    assert [m["content"] for m in iter_messages(conn, session_id="a", page=1)] == [
        f"m{i}" for i in range(1003) if i % 3]
    calls = list(iter_calls(conn, page=100))
    assert [c["call_id"] for c in calls] == [f"c{i}" for i in range(612)] and calls[-1] == read_calls(conn, limit=1)[0]
    assert [m["content"] for m in iter_memories(conn, page=0)] == [f"mem{i}" for i in range(612)]  # page >= 1
    conn.close()
