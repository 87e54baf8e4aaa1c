"""TEMPORARY: the MemoryStore methods over the Store's real SQLite file, until wt-memstore's
Store has them (then this file goes and the tests use the Store's own)."""

from __future__ import annotations

import asyncio
import sqlite3
import time

from ticos_agent.memory.model import Hit, Memory

FINISHED = "(status IS NULL OR status IN ('completed', 'incomplete', 'cancelled'))"


def _conn(store) -> sqlite3.Connection:
    conn = sqlite3.connect(store.location.path, timeout=10)
    conn.execute("CREATE TABLE IF NOT EXISTS shim_marks (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER)")
    return conn


def _memory(row) -> Memory:
    return Memory(id=row[0], kind=row[1], content=row[2], user_id=row[3] or "nobody", datetime=row[4])


async def remember(self, kind, content, *, subject=None, key=None, value=None, confidence=None, importance=None,
                   title=None, source=None, user_id="nobody") -> Memory:
    def run():
        with _conn(self) as conn:
            now = time.strftime("%Y-%m-%d %H:%M:%S")
            cur = conn.execute("INSERT INTO memories (type, content, user_id, datetime) VALUES (?, ?, ?, ?)",
                               (kind, content, user_id, now))
            return Memory(id=cur.lastrowid, kind=kind, content=content, datetime=now, user_id=user_id)
    return await asyncio.to_thread(run)


async def recall(self, query, *, limit=5, messages=True) -> list[Hit]:
    return []


async def forget(self, *, query=None, ids=(), everything=False) -> int:
    return 0


async def latest_memory(self, kind="long_term"):
    def run():
        with _conn(self) as conn:
            row = conn.execute("SELECT id, type, content, user_id, datetime FROM memories WHERE type = ? "
                               "ORDER BY id DESC LIMIT 1", (kind,)).fetchone()
            return _memory(row) if row else None
    return await asyncio.to_thread(run)


async def facts(self, limit=50):
    def run():
        with _conn(self) as conn:
            rows = conn.execute("SELECT id, type, content, user_id, datetime FROM memories WHERE type = 'fact' "
                                "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            return [_memory(r) for r in rows]
    return await asyncio.to_thread(run)


def _messages(rows):
    return [{"id": r[0], "role": r[1], "content": r[2], "datetime": r[3]} for r in rows]


async def recent_messages(self, count):
    def run():
        with _conn(self) as conn:
            rows = conn.execute(f"SELECT id, role, content, datetime FROM messages WHERE role IN ('user', 'assistant') "
                                f"AND content != '' AND {FINISHED} ORDER BY CAST(id AS INTEGER) DESC LIMIT ?",
                                (count,)).fetchall()
            return _messages(rows[::-1])
    return await asyncio.to_thread(run)


async def unsummarised(self, limit):
    def run():
        with _conn(self) as conn:
            row = conn.execute("SELECT upto FROM shim_marks WHERE id = 1").fetchone()
            mark = row[0] if row else 0
            rows = conn.execute(f"SELECT id, role, content, datetime FROM messages WHERE role IN ('user', 'assistant') "
                                f"AND content != '' AND {FINISHED} AND CAST(id AS INTEGER) > ? "
                                f"ORDER BY CAST(id AS INTEGER) LIMIT ?", (mark, limit)).fetchall()
            return _messages(rows), (int(rows[-1][0]) if rows else None)
    return await asyncio.to_thread(run)


async def mark_summarised(self, upto):
    def run():
        with _conn(self) as conn:
            conn.execute("INSERT INTO shim_marks (id, upto) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET upto = "
                         "MAX(upto, excluded.upto)", (upto,))
    await asyncio.to_thread(run)


METHODS = {f.__name__: f for f in (remember, recall, forget, latest_memory, facts, recent_messages, unsummarised,
                                   mark_summarised)}


def install(monkeypatch) -> None:
    from ticos_agent.storage import Store

    if hasattr(Store, "unsummarised"):
        return
    for name, fn in METHODS.items():
        monkeypatch.setattr(Store, name, fn, raising=False)
