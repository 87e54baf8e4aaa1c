"""The ticos-client API, unchanged: TicosClient with plain function handlers."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time

import aiohttp
import pytest
from helpers import free_port, recording_client, run_fresh, wait_sync
from traces import assistant_turn, function_call_done, transcription, user_item

from ticos_agent import SaveMode, TicosClient


async def _send(port: int, *events) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/realtime") as ws:
        for e in events:
            await ws.send_str(json.dumps(e))
        await ws.send_str(json.dumps({"type": "ping.sync"}))
        await ws.close()


async def test_ticos_client_handlers_storage_and_stop(tmp_path):
    port = free_port()
    client, seen = recording_client(port, tmp_path / "store")
    started = time.monotonic()
    assert client.start() is True
    assert time.monotonic() - started < 1.0
    assert client.is_running()
    try:
        await _send(port, user_item("item_U1"), transcription("item_U1", "Wave at me!"),
                    *assistant_turn("resp_1", "item_A1", ["Sure!"]),
                    function_call_done("resp_1", "call_1", "motion", {"motion_tag": "wave", "repeat": 2}),
                    function_call_done("resp_1", "call_2", "emotion", {"emotion_tag": "happy"}),
                    function_call_done("resp_1", "call_3", "set_volume", {"level": 3}))
        wait_sync(lambda: seen.functions and seen.motions and seen.emotions and len(seen.convo) >= 3)
        assert seen.motions[0]["motion_tag"] == "wave" and seen.motions[0]["repeat"] == 2
        assert seen.emotions[0]["emotion_tag"] == "happy"
        assert seen.functions == [("set_volume", {"level": 3})]
        assert seen.convo[:2] == [("item_U1", "user", ""), ("item_U1", "user", "Wave at me!")]
        assert seen.convo[1][1] == "user" and seen.convo[1][1].value == "user"
        assert any(m["type"] == "response.done" for m in seen.messages)
    finally:
        client.stop()
    assert not client.is_running()
    db = tmp_path / "store" / "ticos.db"
    rows = sqlite3.connect(db).execute("SELECT role, content FROM messages ORDER BY rowid").fetchall()
    assert rows == [("user", "Wave at me!"), ("assistant", "Sure!")]


def test_ticos_client_start_returns_false_when_port_taken(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        client = TicosClient(port=port)
        started = time.monotonic()
        assert client.start() is False
        assert time.monotonic() - started < 1.0
        assert not client.is_running()
        assert str(port) in client.start_error or "address" in client.start_error.lower()
        assert any("could not start" in r.getMessage() for r in caplog.records)


def test_ticos_client_without_storage_stores_nothing(tmp_path, monkeypatch):
    port = free_port()
    client = TicosClient(port=port)
    assert client.start()
    try:
        assert client.agent.store is None
        assert client.agent.actuators is None and client.agent.audio is None
    finally:
        client.stop()


def test_handler_must_be_callable():
    with pytest.raises(ValueError):
        TicosClient().set_message_handler("not callable")


async def test_only_function_call_handler_gets_motion_like_ticos_client(tmp_path):
    port = free_port()
    client = TicosClient(port=port)
    calls = []
    client.set_function_call_handler(lambda name, args: calls.append((name, args["motion_tag"])))
    assert client.start()
    try:
        await _send(port, function_call_done("r1", "c1", "motion", {"motion_tag": "wave"}),
                    function_call_done("r1", "c2", "motion_and_emotion", {"motion_tag": "nod", "emotion_tag": "happy"}))
        wait_sync(lambda: len(calls) == 2)
        assert calls == [("motion", "wave"), ("motion_and_emotion", "nod")]
    finally:
        client.stop()


def test_config_file_values_are_not_overridden_by_constructor_defaults(tmp_path):
    port = free_port()
    cfg = tmp_path / "robot.toml"
    cfg.write_text(f'[server]\nport = {port}\n[storage]\ndir = "{tmp_path / "db"}"\ndb_filename = "robot.db"\n'
                   '[audio]\nenabled = false\n')
    client = TicosClient(config=str(cfg))
    assert client.start()
    try:
        assert client.port == port
        assert client.agent.store is not None
        assert client.agent.store.health()["path"] == str(tmp_path / "db" / "robot.db")
    finally:
        client.stop()


def test_a_config_file_is_read_once_and_a_missing_one_fails_the_start(tmp_path, _isolated_home, monkeypatch):
    ticos = _isolated_home / ".config" / "ticos"
    ticos.mkdir(parents=True)  # ticos-client's own files name memory keys: they are merged in
    (ticos / "config.toml").write_text("[model]\nhistory_conversation_length = 4\n")
    cfg = tmp_path / "robot.toml"
    cfg.write_text(f'[server]\nport = {free_port()}\n[storage]\ndir = "{tmp_path / "db"}"\n'
                   '[memory]\nevery_rounds = 7\n[audio]\nenabled = false\n')
    import builtins

    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    client = TicosClient(config=str(cfg))
    client.enable_local_storage()
    assert client.start(), client.start_error
    try:
        assert opened.count(str(cfg)) == 1
        assert client.agent.config.memory.history_rounds == 4  # ticos-client's
        assert client.agent.config.memory.every_rounds == 7  # the file's
    finally:
        client.stop()
    monkeypatch.setattr(builtins, "open", real_open)
    missing = TicosClient(config=str(tmp_path / "nowhere.toml"))
    assert not missing.start()
    assert "an existing TOML file" in (missing.start_error or "")


async def test_an_absolute_db_filename_is_used_as_is(tmp_path):
    port = free_port()
    path = tmp_path / "elsewhere" / "robot-memory.db"
    client = TicosClient(port=port, save_mode=SaveMode.EXTERNAL, tf_root_dir=str(tmp_path / "card"))
    client.enable_local_storage(db_filename=str(path))
    assert client.start(), client.start_error
    try:
        await _send(port, user_item("u1"), transcription("u1", "where am I stored?"))
        wait_sync(lambda: path.exists())
    finally:
        client.stop()
    rows = sqlite3.connect(path).execute("SELECT content FROM messages").fetchall()
    assert rows == [("where am I stored?",)]
    assert not (tmp_path / "card").exists()


async def test_motion_and_emotion_handlers_get_every_extra_argument_unchanged(tmp_path):
    port = free_port()
    client = TicosClient(port=port)
    motions, emotions = [], []
    client.set_motion_handler(motions.append)
    client.set_emotion_handler(emotions.append)
    assert client.start()
    try:
        await _send(port, function_call_done("r1", "c1", "motion", {"motion_tag": "wave", "side": "left",
                                                                    "sent_ns": 17, "extra": {"a": [1]}}),
                    function_call_done("r1", "c2", "motion_and_emotion",
                                       {"motion_tag": "nod", "emotion_tag": "happy", "speed": 9, "mine": None}))
        wait_sync(lambda: len(motions) == 2 and len(emotions) == 1)
    finally:
        client.stop()
    assert motions[0] == {"motion_tag": "wave", "side": "left", "sent_ns": 17, "extra": {"a": [1]},
                          "speed": 1.0, "repeat": 1, "wait": True}
    # validated fields are the validated values (speed clamped), the integrator's own pass through
    assert motions[1]["mine"] is None and motions[1]["speed"] == 5.0 and emotions[0] == motions[1]


def test_failures_reach_the_message_handler_as_health_status(tmp_path):
    statuses = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        client = TicosClient(port=s.getsockname()[1])
        client.set_message_handler(statuses.append)
        assert client.start() is False
    assert statuses[-1]["type"] == "health.status" and statuses[-1]["code"] == "EXECUTER_ERROR"
    assert "could not start" in statuses[-1]["message"]

    (tmp_path / "file").write_text("not a folder")
    client = TicosClient(port=free_port())
    client.enable_local_storage(str(tmp_path / "file" / "db"))
    client.set_message_handler(statuses.append)
    assert client.start() is False
    assert statuses[-1]["type"] == "health.status" and statuses[-1]["code"] == "DATABASE_ERROR"
    assert "Not a directory" in statuses[-1]["message"]


def test_stop_after_a_failed_start_is_quiet(caplog, recwarn):
    import gc

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        for _ in range(20):  # the race was a thread still closing its loop when stop() came
            client = TicosClient(port=s.getsockname()[1])
            assert client.start() is False
            client.stop()
            client.stop()
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert not any("error while stopping" in r.getMessage() for r in caplog.records)


async def test_inline_handlers_run_on_the_agents_own_thread_as_in_ticos_client(tmp_path):
    import threading

    port = free_port()
    client = TicosClient(port=port, inline_handlers=True)
    threads = []
    client.set_message_handler(lambda event: threads.append(threading.current_thread().name))
    client.set_function_call_handler(lambda name, args: threads.append(f"{name} on {threading.current_thread().name}"))
    assert client.start()
    try:
        await _send(port, user_item("u1"), function_call_done("r1", "c1", "set_light", {"on": True}))
        wait_sync(lambda: any(t.startswith("set_light") for t in threads))
    finally:
        client.stop()
    # the function-call handler too (ticos-client's ``function:*``, called for each function's name)
    assert set(threads) == {f"ticos-agent-{port}", f"set_light on ticos-agent-{port}"}


def test_a_card_that_is_not_there_at_start_is_a_database_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    statuses: list[dict] = []
    client = TicosClient(port=free_port(), save_mode=SaveMode.EXTERNAL, tf_root_dir=str(tmp_path / "media" / "CARD"))
    client.set_message_handler(statuses.append)
    client.enable_local_storage()
    assert client.start() is True  # it serves, storing in the fallback database
    try:
        wait_sync(lambda: any(s.get("type") == "health.status" for s in statuses))
        status = next(s for s in statuses if s.get("type") == "health.status")
        assert status["code"] == "DATABASE_ERROR" and "not mounted" in status["message"]
        assert "ticos-fallback.db" in status["message"]
    finally:
        client.stop()


async def test_a_card_pulled_while_serving_is_a_database_error(tmp_path, monkeypatch):
    from storage_helpers import loop_card

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    statuses: list[dict] = []
    with loop_card(tmp_path) as card:
        port = free_port()
        client = TicosClient(port=port, save_mode=SaveMode.EXTERNAL, tf_root_dir=str(card.root))
        client.set_message_handler(statuses.append)
        client.enable_local_storage()
        assert client.start() is True
        try:
            await _send(port, user_item("item_U1"), transcription("item_U1", "on the card"))
            await asyncio.sleep(1.2)  # committed to the card
            assert not [s for s in statuses if s.get("type") == "health.status"]
            card.pull()
            await _send(port, user_item("item_U2"), transcription("item_U2", "in the fallback"))
            await asyncio.to_thread(wait_sync, lambda: any(s.get("type") == "health.status" for s in statuses), 5.0)
        finally:
            client.stop()
    status = next(s for s in statuses if s.get("type") == "health.status")
    assert status["code"] == "DATABASE_ERROR" and "no longer mounted" in status["message"]


def test_a_client_without_a_robot_loads_no_actuator_code(tmp_path):
    """ticos-client's users have no actuators: the drivers (pyserial, gpiozero, every driver
    module) stay out of their process and its memory."""
    script = (
        "import sys\n"
        "from ticos_agent import TicosClient\n"
        f"c = TicosClient(port={free_port()})\n"
        f"c.enable_local_storage({str(tmp_path / 'db')!r})\n"
        "assert c.start()\n"
        "c.stop()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ticos_agent.actuators', 'serial', 'gpiozero',"
        " 'numpy', 'sounddevice'))))\n"
    )
    out = run_fresh(script, tmp_path)
    assert out.strip() == "[]", out


def test_a_serving_client_loads_only_what_it_uses_and_keeps_no_idle_thread(tmp_path):
    """Idle memory: a TicosClient storing on internal storage, serving a socket, does not load
    what it does not use (the TOML parser without a config file, the idna codec for a numeric
    address, the offline reader and the read queries, the merge of a TF card's fallback,
    priming, the chat summariser, the tool announcer), and the blocking work of its start
    (opening the database, writing session_config) leaves no thread behind."""
    port = free_port()
    script = (
        "import asyncio, sys, threading, time, aiohttp\n"
        "from ticos_agent import TicosClient\n"
        f"c = TicosClient(port={port})\n"
        f"c.enable_local_storage({str(tmp_path / 'db')!r})\n"
        "assert c.start()\n"
        "async def talk():\n"
        "    async with aiohttp.ClientSession() as s:\n"
        f"        ws = await s.ws_connect('http://127.0.0.1:{port}/realtime')\n"
        "        await ws.send_json({'type': 'session.updated', 'session': {}})\n"
        "        await asyncio.sleep(0.3)\n"
        "        await ws.close()\n"
        "asyncio.run(talk())\n"
        "time.sleep(0.2)\n"
        "print(sorted(t.name.split('-')[0] for t in threading.enumerate()))\n"
        "watched = ('tomllib', 'encodings.idna', 'ticos_agent.storage.reader', 'ticos_agent.storage.queries',"
        " 'ticos_agent.storage.finder',"
        " 'ticos_agent.storage.merge', 'ticos_agent.memory.priming', 'ticos_agent.memory.summariser',"
        " 'ticos_agent.announce')\n"
        "print(sorted(m for m in watched if m in sys.modules))\n"
        "c.stop()\n"
    )
    threads, loaded = run_fresh(script, tmp_path).strip().splitlines()
    # the caller's, the agent's loop, the handler thread, the loop watch ([log] loop_stall), the
    # database connection's: nothing else
    assert threads == str(sorted(["MainThread", "ticos", "ticos", "ticos", "Thread"])), threads
    assert loaded == "[]", loaded


async def test_handlers_set_after_start_get_the_next_events_and_unset_ones_cost_no_calls(tmp_path):
    """ticos-client looked handlers up at call time: one set after start() gets what comes next.
    Until one is set, the message and conversation topics are not even subscribed (no call on
    the handler thread for every event)."""
    port = free_port()
    client = TicosClient(port=port)
    client.enable_local_storage(str(tmp_path))
    assert client.start()
    try:
        await _send(port, user_item("u1"), transcription("u1", "before"))
        wait_sync(lambda: client.agent.counters["events"] >= 3)
        assert client.agent.dispatcher.stats()["calls"] == 0
        assert not client.agent.dispatcher.has("event:*") and not client.agent.dispatcher.has("conversation")
        messages, convo = [], []
        client.set_message_handler(lambda event: messages.append(event["type"]))
        client.set_conversation_handler(lambda item_id, role, content: convo.append(content))
        await _send(port, user_item("u2"), transcription("u2", "after"))
        wait_sync(lambda: "after" in convo and "ping.sync" in messages)
        assert "conversation.item.input_audio_transcription.completed" in messages
        assert "before" not in convo
    finally:
        client.stop()


@pytest.mark.parametrize("inline", [False, True], ids=["handler thread", "inline"])
async def test_a_handler_may_set_another_handler(tmp_path, inline):
    """Setting a handler from inside a handler (on the handler thread, or on the agent's own
    loop with inline_handlers) neither deadlocks nor loses what comes next."""
    port = free_port()
    client = TicosClient(port=port, inline_handlers=inline)
    convo = []

    def first_message(event):
        client.set_conversation_handler(lambda item_id, role, content: convo.append(content))

    client.set_message_handler(first_message)
    assert client.start()
    try:
        await _send(port, {"type": "session.updated", "session": {}})
        wait_sync(lambda: client.agent.dispatcher.has("conversation"))
        await _send(port, user_item("u1"), transcription("u1", "heard"))
        wait_sync(lambda: "heard" in convo)
    finally:
        client.stop()


async def test_the_message_handler_is_swapped_when_replaced_and_a_failing_one_is_named(tmp_path, caplog):
    import logging

    caplog.set_level(logging.ERROR, logger="ticos_agent")
    port = free_port()
    client = TicosClient(port=port)
    first, second = [], []
    client.set_message_handler(lambda event: first.append(event["type"]))
    assert client.start()
    try:
        await _send(port, {"type": "custom.one"})
        wait_sync(lambda: "ping.sync" in first)

        def picky_message_handler(event):
            second.append(event["type"])
            if event["type"] == "custom.bad":
                raise ValueError("cannot take it")

        client.set_message_handler(picky_message_handler)
        await _send(port, {"type": "custom.two"}, {"type": "custom.bad"})
        wait_sync(lambda: "ping.sync" in second)
        assert "custom.two" not in first and second[:2] == ["custom.two", "custom.bad"]
        failures = [r.getMessage() for r in caplog.records if "picky_message_handler" in r.getMessage()]
        assert len(failures) == 1 and "event:*" in failures[0] and "cannot take it" in failures[0]
        client.set_message_handler(None)
        assert not client.agent.dispatcher.has("event:*")
    finally:
        client.stop()


async def test_a_handler_set_by_another_thread_while_the_client_starts_is_subscribed(tmp_path, monkeypatch):
    """A handler set while start() waits for the agent finds no loop to subscribe on yet (it is
    left to start()): start() subscribes it once the agent is up."""
    from ticos_agent.agent import Agent

    port = free_port()
    client = TicosClient(port=port)
    messages = []
    real_start = Agent.start

    async def start_and_meanwhile_set_a_handler(self):
        await asyncio.to_thread(client.set_message_handler, lambda event: messages.append(event["type"]))
        await real_start(self)

    monkeypatch.setattr(Agent, "start", start_and_meanwhile_set_a_handler)
    assert client.start()
    try:
        assert client.agent.dispatcher.has("event:*")
        await _send(port, {"type": "custom.one"})
        wait_sync(lambda: "ping.sync" in messages)
    finally:
        client.stop()


def test_a_memory_key_that_is_no_table_fails_the_start_whatever_ticos_clients_files_say(_isolated_home):
    """ticos-client's memory keys lie under the config: they never mend it (before, they replaced
    a ``memory`` that was no table, and only when ticos-client's files set some key)."""
    ticos = _isolated_home / ".config" / "ticos"
    ticos.mkdir(parents=True)
    (ticos / "config.toml").write_text("[model]\nhistory_conversation_length = 4\n")
    client = TicosClient(config={"memory": 5, "server": {"port": free_port()}})
    assert not client.start()
    assert "memory" in (client.start_error or "")
