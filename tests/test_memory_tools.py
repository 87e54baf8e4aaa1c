"""The memory tools the voice agent's model calls (remember, recall, forget), end to end:
a real agent, a real voice-agent socket, a real SQLite file."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from helpers import agent_config, settle, stored_call, wait_for
from test_tools import valid
from traces import ev, function_call_done, function_call_item, response_done, speech_started

from ticos_agent import Agent
from ticos_agent.errors import StorageError
from ticos_agent.memory.tools import memory_args, memory_tools
from ticos_agent.tools import Toolbox

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def output_of(peer, call_id: str, timeout: float = 5.0) -> dict:
    """The next frame, which must be the function_call_output of ``call_id``; its output decoded."""
    reply = await peer.receive_json(timeout=timeout)
    assert reply["type"] == "conversation.item.create", reply
    assert reply["item"]["type"] == "function_call_output" and reply["item"]["call_id"] == call_id, reply
    return json.loads(reply["item"]["output"])


async def recall(peer, call_id: str, query: str, **more) -> dict:
    await peer.send(function_call_done(f"resp_{call_id}", call_id, "recall", {"query": query, **more}))
    out = await output_of(peer, call_id)
    follow = await peer.receive_json()
    assert follow["type"] == "response.create" and follow["event_id"].startswith("event_ticos_")
    return out


def memory_rows(agent: Agent) -> list[tuple]:
    path = agent.store.health()["path"]
    with sqlite3.connect(path) as con:
        return con.execute("SELECT type, content FROM memories ORDER BY id").fetchall()


async def test_the_model_remembers_then_recalls_what_it_remembered(agent, connect):
    assert agent.config.replies.function_call_output is False
    stored = []
    agent.on_memory(lambda action, payload: stored.append((action, payload)))
    peer = await connect(agent)
    await peer.send(function_call_done("resp_1", "call_r1", "remember",
                                       {"content": "The user's name is Lin.", "subject": "user",
                                        "importance": 0.9}))
    await peer.no_reply(0.3)  # remember follows [replies]: off
    row = await stored_call(agent, "call_r1")
    assert row["status"] == "done"
    outcome = json.loads(row["result"]) if isinstance(row["result"], str) else row["result"]
    assert outcome["content"] == "The user's name is Lin." and outcome["kind"] == "fact"
    assert memory_rows(agent) == [("fact", "The user's name is Lin.")]
    await wait_for(lambda: stored)
    action, payload = stored[0]
    assert action == "stored" and payload["via"] == "tool"
    assert payload["memory"]["content"] == "The user's name is Lin." and payload["memory"]["subject"] == "user"
    assert payload["memory"]["importance"] == 0.9 and payload["memory"]["id"] == outcome["id"]

    out = await recall(peer, "call_q1", "name")
    assert out["status"] == "done" and out["count"] >= 1
    assert "The user's name is Lin." in out["found"][0] and out["found"][0].startswith("memory (fact")
    row = await stored_call(agent, "call_q1")
    assert row["status"] == "done" and "Lin" in json.dumps(row["result"])


async def test_recall_finds_nothing_and_says_so(agent, connect):
    peer = await connect(agent)
    out = await recall(peer, "call_q", "zeppelins")
    assert out == {"status": "done", "reason": None, "query": "zeppelins", "count": 0, "found": [],
                   "note": "nothing remembered matches that"}


async def test_forget_removes_what_matches_and_replies_follow_the_config(tmp_path, connect):
    cfg = agent_config(tmp_path, replies={"function_call_output": True, "respond_after_recall": False})
    async with Agent(cfg) as agent:
        changes = []
        agent.on_memory(lambda action, payload: changes.append((action, payload)))
        peer = await connect(agent)
        for n, text in enumerate(["Lin likes dinosaurs.", "Lin has a sister called Mei.", "Lin is seven."]):
            await peer.send(function_call_done(f"resp_{n}", f"call_m{n}", "remember", {"content": text}))
            out = await output_of(peer, f"call_m{n}")  # sent back: [replies] function_call_output is on
            assert out["status"] == "done" and out["content"] == text
        await peer.send(function_call_done("resp_f", "call_f", "forget", {"query": "dinosaurs"}))
        out = await output_of(peer, "call_f")
        assert out == {"status": "done", "reason": None, "forgotten": 1}
        await peer.no_reply(0.2)  # no response.create after remember or forget
        assert [c for _, c in memory_rows(agent)] == ["Lin has a sister called Mei.", "Lin is seven."]
        await wait_for(lambda: any(a == "forgotten" for a, _ in changes))
        assert ("forgotten", {"count": 1, "query": "dinosaurs", "ids": [], "everything": False, "via": "tool"}) \
            in changes
        # recall: answered, and with respond_after_recall off no response.create follows
        await peer.send(function_call_done("resp_q", "call_q", "recall", {"query": "dinosaurs"}))
        out = await output_of(peer, "call_q")
        assert out["found"] == [] or all("memory" not in line for line in out["found"])
        await peer.no_reply(0.3)
        # forgetting what matches nothing is done, with 0
        await peer.send(function_call_done("resp_f2", "call_f2", "forget", {"query": "volcanoes"}))
        assert (await output_of(peer, "call_f2"))["forgotten"] == 0


BAD = [
    ("remember", {}, "content", "content is required"),
    ("remember", {"content": "   "}, "content", "content must not be empty"),
    ("remember", {"content": 42}, "content", "content must be a string, got a number"),
    ("remember", {"content": "x" * 4001}, "content", "content is longer than 4000 characters"),
    ("remember", {"content": "ok", "kind": "long_term"}, "kind", "kind must be one of fact, episode"),
    ("remember", {"content": "ok", "importance": 2}, "importance", "importance must be a number from 0 to 1"),
    ("remember", {"content": "ok", "importance": "high"}, "importance", "got a string"),
    ("remember", {"content": "ok", "subject": ["a"]}, "subject", "subject must be a string, got an array"),
    ("recall", {}, "query", "query is required"),
    ("recall", {"query": "x", "limit": 0}, "limit", "limit must be from 1 to 20, got 0"),
    ("recall", {"query": "x", "limit": 21}, "limit", "limit must be from 1 to 20, got 21"),
    ("recall", {"query": "x", "limit": 2.5}, "limit", "whole number"),
    ("recall", {"query": "x", "limit": "five"}, "limit", "whole number"),
    ("forget", {}, "query", "query is required"),
    ("forget", {"query": True}, "query", "query must be a string, got a boolean"),
]


async def test_bad_arguments_are_a_failed_outcome_sent_back_naming_the_field(agent, connect):
    assert agent.config.replies.function_call_output is False  # sent back anyway
    peer = await connect(agent)
    for n, (name, args, field, words) in enumerate(BAD):
        await peer.send(function_call_done(f"resp_{n}", f"call_{n}", name, args))
        out = await output_of(peer, f"call_{n}")
        assert out["status"] == "failed" and out["field"] == field and words in out["reason"], (name, args, out)
        if name == "recall":  # a response follows, so the model can correct itself
            assert (await peer.receive_json())["type"] == "response.create"
        row = await stored_call(agent, f"call_{n}")
        assert row["status"] == "failed" and words in json.dumps(row["result"])
    # the store's own check: a query without a word to look for; recall's answer is followed by response.create
    await peer.send(function_call_done("resp_w", "call_w", "recall", {"query": "?!"}))
    out = await output_of(peer, "call_w")
    assert out["status"] == "failed" and out["field"] == "query" and "no word" in out["reason"]
    assert (await peer.receive_json())["type"] == "response.create"
    await peer.send(function_call_done("resp_w2", "call_w2", "forget", {"query": "..."}))
    out = await output_of(peer, "call_w2")  # sent although [replies] is off: the model can correct it
    assert out["status"] == "failed" and out["field"] == "query"
    # arguments that are not JSON at all
    await peer.send(function_call_done("resp_x", "call_x", "remember", "{not json"))
    out = await output_of(peer, "call_x")
    assert out["status"] == "failed" and "not valid JSON" in out["reason"]
    await settle(agent)
    assert memory_rows(agent) == []
    assert agent.counters["rejected_calls"] == len(BAD) + 1
    # the model corrects itself: the same tool with good arguments works
    await peer.send(function_call_done("resp_ok", "call_ok", "remember", {"content": "Lin is seven.",
                                                                          "kind": "episode", "extra": 1}))
    assert (await stored_call(agent, "call_ok"))["status"] == "done"
    assert memory_rows(agent) == [("episode", "Lin is seven.")]
    assert memory_args("remember", {"content": "a", "extra": 1}).notes == ("ignored argument(s) extra",)


async def test_each_call_id_is_carried_out_once(agent, connect):
    stored = []
    agent.on_memory(lambda action, payload: stored.append(payload))
    peer = await connect(agent)
    call = function_call_done("resp_1", "call_1", "remember", {"content": "Lin likes trains."})
    await peer.send(call, call)
    await peer.send(response_done("resp_1", output=[function_call_item("call_1", "remember",
                                                                       {"content": "Lin likes trains."})]))
    await stored_call(agent, "call_1")
    await settle(agent)
    assert memory_rows(agent) == [("fact", "Lin likes trains.")]
    assert agent.counters["duplicate_calls"] == 2
    # a recall repeated is answered once
    await peer.send(function_call_done("resp_2", "call_2", "recall", {"query": "trains"}))
    await output_of(peer, "call_2")
    assert (await peer.receive_json())["type"] == "response.create"
    await peer.send(function_call_done("resp_2", "call_2", "recall", {"query": "trains"}))
    await peer.no_reply(0.3)
    assert len(stored) == 1


async def test_recall_when_storage_fails_is_a_failed_outcome_and_the_agent_goes_on(agent, connect):
    peer = await connect(agent)
    await peer.send(function_call_done("resp_1", "call_1", "remember", {"content": "Lin likes kites."}))
    await stored_call(agent, "call_1")
    path = agent.store.health()["path"]
    with sqlite3.connect(path) as con:  # the table goes away under the agent: every memory query fails
        con.execute("ALTER TABLE memories RENAME TO memories_gone")
    out = await recall(peer, "call_2", "kites")
    assert out["status"] == "failed" and out["reason"].startswith("storage: ")
    await peer.send(function_call_done("resp_3", "call_3", "remember", {"content": "Lin likes boats."}))
    await peer.send(function_call_done("resp_4", "call_4", "forget", {"query": "kites"}))
    assert (await stored_call(agent, "call_4"))["status"] == "failed"
    # the agent is still serving: a motion call still works and /health answers
    await peer.send(function_call_done("resp_5", "call_5", "motion", {"motion_tag": "nod"}))
    assert (await stored_call(agent, "call_5"))["status"] == "done"
    with sqlite3.connect(path) as con:
        con.execute("ALTER TABLE memories_gone RENAME TO memories")
    out = await recall(peer, "call_6", "kites")
    assert out["status"] == "done" and "Lin likes kites." in out["found"][0]


async def test_a_barge_in_drops_a_recall_but_not_a_remember(agent, connect):
    peer = await connect(agent)
    await peer.send(ev("response.created", response={"id": "resp_1", "status": "in_progress", "output": []}),
                    ev("response.output_item.added", response_id="resp_1", output_index=0,
                       item={"id": "item_A1", "type": "message", "role": "assistant", "status": "in_progress",
                             "content": []}),
                    ev("response.audio_transcript.delta", response_id="resp_1", item_id="item_A1",
                       output_index=0, content_index=0, delta="Let me "),
                    speech_started(),
                    function_call_done("resp_1", "call_r", "remember", {"content": "Lin is back from school."}),
                    function_call_done("resp_1", "call_q", "recall", {"query": "school"}))
    assert (await stored_call(agent, "call_r"))["status"] == "done"
    assert (await stored_call(agent, "call_q"))["status"] == "dropped"
    await peer.no_reply(0.3)
    assert memory_rows(agent) == [("fact", "Lin is back from school.")]


async def test_an_integrators_own_handler_takes_the_name(tmp_path, connect, caplog):
    agent = Agent(agent_config(tmp_path, replies={"function_call_output": True}))
    got = []
    agent.on_function("recall", lambda call: got.append(call.arguments) or {"answer": "from my own store"},
                      schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
    agent.on_function("*", lambda call: got.append(("*", call.name)))
    assert "takes the calls of the built-in memory tool 'recall'" in caplog.text
    async with agent:
        tools = {t["name"]: t for t in agent.toolbox.tools()}
        assert tools["recall"]["parameters"]["required"] == ["q"]  # its schema replaces the built-in
        assert list(tools)[:6] == ["motion", "emotion", "motion_and_emotion", "remember", "recall", "forget"]
        peer = await connect(agent)
        await peer.send(function_call_done("resp_1", "call_1", "recall", {"q": "anything"}))
        out = await output_of(peer, "call_1")
        # now an integrator's function like any other: function:* handlers see it too
        assert out["result"] == {"answer": "from my own store"} and got == [{"q": "anything"}, ("*", "recall")]
        await peer.no_reply(0.2)  # the integrator's function: no response.create from the memory tools
        await peer.send(function_call_done("resp_2", "call_2", "remember", {"content": "Lin waves."}))
        assert (await output_of(peer, "call_2"))["id"] >= 1  # the built-in remember still
        assert got == [{"q": "anything"}, ("*", "recall")]  # "*" never takes a built-in memory tool


async def test_no_storage_no_memory_tools(tmp_path, connect):
    async with Agent(agent_config(tmp_path, storage={"enabled": False})) as agent:
        assert [t["name"] for t in agent.toolbox.tools()] == ["motion", "emotion", "motion_and_emotion"]
        assert any("memory tools" in n for n in agent.toolbox.notes)
        peer = await connect(agent)
        # nothing handles it: an integrator's function without a handler (failed, not sent back)
        await peer.send(function_call_done("resp_1", "call_1", "recall", {"query": "x"}))
        await peer.no_reply(0.3)
        with pytest.raises(StorageError, match="storage is disabled"):
            await agent.recall("x")


def test_cli_tools_offers_the_memory_tools_only_with_storage(tmp_path):
    from test_tools import cli

    out = cli("tools")
    assert out.returncode == 0 and out.stderr == ""
    assert json.loads(out.stdout)["tools"][3:] == memory_tools()
    cfg = tmp_path / "off.toml"
    cfg.write_text("[storage]\nenabled = false\n")
    out = cli("tools", "--config", str(cfg))
    assert out.returncode == 0
    assert [t["name"] for t in json.loads(out.stdout)["tools"]] == ["motion", "emotion", "motion_and_emotion"]
    assert "storage is off: the memory tools (remember, recall, forget) are not offered" in out.stderr


def test_the_schemas_take_what_the_checks_take():
    """A value the schema allows is taken; one it refuses is refused (tools test's checker)."""
    schemas = {t["name"]: t["parameters"] for t in memory_tools()}
    cases = {
        "remember": [{"content": "a"}, {"content": "a", "kind": "episode", "subject": "user", "importance": 0.5},
                     {"content": "a", "importance": 1}, {"content": "a", "importance": 1.5},
                     {"content": "a", "kind": "long_term"}, {"content": 3}, {}, {"content": "a", "importance": "x"}],
        "recall": [{"query": "a"}, {"query": "a", "limit": 20}, {"query": "a", "limit": 3.0},
                   {"query": "a", "limit": 21}, {"query": "a", "limit": 0}, {"query": "a", "limit": 1.5}, {}],
        "forget": [{"query": "a"}, {}, {"query": 1}],
    }
    for name, values in cases.items():
        for args in values:
            try:
                memory_args(name, args)
                taken = True
            except ValueError:
                taken = False
            assert valid(schemas[name], args) == taken, (name, args)
    assert Toolbox(None, lambda topic: False, memory=True).tools() == memory_tools()


def test_the_readme_shows_the_memory_tools_as_they_are():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    shown = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)
             if '"name": "remember"' in block or '"name": "recall"' in block or '"name": "forget"' in block]
    assert shown == memory_tools()


async def test_a_bad_recall_of_an_interrupted_response_is_not_answered_a_bad_remember_is(agent, connect):
    """The user talked over the response: a recall's answer (and the response.create after it)
    would talk over them, so a bad recall gets no output, as a good one would not; remember
    survives the barge-in, so its failed output still tells the model what to correct."""
    peer = await connect(agent)
    await peer.send(ev("response.created", response={"id": "resp_1", "status": "in_progress", "output": []}),
                    speech_started(),
                    function_call_done("resp_1", "call_r", "recall", {"query": "x", "limit": "five"}),
                    function_call_done("resp_1", "call_m", "remember", {}))
    out = await output_of(peer, "call_m")
    assert out["status"] == "failed" and out["field"] == "content"
    await peer.no_reply(0.3)
    assert (await stored_call(agent, "call_r"))["status"] == "failed"
