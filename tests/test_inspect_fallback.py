"""``inspect``/``export`` read the card and, while rows wait there, the fallback, saying which is which."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
from storage_helpers import snapshot

from ticos_agent import inspect as inspect_module
from ticos_agent.storage import open_store


def cli(home, *args):
    env = {**os.environ, "HOME": str(home)}
    env.pop("STATE_DIRECTORY", None)
    return subprocess.run([sys.executable, "-m", "ticos_agent.cli", *args], capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.fixture
async def fell_back(tmp_path):
    """A card with three messages, and two more (a memory, events) in the fallback."""
    home, card = tmp_path / "home", tmp_path / "card"
    internal = home / ".config" / "ticos"
    store = await open_store("external", tf_root=card, internal_dir=internal, require_mount=False,
                             probe_interval=3600)
    for i in range(3):
        store.add_message(role="user", content=f"on the card {i}", item_id=f"c{i}", session_id="s")
    await store.flush()
    await store._db.execute("PRAGMA max_page_count = 1")  # the card is full from now on
    store.add_message(role="assistant", content="in the fallback 0", item_id="f0", session_id="s")
    store.add_message(role="user", content="in the fallback 1", item_id="f1", session_id="s")
    store.add_memory("long_term", "remembered in the fallback" + " " * 8000)  # needs new pages
    await store.flush()
    health = store.health()
    await store.close()
    assert health["fallback_rows"] == 3 and health["fallback"]["rows"]["messages"] == 2
    return home, card, internal


async def test_inspect_reads_card_and_fallback_and_marks_each_row(fell_back):
    home, card, internal = fell_back
    before = (snapshot(card / ".config" / "ticos"), snapshot(internal))
    out = cli(home, "inspect", "--tf-root", str(card))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"fallback {internal / 'ticos-fallback.db'}: 3 row(s) not yet merged")
    assert "messages 2, memories 1, calls 0, events 0" in lines[0]
    shown = [line for line in lines if "on the card" in line or "in the fallback" in line]
    assert len(shown) == 5
    assert all(" card " in line for line in shown[:3]) and all(" fallback " in line for line in shown[3:])
    mark = lines.index(shown[3]) - 1  # where the card stopped taking rows, the transcript says so
    assert lines[mark].split(None, 2)[2].startswith("⚠ from here on the rows went to the fallback database")
    memories = cli(home, "inspect", "--tf-root", str(card), "memories")
    assert any(line.split()[2:] == ["fallback", "long_term", "nobody", "remembered", "in", "the", "fallback"]
               for line in memories.stdout.splitlines())
    export = cli(home, "export", "--tf-root", str(card))
    assert export.returncode == 0 and "3 row(s) not yet merged" in export.stderr
    rows = [json.loads(line) for line in export.stdout.splitlines()]
    assert [(r["source"], r["content"]) for r in rows if r["kind"] == "message"] == [
        ("card", "on the card 0"), ("card", "on the card 1"), ("card", "on the card 2"),
        ("fallback", "in the fallback 0"), ("fallback", "in the fallback 1")]
    assert (snapshot(card / ".config" / "ticos"), snapshot(internal)) == before  # nothing changed


async def test_reading_the_internal_database_mentions_the_waiting_rows(fell_back):
    home, _, internal = fell_back
    out = cli(home, "inspect", "--db", str(internal / "ticos-fallback.db"))
    assert out.returncode == 0 and "in the fallback 1" in out.stdout and "fallback  " not in out.stdout
    (internal / "ticos.db").unlink(missing_ok=True)
    store = await open_store("internal", internal_dir=internal)
    store.add_message(role="user", content="internal mode", item_id=None)
    await store.close()
    out = cli(home, "inspect")
    assert out.returncode == 0 and "internal mode" in out.stdout and "in the fallback" not in out.stdout
    assert "3 row(s) not yet merged" in out.stderr and "--tf-root" in out.stderr


async def test_a_missing_card_shows_what_waits_in_the_fallback(fell_back, tmp_path):
    home, _, _ = fell_back
    out = cli(home, "inspect", "--tf-root", str(tmp_path / "no-card-here"))
    assert out.returncode == 0, out.stderr
    assert "3 row(s) not yet merged" in out.stdout and "in the fallback 0" in out.stdout


async def test_an_explicit_fallback_file_is_read_next_to_a_database(fell_back, capsys):
    _home, card, internal = fell_back
    args = argparse.Namespace(command="inspect", db=str(card / ".config" / "ticos" / "ticos.db"), tf_root=None,
                              config=None, session=None, limit=4, what="messages",
                              fallback=str(internal / "ticos-fallback.db"))
    assert inspect_module.main(args) == 0
    out = capsys.readouterr().out
    assert "3 row(s) not yet merged" in out
    listed = [line for line in out.splitlines() if "on the card" in line or "in the fallback" in line]
    assert len(listed) == 4 and "in the fallback 1" in listed[-1]  # the newest four of both
    args.fallback = str(internal / "nope.db")
    assert inspect_module.main(args) == 1


async def test_config_in_external_mode_without_a_card_reads_the_fallback(fell_back, tmp_path, monkeypatch):
    _home, _, internal = fell_back
    monkeypatch.setattr("ticos_agent.storage.find_tf_root", lambda *a, **k: None)
    config = tmp_path / "robot.toml"
    config.write_text(f'[storage]\nmode = "external"\ndir = "{internal}"\n')
    args = argparse.Namespace(command="inspect", db=None, tf_root=None, config=str(config), session=None,
                              limit=50, what="messages")
    assert inspect_module.main(args) == 0
    (internal / "ticos-fallback.db").unlink()
    assert inspect_module.main(args) == 1


async def test_the_fallback_on_the_command_line_and_in_the_faults(fell_back, tmp_path):
    home, card, internal = fell_back
    db = card / ".config" / "ticos" / "ticos.db"
    out = cli(tmp_path, "inspect", "messages", "--db", str(db), "--fallback", str(internal / "ticos-fallback.db"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("fallback ") and "3 row(s) not yet merged" in out.stdout
    assert [line.split()[2] for line in out.stdout.splitlines()[2:]] == ["file"] * 3 + ["fallback"] * 2
    faults = cli(home, "inspect", "faults", "--tf-root", str(card))
    line = next(x for x in faults.stdout.splitlines() if x.startswith("storage fallback"))
    assert line.split()[2] == "2" and "not merged yet" in line  # the two messages waiting
    missing = cli(tmp_path, "inspect", "--db", str(db), "--fallback", str(tmp_path / "nope.db"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no such file" in missing.stderr


async def test_with_several_cards_the_fallback_is_a_card_of_its_own(fell_back, tmp_path):
    import shutil

    home, card, _ = fell_back
    media = tmp_path / "media"
    for name in ("A", "B"):
        shutil.copytree(card, media / name)
    out = cli(home, "inspect", "messages", "--tf-root", str(media))
    assert out.returncode == 0, out.stderr
    heads = [line for line in out.stdout.splitlines() if line.startswith("== ")]
    assert [h.split()[1] for h in heads] == ["A", "B", "fallback"]
    tail = out.stdout.split(heads[2], 1)[1]
    assert "3 row(s) not yet merged" in tail and "in the fallback 1" in tail and "on the card" not in tail
