"""Storage seen through the running agent: old ticos-client cards, restarts, a bad card."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys

from helpers import agent_config, settle, wait_for
from traces import assistant_turn, transcription, user_item

from ticos_agent import Agent


def _ticos_client_v1_db(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE db_version (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, updated_at TEXT NOT NULL);
        INSERT INTO db_version (version, updated_at) VALUES (1, '2025-05-01 10:00:00');
        CREATE TABLE messages (id TEXT PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, item_id TEXT,
                               user_id TEXT DEFAULT 'nobody', datetime TEXT NOT NULL);
        CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, content TEXT NOT NULL,
                               user_id TEXT DEFAULT 'nobody', datetime TEXT NOT NULL);
    """)
    future = 4_102_444_800  # year 2100: ids the agent must never reuse
    con.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", [
        ("1746093600", "user", "old hello", "item_old1", "nobody", "2025-05-01 10:00:00"),
        (str(future), "assistant", "old reply", "item_old2", "kid", "2025-05-01 10:00:01"),
    ])
    con.execute("INSERT INTO memories (type, content, user_id, datetime) "
                "VALUES ('long_term', 'likes dogs', 'kid', '2025-05-01')")
    con.commit()
    con.close()
    return future


async def test_ticos_client_card_opened_in_place_and_restart_never_overwrites(tmp_path, connect):
    card = tmp_path / "card"
    db = card / ".config" / "ticos" / "ticos.db"
    future = _ticos_client_v1_db(db)
    cfg = agent_config(tmp_path, storage={"mode": "external", "tf_root": str(card)})
    for run, item in enumerate(("item_new1", "item_new2")):
        async with Agent(cfg) as agent:
            assert agent.health()["storage"]["mode"] == "external"
            peer = await connect(agent)
            await peer.send(user_item(item), transcription(item, f"run {run}"))
            await settle(agent)
            await peer.close()
    con = sqlite3.connect(db)
    old = con.execute("SELECT id, role, content, item_id, user_id, datetime FROM messages ORDER BY rowid").fetchall()
    memories = con.execute("SELECT type, content, user_id FROM memories").fetchall()
    con.close()
    assert old[:2] == [("1746093600", "user", "old hello", "item_old1", "nobody", "2025-05-01 10:00:00"),
                       (str(future), "assistant", "old reply", "item_old2", "kid", "2025-05-01 10:00:01")]
    assert [r[2] for r in old[2:]] == ["run 0", "run 1"]
    assert len({r[0] for r in old}) == 4
    assert all(int(r[0]) > future for r in old[2:])
    assert memories == [("long_term", "likes dogs", "kid")]


async def test_unusable_card_falls_back_and_reports_degraded(tmp_path, connect, http):
    not_a_dir = tmp_path / "card"
    not_a_dir.write_text("this is a file, the card cannot hold a .config directory")
    cfg = agent_config(tmp_path, storage={"mode": "external", "tf_root": str(not_a_dir)})
    async with Agent(cfg) as agent:
        async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
            body = await resp.json()
        assert body["status"] == "degraded"
        assert body["storage"]["mode"] == "internal" and body["storage"]["requested"] == "external"
        assert body["storage"]["reason"]
        assert any("storage" in p for p in body["problems"])
        peer = await connect(agent)
        await peer.send(user_item("i1"), transcription("i1", "kept safe"))
        await settle(agent)
        path = body["storage"]["path"]
    assert path.startswith(str(tmp_path / "internal"))
    assert sqlite3.connect(path).execute("SELECT content FROM messages").fetchall() == [("kept safe",)]


async def test_inspect_cli_reads_card_without_changing_it(tmp_path, connect):
    card = tmp_path / "card"
    cfg = agent_config(tmp_path, storage={"mode": "external", "tf_root": str(card)})
    async with Agent(cfg) as agent:
        peer = await connect(agent)
        await peer.send(user_item("i1"), transcription("i1", "look at me offline"),
                        user_item("i2"), transcription("i2", "clear\x1b[2J screen"))
        await settle(agent)
    folder = card / ".config" / "ticos"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    out = subprocess.run([sys.executable, "-m", "ticos_agent.cli", "inspect", "--tf-root", str(card)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "look at me offline" in out.stdout and "user" in out.stdout
    assert "\x1b" not in out.stdout and "clear\\x1b[2J screen" in out.stdout
    export = subprocess.run([sys.executable, "-m", "ticos_agent.cli", "export", "--tf-root", str(card)],
                            capture_output=True, text=True, timeout=30)
    assert '"kind": "message"' in export.stdout
    exported = [json.loads(line) for line in export.stdout.splitlines()]
    assert [r["content"] for r in exported if r["kind"] == "message"] == ["look at me offline", "clear\x1b[2J screen"]
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert after == before
    missing = subprocess.run([sys.executable, "-m", "ticos_agent.cli", "inspect", "--db", str(tmp_path / "nope.db")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "no such file" in missing.stderr


async def test_card_folder_that_is_not_a_mount_point_is_not_used(tmp_path, monkeypatch):
    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD")
    card = tmp_path / "media" / "card"  # configured, but no card is mounted there
    cfg = agent_config(tmp_path, storage={"mode": "external", "tf_root": str(card)})
    async with Agent(cfg) as agent:
        health = agent.health()
    assert health["status"] == "degraded"
    assert health["storage"]["mode"] == "internal" and "mount" in health["storage"]["reason"]
    assert not card.exists()  # nothing was written onto the system disk in its place


async def test_a_pulled_card_shows_in_health_and_its_messages_come_back_through_the_api(
        tmp_path, connect, http, monkeypatch):
    """A real loop-mounted card under the running agent: pulled (umount -l), put back."""
    import asyncio
    import time

    from storage_helpers import loop_card

    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD")
    with loop_card(tmp_path / "img") as card:
        cfg = agent_config(tmp_path, storage={"mode": "external", "tf_root": str(card.root)})
        async with Agent(cfg) as agent:
            base = f"http://127.0.0.1:{agent.port}"
            peer = await connect(agent)
            said = [f"turn {i}" for i in range(12)]
            for i, text in enumerate(said[:4]):
                await peer.send(user_item(f"u{i}"), transcription(f"u{i}", text))
            await settle(agent)
            card.pull()
            for i, text in enumerate(said[4:8], start=4):
                await peer.send(user_item(f"u{i}"), transcription(f"u{i}", text))
            await settle(agent)
            async with http.get(f"{base}/health") as resp:
                away = await resp.json()
            await asyncio.to_thread(card.put_back)
            deadline = time.monotonic() + 15  # the default probe: every 3 s
            while True:
                async with http.get(f"{base}/health") as resp:
                    back = await resp.json()
                if back["status"] == "ok" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            for i, text in enumerate(said[8:], start=8):
                await peer.send(user_item(f"u{i}"), transcription(f"u{i}", text))
            await settle(agent)
            async with http.get(f"{base}/v1/messages?limit=50") as resp:
                listed = await resp.json()
            await peer.close()
        on_card = sqlite3.connect(card.db).execute("SELECT content FROM messages ORDER BY rowid").fetchall()
    assert away["status"] == "degraded" and any("no longer mounted" in p for p in away["problems"])
    assert away["storage"]["fallback_rows"] >= 4 and away["storage"]["fallback"]["rows"]["messages"] == 4
    assert back["status"] == "ok", back
    assert back["storage"]["fallback_rows"] == 0 and back["storage"]["card"]["returns"] == 1
    listed = listed["messages"] if isinstance(listed, dict) else listed
    assert [m["content"] for m in listed][::-1] == said
    assert [r[0] for r in on_card] == said


def test_event_log_days_is_validated_and_reaches_the_store():
    import pytest

    from ticos_agent.config import ConfigErrors, from_dict

    with pytest.raises(ConfigErrors) as info:
        from_dict({"storage": {"event_log_days": -1}})
    assert "storage.event_log_days" in str(info.value)
    assert from_dict({"storage": {"event_log_days": 7}}).storage.event_log_days == 7


async def test_frames_after_the_store_closed_are_handled_and_not_answered_as_errors(tmp_path, connect, caplog):
    """A store closed while a voice agent's socket is open (the agent stopping, a store closed
    by its owner) is an expected state: every frame is handled as usual, nothing is answered
    as an ``internal_error``, and each consumer says once what it no longer stores."""
    async with Agent(agent_config(tmp_path)) as agent:
        heard: list[tuple] = []
        states: list[tuple] = []
        agent.subscribe("conversation", lambda *said: heard.append(said), inline=True)
        agent.subscribe("state", lambda *change: states.append(change), inline=True)
        peer = await connect(agent)
        await agent.store.close()
        caplog.set_level(logging.WARNING)
        for n in range(2):  # two turns: a warning per closing, not per frame
            await peer.send(user_item(f"U{n}"), transcription(f"U{n}", f"hello {n}"),
                            *assistant_turn(f"r{n}", f"A{n}", ["Hi", " there"]))
        await wait_for(lambda: ("A1", "assistant", " there") in heard and states and states[-1][0] == "idle")
        await peer.no_reply(0.3)
        assert ("U0", "user", "hello 0") in heard and ("U1", "user", "hello 1") in heard
        assert [s for s, _ in states].count("speaking") == 2, states
        assert agent.counters["errors"] == 0
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        closed = [r.getMessage() for r in caplog.records if "is closed" in r.getMessage()]
        assert len(closed) == 3 and all("from now on" in m for m in closed), closed
        assert any("event log" in m for m in closed) and any("conversation" in m for m in closed), closed
