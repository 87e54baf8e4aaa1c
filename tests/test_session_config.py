"""session_config: ticos-client's shape byte for byte, the trim rule, other keys untouched,
atomic replacement, 0600, a corrupt file kept, the card's copy preferred, written by a real
agent at start, after a pause in the talk, when a voice agent's connection closes, within
MAX_STALE of a round in a talk that never pauses, and at stop."""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import stat
import threading
import zipfile
from pathlib import Path

import pytest
from helpers import agent_config
from ticos_client_session import TicosClientWriter
from traces import assistant_turn, transcription, user_item

from ticos_agent import Agent
from ticos_agent.memory.session_config import session_messages, update_file

ROWS = [
    {"role": "user", "content": "Hi, I am Lin."},
    {"role": "assistant", "content": "Hello Lin! 你好"},
    {"role": "user", "content": ""},  # a turn that was never transcribed
    {"role": "user", "content": "I like dinosaurs \"a lot\"\nand trains."},
    {"role": "assistant", "content": "Dinosaurs are great 🦖"},
    {"role": "user", "content": "Bye"},  # no answer yet: trimmed
]

EXISTING = {
    "agent_id": "robot-7",
    "model": {"voice": "alloy", "history_conversation_length": 12, "instructions": "Sei gentile — é",
              "messages": {"nobody": [{"role": "user", "content": "old"}], "lin": [{"role": "user", "content": "x"}]},
              "unknown_nested": {"a": [1, 2.5, None, True]}},
    "speech": {"speed": 1.1},
    "future_key": ["kept", {"as": "is"}],
}


def ticos_client_writes(home: Path, rows: list[dict], count: int, start: dict | str | None) -> bytes:
    """What ticos-client's own code leaves in <home>/.config/ticos/session_config."""
    path = home / ".config" / "ticos" / "session_config"
    path.parent.mkdir(parents=True, exist_ok=True)
    if start is None:  # ticos-client's ConfigService creates a missing file like this
        path.write_text(json.dumps({}, indent=2))
    else:
        path.write_text(start if isinstance(start, str) else json.dumps(start, indent=2))
    old = os.environ["HOME"]
    os.environ["HOME"] = str(home)
    try:
        TicosClientWriter(rows, count).update_session_config_messages()
    finally:
        os.environ["HOME"] = old
    return path.read_bytes()


def ours(path: Path, rows: list[dict], count: int, start: dict | str | None) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if start is not None:
        path.write_text(start if isinstance(start, str) else json.dumps(start, indent=2))
    update_file(path, session_messages(rows[-count:]))
    return path.read_bytes()


STARTS = {"full": EXISTING, "missing": None, "list": {"model": {"messages": [{"role": "user", "content": "a list"}]}},
          "no-messages": {"model": {}}, "no-model": {"other": 1}}


@pytest.mark.parametrize("start", STARTS.values(), ids=STARTS.keys())
@pytest.mark.parametrize("count", [12, 3, 2, 1])
def test_the_file_is_byte_for_byte_what_ticos_client_writes(tmp_path, start, count):
    theirs = ticos_client_writes(tmp_path / "theirs", ROWS, count, start)
    mine = ours(tmp_path / "mine" / "session_config", ROWS, count, start)
    assert mine == theirs
    doc = json.loads(mine)
    if start is EXISTING:  # every other key as it was, unknown ones and other users too
        assert {k: v for k, v in doc.items() if k != "model"} == {k: v for k, v in EXISTING.items() if k != "model"}
        assert doc["model"]["messages"]["lin"] == EXISTING["model"]["messages"]["lin"]
        assert {k: v for k, v in doc["model"].items() if k != "messages"} == \
            {k: v for k, v in EXISTING["model"].items() if k != "messages"}
        assert "Sei gentile — é" in mine.decode()  # ensure_ascii=False, as ticos-client


def test_trim_rule_oldest_first_ending_with_the_assistant():
    assert session_messages(ROWS) == [
        {"role": "user", "content": "Hi, I am Lin."}, {"role": "assistant", "content": "Hello Lin! 你好"},
        {"role": "user", "content": "I like dinosaurs \"a lot\"\nand trains."},
        {"role": "assistant", "content": "Dinosaurs are great 🦖"}]
    assert session_messages(ROWS[:1]) == []
    assert session_messages([{"role": "assistant", "content": "only"}, {"role": "user", "content": "q"}]) == \
        [{"role": "assistant", "content": "only"}]


def _vendored(name: str, source: str) -> str:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.dump(node)
    raise AssertionError(f"{name} not found")


def _real_source() -> str | None:
    """ticos-client 0.7.2's ``ticos_client.py``: from the wheel ``make test`` downloads (the
    folder in ``TICOS_TEST_ANCHORS``), an unpacked copy in ``/tmp/tcsrc``, or an install."""
    folder = os.environ.get("TICOS_TEST_ANCHORS")
    if folder:
        wheels = sorted(Path(folder).glob("ticos_client-0.7.2-*.whl"))
        if not wheels:
            raise AssertionError(f"TICOS_TEST_ANCHORS={folder} holds no ticos-client 0.7.2 wheel (make anchors)")
        with zipfile.ZipFile(wheels[0]) as wheel:
            return wheel.read("ticos_client/ticos_client.py").decode()
    unpacked = Path("/tmp/tcsrc/ticos_client/ticos_client.py")
    if unpacked.exists():
        return unpacked.read_text()
    import importlib.util

    spec = importlib.util.find_spec("ticos_client")
    if spec is None or not spec.submodule_search_locations:
        return None
    return (Path(next(iter(spec.submodule_search_locations))) / "ticos_client.py").read_text()


def test_the_vendored_writer_is_ticos_clients_own_code():
    real = _real_source()
    if real is None:  # make test always has it (TICOS_TEST_ANCHORS); a bare pytest may not
        pytest.skip("no ticos-client source here (make anchors, then TICOS_TEST_ANCHORS=.venv/anchors)")
    mine = (Path(__file__).parent / "ticos_client_session.py").read_text()
    for name in ("update_session_config_messages", "_update_session_config_file"):
        assert _vendored(name, mine) == _vendored(name, real), name


def test_mode_0600_whatever_the_umask_and_no_temporary_file_left(tmp_path):
    path = tmp_path / "ticos" / "session_config"
    path.parent.mkdir()
    path.write_text("{}")
    os.chmod(path, 0o644)
    old = os.umask(0o000)
    try:
        update_file(path, [{"role": "assistant", "content": "hi"}])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["session_config"]
    made = tmp_path / "new" / "deeper" / "session_config"  # created, with its folders, when missing
    update_file(made, [])
    assert json.loads(made.read_text()) == {"model": {"messages": {"nobody": []}}}
    assert stat.S_IMODE(made.stat().st_mode) == 0o600


def test_a_reader_never_sees_half_a_file(tmp_path):
    path = tmp_path / "session_config"
    big = [{"role": r, "content": f"{r} {i} " + "x" * 4000} for i in range(30) for r in ("user", "assistant")]
    update_file(path, big[:2])
    seen: list[int] = []
    bad: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                bad.append("missing")
                continue
            try:
                seen.append(len(json.loads(text)["model"]["messages"]["nobody"]))
            except ValueError:
                bad.append(text[-50:])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(2, 61, 2):
            update_file(path, big[:n])
    finally:
        stop.set()
        reader.join()
    assert not bad
    assert len(seen) > 10 and set(seen) <= set(range(2, 61, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["session_config"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe garbage"])
def test_a_corrupt_file_is_kept_as_bad_and_logged(tmp_path, caplog, content):
    path = tmp_path / "session_config"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, "ticos_agent.memory.session_config"):
        update_file(path, [{"role": "assistant", "content": "hi"}])
    assert (tmp_path / "session_config.bad").read_bytes() == content
    assert json.loads(path.read_text()) == {"model": {"messages": {"nobody": [{"role": "assistant", "content": "hi"}]}}}
    assert "session_config.bad" in caplog.text


async def _round(peer, n: int) -> None:
    await peer.send(user_item(f"item_U{n}"), transcription(f"item_U{n}", f"question {n}"),
                    *assistant_turn(f"resp_{n}", f"item_A{n}", [f"answer {n}"], audio=False))


def _nobody(path: Path) -> list[dict]:
    return json.loads(path.read_text())["model"]["messages"]["nobody"]


async def _until(path: Path, expected: list[dict], seconds: float = 5.0) -> float:
    """Seconds until the file holds ``expected`` (fails after ``seconds``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while _nobody(path) != expected:
        assert loop.time() - start < seconds, f"session_config still holds {_nobody(path)}"
        await asyncio.sleep(0.02)
    return loop.time() - start


def _said(*rounds: int) -> list[dict]:
    return [m for n in rounds for m in ({"role": "user", "content": f"question {n}"},
                                        {"role": "assistant", "content": f"answer {n}"})]


async def test_the_agent_writes_it_at_start_after_a_pause_and_at_stop(tmp_path, connect, _isolated_home):
    path = _isolated_home / ".config" / "ticos" / "session_config"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(EXISTING, indent=2))
    agent = Agent(agent_config(tmp_path, memory={"history_rounds": 4, "every_rounds": 2,
                                                 "session_config_quiet": 0.6}))
    await agent.start()
    try:
        assert _nobody(path) == []  # at start: nothing said yet (the old list is replaced)
        assert json.loads(path.read_text())["agent_id"] == "robot-7"
        peer = await connect(agent)
        for n in (1, 2, 3):  # three rounds (one of them a memory round) while the talk goes on: no write
            await _round(peer, n)
            await asyncio.sleep(0.2)
        assert _nobody(path) == []
        waited = await _until(path, _said(2, 3))  # the pause: 0.6 s after the last round
        assert waited > 0.1
        await _round(peer, 4)
        await asyncio.sleep(0.1)
    finally:
        await agent.stop()
    assert _nobody(path) == _said(3, 4)  # at stop, the last 4 messages
    doc = json.loads(path.read_text())
    assert doc["speech"] == EXISTING["speech"] and doc["future_key"] == EXISTING["future_key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_voice_agent_that_goes_away_finds_its_last_words_when_it_comes_back(tmp_path, connect,
                                                                                   _isolated_home):
    """The voice agent reads session_config when it restarts, and its old connection closes first."""
    path = _isolated_home / ".config" / "ticos" / "session_config"
    agent = Agent(agent_config(tmp_path, memory={"history_rounds": 4, "session_config_quiet": 600}))
    await agent.start()
    try:
        peer = await connect(agent)
        await _round(peer, 1)
        await _round(peer, 2)
        await asyncio.sleep(0.3)
        assert _nobody(path) == []  # no pause long enough
        await peer.close()
        await _until(path, _said(1, 2))
        writes = agent.memory.session.writes if agent.memory and agent.memory.session else None
        again = await connect(agent)  # the restarted voice agent: nothing new said, nothing written
        await again.close()
        await asyncio.sleep(0.3)
        assert (agent.memory.session.writes if agent.memory and agent.memory.session else None) == writes
    finally:
        await agent.stop()


async def test_a_conversation_that_never_pauses_is_written_within_max_stale(tmp_path, connect, _isolated_home,
                                                                           monkeypatch):
    from ticos_agent.memory import session_config

    monkeypatch.setattr(session_config, "MAX_STALE", 0.8)
    path = _isolated_home / ".config" / "ticos" / "session_config"
    agent = Agent(agent_config(tmp_path, memory={"history_rounds": 2, "session_config_quiet": 600}))
    await agent.start()
    try:
        peer = await connect(agent)
        for n in range(1, 9):  # a round every 0.25 s for 2 s: never 600 s of quiet
            await _round(peer, n)
            await asyncio.sleep(0.25)
            if _nobody(path):
                break
        assert _nobody(path), "not written within MAX_STALE of the first round"
        assert _nobody(path)[0]["content"] != "question 1"  # written during the talk, not just at the start
    finally:
        await agent.stop()


async def test_storage_on_the_card_prefers_the_cards_file_and_leaves_it_alone(tmp_path, _isolated_home):
    card = tmp_path / "card"
    card_file = card / ".config" / "ticos" / "session_config"
    card_file.parent.mkdir(parents=True)
    card_doc = {"agent_id": "from-the-card", "model": {"voice": "card voice"}}
    card_file.write_text(json.dumps(card_doc, indent=2))
    before = card_file.read_bytes()
    internal = _isolated_home / ".config" / "ticos" / "session_config"
    internal.parent.mkdir(parents=True)
    internal.write_text(json.dumps({"agent_id": "internal", "model": {"voice": "internal voice"}}))
    agent = Agent(agent_config(tmp_path, storage={"mode": "external", "tf_root": str(card)}))
    await agent.start()
    await agent.stop()
    doc = json.loads(internal.read_text())
    assert doc == {"agent_id": "from-the-card", "model": {"voice": "card voice", "messages": {"nobody": []}}}
    assert card_file.read_bytes() == before


async def test_session_config_off_and_a_path_of_its_own(tmp_path, _isolated_home):
    default = _isolated_home / ".config" / "ticos" / "session_config"
    agent = Agent(agent_config(tmp_path, memory={"session_config": False}))
    await agent.start()
    await agent.stop()
    assert not default.exists()
    own = tmp_path / "elsewhere" / "sc.json"
    agent = Agent(agent_config(tmp_path, memory={"session_config_path": str(own)}))
    await agent.start()
    await agent.stop()
    assert not default.exists()
    assert json.loads(own.read_text()) == {"model": {"messages": {"nobody": []}}}


async def test_an_agent_stopping_with_a_voice_agent_connected_warns_not(tmp_path, connect,
                                                                                      _isolated_home, caplog):
    path = _isolated_home / ".config" / "ticos" / "session_config"
    agent = Agent(agent_config(tmp_path, memory={"history_rounds": 2, "session_config_quiet": 600}))
    await agent.start()
    peer = await connect(agent)
    await _round(peer, 1)
    await asyncio.sleep(0.2)
    session = agent.memory.session if agent.memory else None
    assert session is not None and session.pending
    writes = session.writes
    with caplog.at_level(logging.DEBUG, logger="ticos_agent.memory"):
        await agent.stop()  # the socket closes during the stop
        await asyncio.sleep(0.2)
        assert session.writes == writes + 2 and not session.pending  # the socket's close, then the stop
        # a round or a socket closing after the stop (the store is closed by then) asks for no write
        session.changed()
        session.soon()
        await asyncio.sleep(0.2)
    assert _nobody(path) == _said(1)
    assert session.writes == writes + 2 and not session.pending
    assert "could not update" not in caplog.text


def _say(store, n: int) -> None:
    """Round ``n`` into a real store: the question and its answer."""
    for message in _said(n):
        store.add_message(role=message["role"], content=message["content"], item_id=None)


async def test_a_disconnect_during_a_write_writes_again_after_it(tmp_path, monkeypatch):
    from ticos_agent.memory import session_config
    from ticos_agent.storage import open_store

    slow = threading.Event()
    real = session_config.update_file

    def update_slowly(*args, **kwargs):
        slow.wait(2)
        return real(*args, **kwargs)

    monkeypatch.setattr(session_config, "update_file", update_slowly)
    store, path = await open_store("internal", internal_dir=tmp_path / "db"), tmp_path / "session_config"
    sc = session_config.SessionConfig(store, path, count=10, quiet=0.05)
    _say(store, 1)
    sc.changed()
    await asyncio.sleep(0.2)  # the quiet write of round 1 has started and is held
    _say(store, 2)
    sc.changed()  # round 2 during that write
    sc.soon()  # and the voice agent goes away
    slow.set()
    for _ in range(100):
        if path.exists() and _nobody(path) == _said(1, 2):
            break
        await asyncio.sleep(0.02)
    assert _nobody(path) == _said(1, 2) and not sc.pending
    await sc.close()
    await store.close()


async def test_a_failed_write_is_tried_again_with_a_growing_pause(tmp_path, caplog):
    from ticos_agent.memory import session_config
    from ticos_agent.storage import open_store

    store = await open_store("internal", internal_dir=tmp_path / "db")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    sc = session_config.SessionConfig(store, blocker / "session_config", count=10, quiet=0.1)
    _say(store, 1)
    sc.changed()
    await asyncio.sleep(0.75)  # 0.1 s quiet, then retries after 0.1, 0.2 and 0.4 s
    failures = caplog.text.count("could not update")
    assert 2 <= failures <= 4 and sc.pending  # tried again, each pause longer than the last
    blocker.unlink()  # the folder can be made now
    written = blocker / "session_config"
    for _ in range(150):
        if written.exists() and not sc.pending:
            break
        await asyncio.sleep(0.02)
    assert _nobody(written) == _said(1) and not sc.pending
    await sc.close()
    await store.close()
