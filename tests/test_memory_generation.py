"""Memory generation against a real chat-completions server on loopback, through a real agent
and WebSocket: success, a slow endpoint, 500s, garbage, a reset connection, none of them losing
a message; a restart; generation off without base_url (said once); a plugged-in summariser;
TicosClient.generate_memory and ticos-client's own config keys."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging

import aiohttp
import pytest
from chat_server import ChatServer
from helpers import agent_config, wait_for
from traces import assistant_turn, transcription, user_item

from ticos_agent import Agent, TicosClient
from ticos_agent.memory.config import DEFAULT_INSTRUCTIONS

FAST = {"retry_delay": 0.01, "timeout": 2.0}


@pytest.fixture
async def chat():
    server = await ChatServer().start()
    yield server
    await server.stop()


def lines(*rounds: int) -> str:
    return "\n".join(f"user: question {n}\nassistant: answer {n}" for n in rounds)


async def talk(peer, *rounds: int) -> None:
    for n in rounds:
        await peer.send(user_item(f"item_U{n}"), transcription(f"item_U{n}", f"question {n}"),
                        *assistant_turn(f"resp_{n}", f"item_A{n}", [f"answer {n}"], audio=False))


async def memories(agent) -> list[str]:
    await agent.store.flush()
    return [m["content"] for m in await agent.store.memories(limit=100)][::-1]  # oldest first


async def until_memories(agent, count: int, timeout: float = 5.0) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await memories(agent)
        if len(found) >= count:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(found)} memories, expected {count}: {found}")
        await asyncio.sleep(0.02)


async def idle(agent) -> None:
    """Until no memory round is running."""
    await wait_for(lambda: agent.memory._task is None or agent.memory._task.done(), timeout=10)


async def test_every_n_rounds_a_summary_of_what_was_said_and_the_memory_before(tmp_path, connect, chat):
    agent = Agent(agent_config(tmp_path, memory={"generation": "client", "base_url": chat.base_url, "model": "tiny",
                                                 "api_key": "sk-local", "every_rounds": 2, **FAST}))
    got: list[tuple] = []
    agent.subscribe("memory", lambda *args: got.append(args))
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        await asyncio.sleep(0.3)
        assert chat.requests == []  # one round is not yet a memory round
        await talk(peer, 2)
        assert await until_memories(agent, 1) == ["summary of: " + lines(1, 2)]
        request = chat.requests[0]
        assert request["headers"]["Authorization"] == "Bearer sk-local"
        body = request["json"]
        assert body["model"] == "tiny" and body["stream"] is False
        assert body["messages"][0] == {"role": "system", "content": DEFAULT_INSTRUCTIONS}
        assert body["messages"][1]["role"] == "user"
        assert "Previous long-term memory:\n(none yet)" in body["messages"][1]["content"]
        await wait_for(lambda: got)
        action, payload = got[0]
        assert action == "stored" and payload["via"] == "generation"
        assert payload["memory"]["kind"] == "long_term" and payload["memory"]["content"].startswith("summary of:")
        await talk(peer, 3)
        await asyncio.sleep(0.3)
        assert len(chat.requests) == 1
        await talk(peer, 4)
        found = await until_memories(agent, 2)
        assert found[1] == "summary of: " + lines(3, 4)  # only what was not summarised yet
        assert f"Previous long-term memory:\nsummary of: {lines(1, 2)}" in chat.requests[1]["json"]["messages"][1][
            "content"]


FAILURES = {
    "slow": ("slow", 3.0),
    "500": ("status", 500),
    "503": ("status", 503),
    "garbage": ("garbage", None),
    "not-chat-shape": ("shape", None),
    "empty-answer": ("ok", "   "),
    "reset": ("reset", None),
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_a_failing_endpoint_loses_nothing(tmp_path, connect, chat, caplog, failure):
    chat.then(failure)
    agent = Agent(agent_config(tmp_path, memory={"generation": "client", "base_url": chat.base_url, "every_rounds": 1,
                                                 "retries": 1, "retry_delay": 0.01, "timeout": 0.5}))
    async with agent:
        peer = await connect(agent)
        with caplog.at_level(logging.WARNING, "ticos_agent.memory"):
            await talk(peer, 1)
            await wait_for(lambda: len(chat.requests) == 2, timeout=5)  # the attempt and one retry
            await idle(agent)
        assert await memories(agent) == []
        assert "summary failed after 2 attempt(s)" in caplog.text and "wait for the next round" in caplog.text
        assert agent.memory.failures == 1
        chat.then(("ok", None))
        await talk(peer, 2)
        assert await until_memories(agent, 1) == ["summary of: " + lines(1, 2)]  # round 1's messages too
        assert [r["behaviour"] for r in chat.requests] == [failure[0], failure[0], "ok"]


async def test_a_slow_answer_times_out_and_the_retry_succeeds(tmp_path, connect, chat):
    chat.then(("slow", 3.0), ("ok", None))
    agent = Agent(agent_config(tmp_path, memory={"generation": "client", "base_url": chat.base_url, "every_rounds": 1,
                                                 "retries": 2, "retry_delay": 0.01, "timeout": 0.3}))
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        assert await until_memories(agent, 1) == ["summary of: " + lines(1)]
        assert [r["behaviour"] for r in chat.requests] == ["slow", "ok"]


async def test_retries_back_off_exponentially(tmp_path, connect, chat):
    chat.then(("status", 500), ("status", 500), ("status", 500), ("ok", None))
    agent = Agent(agent_config(tmp_path, memory={"generation": "client", "base_url": chat.base_url, "every_rounds": 1,
                                                 "retries": 3, "retry_delay": 0.1, "timeout": 2.0}))
    stamps: list[float] = []
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        loop = asyncio.get_running_loop()
        seen = 0
        while seen < 4:
            if len(chat.requests) > seen:
                seen += 1
                stamps.append(loop.time())
            await asyncio.sleep(0.005)
        await until_memories(agent, 1)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39, gaps


async def test_a_running_round_never_holds_up_the_conversation(tmp_path, connect, chat):
    chat.then(("slow", 1.5), ("ok", None))
    agent = Agent(agent_config(tmp_path, memory={"generation": "client", "base_url": chat.base_url, "every_rounds": 1,
                                                 "retries": 0, "timeout": 5.0}))
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        await wait_for(lambda: len(chat.requests) == 1)
        started = asyncio.get_running_loop().time()
        await talk(peer, 2, 3)  # while the summary is being written
        await wait_for(lambda: agent.conversations.stored == 6)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
            assert resp.status == 200
        assert asyncio.get_running_loop().time() - started < 1.0
        assert await memories(agent) == []  # the slow round has not finished
        found = await until_memories(agent, 2, timeout=8)
        assert found == ["summary of: " + lines(1), "summary of: " + lines(2, 3)]  # one round at a time


async def test_after_a_restart_the_unsummarised_messages_are_taken(tmp_path, connect, chat):
    memory = {"generation": "client", "base_url": chat.base_url, "every_rounds": 1, "retries": 0, **FAST}
    agent = Agent(agent_config(tmp_path, memory=memory))
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        await until_memories(agent, 1)
        chat.then(("status", 500))
        await talk(peer, 2)
        await wait_for(lambda: len(chat.requests) == 2)
        await idle(agent)
    chat.then(("ok", None))
    agent = Agent(agent_config(tmp_path, memory=memory))
    async with agent:
        peer = await connect(agent)
        await talk(peer, 3)
        found = await until_memories(agent, 2)
    assert found == ["summary of: " + lines(1), "summary of: " + lines(2, 3)]


async def test_generation_client_without_base_url_is_off_and_says_so_once(tmp_path, connect, caplog):
    agent = Agent(agent_config(tmp_path, memory={"generation": "client", "every_rounds": 1}))
    with caplog.at_level(logging.INFO, "ticos_agent.memory"):
        async with agent:
            peer = await connect(agent)
            await talk(peer, 1, 2, 3)
            await wait_for(lambda: agent.conversations.stored == 6)
            await asyncio.sleep(0.2)
            assert await agent.generate_memory() is None
            assert await memories(agent) == []
    said = [r for r in caplog.records if "generation is off" in r.getMessage()]
    assert len(said) == 1 and "memory.base_url is empty" in said[0].getMessage()


async def test_generation_off_by_default_sends_nothing(tmp_path, connect, chat):
    agent = Agent(agent_config(tmp_path, memory={"base_url": chat.base_url, "every_rounds": 1}))
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1, 2)
        await wait_for(lambda: agent.conversations.stored == 4)
        await asyncio.sleep(0.3)
        assert await agent.generate_memory() is None
    assert chat.requests == []


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_integrators_summariser_instead(tmp_path, connect, kind):
    calls: list[tuple] = []

    def summarise(messages, latest):
        calls.append(([(m["role"], m["content"]) for m in messages], latest))
        return f"remembered {len(calls)}"

    async def asummarise(messages, latest):
        await asyncio.sleep(0.01)
        return summarise(messages, latest)

    agent = Agent(agent_config(tmp_path, memory={"every_rounds": 2}))
    agent.set_summariser(summarise if kind == "sync" else asummarise)
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1, 2)
        assert await until_memories(agent, 1) == ["remembered 1"]
        assert calls[0] == ([("user", "question 1"), ("assistant", "answer 1"), ("user", "question 2"),
                             ("assistant", "answer 2")], "")
        await talk(peer, 3)
        await wait_for(lambda: agent.conversations.stored == 6)
        memory = await agent.generate_memory()  # now, without waiting for the second round
        assert memory is not None and memory.content == "remembered 2" and memory.kind == "long_term"
        assert calls[1] == ([("user", "question 3"), ("assistant", "answer 3")], "remembered 1")
        assert await agent.generate_memory() is None  # nothing new


async def test_a_summariser_that_raises_or_answers_nothing_loses_nothing(tmp_path, connect):
    answers = [RuntimeError("model crashed"), None, "", "kept"]
    taken: list[int] = []

    def summarise(messages, latest):
        taken.append(len(messages))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    agent = Agent(agent_config(tmp_path, memory={"every_rounds": 1, "retries": 0, "retry_delay": 0.01}))
    agent.set_summariser(summarise)
    async with agent:
        peer = await connect(agent)
        for n in (1, 2, 3, 4):
            await talk(peer, n)
            await wait_for(lambda n=n: len(taken) == n)
            await idle(agent)
        assert await until_memories(agent, 1) == ["kept"]
    assert taken == [2, 4, 6, 8]


def test_ticos_client_generate_memory_and_its_own_config_keys(tmp_path, _isolated_home):
    asyncio.run(_ticos_client(tmp_path, _isolated_home))


async def _ticos_client(tmp_path, home):
    ticos = home / ".config" / "ticos"
    ticos.mkdir(parents=True)
    (ticos / "config.toml").write_text('[model]\nenable_memory_generation = "client"\n'
                                       'history_conversation_length = 4\nmemory_instructions = "from toml"\n')
    (ticos / "session_config").write_text(json.dumps({"model": {"memory_instructions": "Remember {{conversation}}"}}))
    async with ChatServer() as chat:
        config = {"memory": {"base_url": chat.base_url, "history_rounds": 8, "every_rounds": 50, **FAST},
                  "storage": {"dir": str(tmp_path / "db")}, "audio": {"enabled": False}}
        client = TicosClient(port=0, config=config)
        client.enable_local_storage()
        assert not client.generate_memory()  # not running
        assert await asyncio.to_thread(client.start)
        try:
            memory_cfg = client.agent.config.memory
            assert memory_cfg.generation == "client"  # from ticos-client's config.toml
            assert memory_cfg.history_rounds == 8  # the agent's config wins
            assert memory_cfg.instructions == "Remember {{conversation}}"  # session_config's, over config.toml's
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(f"http://127.0.0.1:{client.port}/realtime")
                for event in [user_item("item_U1"), transcription("item_U1", "question 1"),
                              *assistant_turn("resp_1", "item_A1", ["answer 1"], audio=False)]:
                    await ws.send_str(json.dumps(event))
                await asyncio.sleep(0.3)
                assert await asyncio.to_thread(client.generate_memory)
                assert not await asyncio.to_thread(client.generate_memory)  # nothing new
                await ws.close()
            body = chat.requests[0]["json"]
            assert body["messages"][0]["content"] == "Remember " + lines(1)
            assert "Latest conversation" not in body["messages"][1]["content"]
        finally:
            await asyncio.to_thread(client.stop)


def test_the_readmes_memory_example_is_a_config_that_loads():
    import tomllib
    from pathlib import Path

    from ticos_agent.config import from_dict

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Memory: summaries, session_config, priming"):]
    start = section.index("```toml") + len("```toml")
    config = from_dict(tomllib.loads(section[start:section.index("```", start)]), hardware=False)
    assert config.memory.generation == "client" and config.memory.base_url == "http://127.0.0.1:11434/v1"
    assert config.memory.every_rounds == 6 and config.memory.prime == "off"


def test_memory_config_checks_and_defaults(monkeypatch):
    from ticos_agent.config import ConfigErrors, from_dict, to_toml

    cfg = from_dict({"memory": {"history_rounds": 9}}, hardware=False).memory
    assert cfg.every_rounds == 4 and cfg.generation == "off" and cfg.prime == "off" and cfg.base_url is None
    assert from_dict({"memory": {"history_rounds": 1}}, hardware=False).memory.every_rounds == 1
    with pytest.raises(ConfigErrors) as caught:
        from_dict({"memory": {"generation": "server", "base_url": "ftp://x", "every_rounds": 0, "prime": "sytem",
                              "api_key": 5, "timout": 3}}, hardware=False)
    keys = {e.key: e for e in caught.value.errors}
    assert set(keys) == {"memory.generation", "memory.base_url", "memory.every_rounds", "memory.prime",
                         "memory.api_key", "memory.timout"}
    assert "did you mean 'system'" in keys["memory.prime"].expected
    assert "did you mean 'timeout'" in keys["memory.timout"].expected
    assert keys["memory.api_key"].value == "********"
    config = from_dict({"memory": {"api_key": "sk-secret", "base_url": "http://h:1/v1/"}}, hardware=False)
    assert config.memory.base_url == "http://h:1/v1"
    assert "sk-secret" not in to_toml(config) and "sk-secret" in to_toml(config, show_secrets=True)
    assert config.memory.key == "sk-secret"
    monkeypatch.setenv("TICOS_MEMORY_API_KEY", "sk-env")
    assert from_dict({}, hardware=False).memory.key == "sk-env"
    assert config.memory.key == "sk-secret"  # the config's own wins


@pytest.mark.parametrize("env", ["sk-from-env", None])
async def test_the_api_key_from_the_environment_or_none(tmp_path, connect, chat, monkeypatch, env):
    if env:
        monkeypatch.setenv("TICOS_MEMORY_API_KEY", env)
    else:
        monkeypatch.delenv("TICOS_MEMORY_API_KEY", raising=False)
    agent = Agent(agent_config(tmp_path, memory={"generation": "client", "base_url": chat.base_url, "every_rounds": 1,
                                                 **FAST}))
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        await until_memories(agent, 1)
    headers = chat.requests[0]["headers"]
    assert headers.get("Authorization") == (f"Bearer {env}" if env else None)
    assert "model" not in chat.requests[0]["json"]  # none configured: none sent


async def test_a_backlog_is_caught_up_in_requests_a_small_model_can_take(tmp_path, connect):
    from ticos_agent.memory.generation import MAX_BATCH_CHARS, MAX_MESSAGE_CHARS

    batches: list[list[tuple[str, int]]] = []
    working = False

    def summarise(messages, latest):
        if not working:
            raise RuntimeError("the model is not loaded yet")
        batches.append([(m["content"][:12], len(m["content"])) for m in messages])
        return f"memory {len(batches)}"

    agent = Agent(agent_config(tmp_path, memory={"every_rounds": 1, "retries": 0, "retry_delay": 0.01}))
    agent.set_summariser(summarise)
    async with agent:
        peer = await connect(agent)
        long = "x" * 5000
        for n in range(1, 9):  # 16 messages wait: 8 per request at most (every_rounds 1)
            await peer.send(user_item(f"item_U{n}"), transcription(f"item_U{n}", f"question {n}"),
                            *assistant_turn(f"resp_{n}", f"item_A{n}", [f"answer {n}"], audio=False))
            await wait_for(lambda n=n: agent.conversations.stored == 2 * n)
            await idle(agent)
        for n in (9, 10, 11, 12, 13):  # 10 long messages: fewer per request
            await peer.send(user_item(f"item_U{n}"), transcription(f"item_U{n}", f"question {n} {long}"),
                            *assistant_turn(f"resp_{n}", f"item_A{n}", [f"answer {n} {long}"], audio=False))
            await wait_for(lambda n=n: agent.conversations.stored == 2 * n)
            await idle(agent)
        assert batches == [] and await memories(agent) == []
        working = True
        await talk(peer, 14)
        await until_memories(agent, 1)
        await idle(agent)
        stored = await memories(agent)
    taken = [text for batch in batches for text, _ in batch]
    assert taken == [f"{w} {n} xxxxx"[:12] if 9 <= n <= 13 else f"{w} {n}"
                     for n in range(1, 15) for w in ("question", "answer")]  # each once, in order
    assert all(len(b) <= 8 for b in batches) and len(batches[0]) == 8 and len(batches[1]) == 8
    assert all(size <= MAX_MESSAGE_CHARS for b in batches for _, size in b)
    assert all(sum(size for _, size in b) <= MAX_BATCH_CHARS for b in batches)
    assert stored == [f"memory {i}" for i in range(1, len(batches) + 1)]
