"""``ticos-agent memory export|import|forget`` through the real command line (subprocesses),
on real databases: round trip, idempotence, refusals, private files, a running store."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from storage_helpers import make_sdk_v1, snapshot

from ticos_agent.storage import open_store
from ticos_agent.storage.schema import SCHEMA_VERSION


def cli(*args: str, home: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0o022); from ticos_agent.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *args], capture_output=True, text=True, timeout=60,
                          env=env, input=stdin)


def rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def robot(directory: Path) -> Path:
    store = await open_store("internal", internal_dir=directory, commit_delay=0.05)
    await store.remember("fact", "The user's name is Lin.", subject="user", key="name", value="Lin",
                         confidence=0.9, source="1700000000")
    await store.remember("episode", "Lin's birthday party.", title="Party", importance=0.8)
    await store.remember("long_term", "Lin likes dinosaurs; her name is Lin.", user_id="lin")
    store.add_message(role="user", content="Hello, I am Lin.", item_id="i1", session_id="s1")
    store.add_message(role="assistant", content="Hello Lin!", item_id="i2", session_id="s1")
    await store.close()
    return directory / "ticos.db"


async def test_export_import_round_trip_is_idempotent_and_private(tmp_path):
    db = await robot(tmp_path / "a")
    out = tmp_path / "robot.json"
    done = cli("memory", "export", "--db", str(db), "--conversations", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600  # under umask 022
    doc = json.loads(out.read_text())
    assert (doc["format"], doc["version"], doc["schema"]) == ("ticos-agent-memory", 1, SCHEMA_VERSION)
    assert [m["kind"] for m in doc["memories"]] == ["fact", "episode", "long_term"]
    fact = doc["memories"][0]
    assert {k: fact[k] for k in ("content", "subject", "key", "value", "confidence", "source", "user_id")} == {
        "content": "The user's name is Lin.", "subject": "user", "key": "name", "value": "Lin", "confidence": 0.9,
        "source": "1700000000", "user_id": "nobody"}
    assert doc["memories"][1]["title"] == "Party" and doc["memories"][2]["user_id"] == "lin"
    assert [m["content"] for m in doc["messages"]] == ["Hello, I am Lin.", "Hello Lin!"]
    # to stdout, without conversations
    plain = cli("memory", "export", "--db", str(db))
    assert plain.returncode == 0 and "messages" not in json.loads(plain.stdout)

    new = tmp_path / "b" / "ticos.db"  # another robot: nothing there yet
    first = cli("memory", "import", str(out), "--db", str(new))
    assert first.returncode == 0, first.stderr
    assert "imported 3 of 3 memories and 2 of 2 messages" in first.stdout
    assert new.stat().st_mode & 0o777 == 0o600
    again = cli("memory", "import", str(out), "--db", str(new))
    assert again.returncode == 0 and "imported 0 of 3 memories and 0 of 2 messages" in again.stdout
    cols = "type, content, user_id, datetime, subject, key, value, confidence, importance, title, source_id"
    assert rows(new, f"SELECT {cols} FROM memories ORDER BY id") == rows(db, f"SELECT {cols} FROM memories ORDER BY id")
    assert rows(new, "SELECT id, role, content, session_id FROM messages ORDER BY rowid") == rows(
        db, "SELECT id, role, content, session_id FROM messages ORDER BY rowid")
    # the imported robot remembers and finds it
    store = await open_store("internal", internal_dir=new.parent, commit_delay=0.05)
    try:
        hits = await store.recall("user name")
        assert hits[0].source == "memory" and hits[0].text == "The user's name is Lin."
        assert (await store.facts())[0].value == "Lin"
    finally:
        await store.close()
    # the same ids but other messages (another robot's, same second) are kept as well
    other = json.loads(out.read_text())
    other["memories"] = []
    other["messages"][0]["content"] = "A different message with the same id."
    (tmp_path / "other.json").write_text(json.dumps(other))
    both = cli("memory", "import", str(tmp_path / "other.json"), "--db", str(new))
    assert "imported 0 of 0 memories and 1 of 2 messages" in both.stdout
    assert rows(new, "SELECT id FROM messages WHERE content LIKE 'A different%'") == [
        (doc["messages"][0]["id"] + "-imported",)]
    assert "0 of 2 messages" in cli("memory", "import", str(tmp_path / "other.json"), "--db", str(new)).stdout


@pytest.mark.parametrize("content, message", [
    ('{"format": "ticos-agent-memory", "version": 2, "memories": []}', "format version 2, newer than"),
    ('{"format": "something-else", "version": 1}', "not a ticos-agent memory export"),
    ("not json at all", "is not JSON"),
    ('{"format": "ticos-agent-memory", "version": 1, "memories": [{"kind": "fact", "content": ""}]}',
     "memories[0]: content must be non-empty text"),
    ('{"format": "ticos-agent-memory", "version": 1, "memories": [{"kind": "gossip", "content": "x", '
     '"datetime": "2024-01-01 00:00:00"}]}', "memories[0]: kind must be one of"),
    ('{"format": "ticos-agent-memory", "version": "1"}', "no valid format version"),
    ('{"format": "ticos-agent-memory", "version": 1, "memories": [{"kind": "fact", "content": "Lin is ok.", '
     '"datetime": "2024-01-01 00:00:00"}, {"kind": "fact", "content": "bad \\ud800", '
     '"datetime": "2024-01-01 00:00:01"}]}', "holds a lone surrogate"),
    # the limits the HTTP API and the tools enforce (a 300-character subject is refused there too)
    ('{"format": "ticos-agent-memory", "version": 1, "memories": [{"kind": "fact", "content": "Lin is ok.", '
     '"subject": "' + "s" * 300 + '", "datetime": "2024-01-01 00:00:00"}]}',
     "subject is 300 characters long; at most 200"),
])
async def test_import_refuses_a_bad_or_newer_file_with_one_line_and_changes_nothing(tmp_path, content, message):
    db = await robot(tmp_path)
    before = rows(db, "SELECT COUNT(*) FROM memories")
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    done = cli("memory", "import", str(bad), "--db", str(db))
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("ticos-agent memory import: ")
    assert rows(db, "SELECT COUNT(*) FROM memories") == before


async def test_forget_all_asks_for_yes_then_forgets_everything(tmp_path):
    db = await robot(tmp_path)
    refused = cli("memory", "forget", "--all", "--db", str(db))
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    assert rows(db, "SELECT COUNT(*) FROM memories") == [(3,)]
    assert cli("memory", "forget", "--db", str(db), "--yes").returncode == 2  # --all is required
    done = cli("memory", "forget", "--all", "--yes", "--db", str(db))
    assert done.returncode == 0 and "forgot 3 memories" in done.stdout
    assert rows(db, "SELECT COUNT(*) FROM memories") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM messages") == [(2,)]
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("ticos.db"))
    assert b"dinosaurs" not in data
    done = cli("memory", "forget", "--all", "--conversations", "--yes", "--db", str(db))
    assert done.returncode == 0 and rows(db, "SELECT COUNT(*) FROM messages") == [(0,)]
    missing = cli("memory", "forget", "--all", "--yes", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 1 and "no database" in missing.stderr


async def test_import_and_forget_while_the_agent_writes(tmp_path):
    db = await robot(tmp_path / "a")
    out = tmp_path / "robot.json"
    assert cli("memory", "export", "--db", str(db), "--output", str(out)).returncode == 0
    live_dir = tmp_path / "live"
    store = await open_store("internal", internal_dir=live_dir, commit_delay=0.05)
    try:
        stop = asyncio.Event()

        async def keep_talking() -> int:
            n = 0
            while not stop.is_set():
                store.add_message(role="user", content=f"still talking {n}", item_id=f"t{n}")
                n += 1
                await asyncio.sleep(0.01)
            await store.flush()
            return n

        talking = asyncio.create_task(keep_talking())
        done = await asyncio.to_thread(cli, "memory", "import", str(out), "--db", str(live_dir / "ticos.db"))
        assert done.returncode == 0, done.stderr
        assert (await store.latest_memory()).content == "Lin likes dinosaurs; her name is Lin."
        assert [h.text for h in await store.recall("birthday", messages=False)] == ["Lin's birthday party."]
        forgot = await asyncio.to_thread(cli, "memory", "forget", "--all", "--yes", "--db", str(live_dir / "ticos.db"))
        assert forgot.returncode == 0, forgot.stderr
        stop.set()
        said = await talking
        assert await store.recall("birthday", messages=False) == []
        assert await store.count_messages() == said  # the agent lost nothing meanwhile
        assert store.health()["write_errors"] == 0
    finally:
        await store.close()


async def test_export_reads_a_ticos_client_card_without_changing_it_and_the_export_imports(tmp_path):
    card = tmp_path / "card"
    (card / ".config" / "ticos").mkdir(parents=True)
    make_sdk_v1(card / ".config" / "ticos" / "ticos.db")
    before = snapshot(card / ".config" / "ticos")
    done = cli("memory", "export", "--tf-root", str(card), "--conversations")
    assert done.returncode == 0, done.stderr
    assert snapshot(card / ".config" / "ticos") == before  # never changed, no sidecar made
    doc = json.loads(done.stdout)
    assert doc["schema"] == 1 and [m["kind"] for m in doc["memories"]] == ["short_term", "long_term"]
    assert doc["memories"][0]["title"] is None and len(doc["messages"]) == 4
    (tmp_path / "old.json").write_text(done.stdout)
    home = tmp_path / "home"
    imported = cli("memory", "import", str(tmp_path / "old.json"), home=home)  # the internal database
    assert imported.returncode == 0, imported.stderr
    internal = home / ".config" / "ticos" / "ticos.db"
    assert rows(internal, "SELECT type, content FROM memories ORDER BY id") == [
        ("short_term", "alice likes waving"), ("long_term", "alice's birthday is in May")]
    inspected = cli("inspect", "memories", "--grep", "BIRTHDAY", "--db", str(internal))
    assert inspected.returncode == 0 and "alice's birthday is in May" in inspected.stdout
    assert "waving" not in inspected.stdout
