"""agent.remember/recall/forget, the `memory` handler topic, emit_memory, and TicosClient's
blocking equivalents: real agents, real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from helpers import agent_config, free_port, wait_for

from ticos_agent import Agent, TicosClient
from ticos_agent.errors import BadMemory, StorageError, TicosError
from ticos_agent.memory.api import stored_payload
from ticos_agent.memory.model import Hit, Memory


async def test_remember_recall_forget_and_the_memory_topic(agent):
    changes: list[tuple[str, dict]] = []
    unsubscribe = agent.on_memory(lambda action, payload: changes.append((action, payload)))
    lin = await agent.remember("The user's name is Lin.", subject="user", key="name", value="Lin", confidence=0.8)
    assert isinstance(lin, Memory) and lin.id >= 1 and lin.kind == "fact"
    assert (lin.subject, lin.key, lin.value, lin.confidence) == ("user", "name", "Lin", 0.8)
    trip = await agent.remember("  We went to the zoo and saw a giraffe.  ", "episode", title="Zoo",
                                importance=0.7)
    assert trip.content == "We went to the zoo and saw a giraffe." and trip.title == "Zoo"
    summary = await agent.remember("Lin is seven; her favourite animal is the giraffe.", "long_term")
    assert summary.kind == "long_term"

    hits = await agent.recall("giraffe", limit=5)
    assert hits and all(isinstance(h, Hit) for h in hits)
    assert {h.text for h in hits if h.source == "memory"} == {trip.content, summary.content}
    assert [h.source for h in hits] == sorted((h.source for h in hits), key=lambda s: s != "memory")
    assert len(await agent.recall("giraffe", limit=1)) == 1

    await wait_for(lambda: len(changes) == 3)
    assert [a for a, _ in changes] == ["stored"] * 3
    assert changes[0][1] == {"memory": lin.as_dict(), "via": "api"}

    assert await agent.forget(ids=[lin.id]) == 1
    assert await agent.forget(ids=[lin.id]) == 0  # already gone: nothing told
    assert await agent.forget(query="giraffe") >= 1
    await wait_for(lambda: len(changes) == 5)
    assert changes[3] == ("forgotten", {"count": 1, "query": None, "ids": [lin.id], "everything": False, "via": "api"})
    assert changes[4][1]["query"] == "giraffe"
    assert [h for h in await agent.recall("giraffe") if h.source == "memory"] == []
    await agent.remember("Lin likes kites.")
    assert await agent.forget(everything=True) == 1
    unsubscribe()
    await agent.remember("after unsubscribe")
    await asyncio.sleep(0.1)
    assert [a for a, _ in changes[5:]] == ["stored", "forgotten"] and changes[6][1]["everything"] is True


async def test_recall_puts_memories_before_messages(agent, connect):
    from traces import transcription, user_item

    peer = await connect(agent)
    await peer.send(user_item("u1"), transcription("u1", "I really like volcanoes"))
    await agent.store.flush()
    await agent.remember("Lin loves volcanoes.")
    hits = await agent.recall("volcanoes")
    assert [h.source for h in hits] == ["memory", "message"]
    assert hits[1].role == "user" and "volcanoes" in hits[1].text
    assert [h.source for h in await agent.recall("volcanoes", messages=False)] == ["memory"]


@pytest.mark.parametrize(("call", "field", "words"), [
    (lambda a: a.remember(""), "content", "content must not be empty"),
    (lambda a: a.remember(None), "content", "content is required"),
    (lambda a: a.remember("x", "dream"), "kind", "kind must be one of long_term, fact, episode"),
    (lambda a: a.remember("x", confidence=1.5), "confidence", "from 0 to 1"),
    (lambda a: a.remember("x", importance=float("nan")), "importance", "from 0 to 1"),
    (lambda a: a.remember("x", subject="s" * 201), "subject", "longer than 200"),
    (lambda a: a.remember("x", colour="red"), "colour", "unknown field(s) 'colour'"),
    (lambda a: a.recall(""), "query", "query must not be empty"),
    (lambda a: a.recall("x", limit=0), "limit", "limit must be from 1 to 50"),
    (lambda a: a.recall("x", limit=True), "limit", "whole number"),
    (lambda a: a.forget(), "query", "exactly one of"),
    (lambda a: a.forget("x", everything=True), "everything", "(got query and everything)"),
    (lambda a: a.forget("x", ids=[1]), "ids", "(got query and ids)"),
    (lambda a: a.forget(ids=["3"]), "ids", "whole numbers"),
    (lambda a: a.forget(ids=3), "ids", "a list"),
])
async def test_bad_fields_raise_bad_arguments_naming_the_field(agent, call, field, words):
    with pytest.raises(BadMemory) as info:
        await call(agent)
    assert info.value.field == field and words in str(info.value)
    assert isinstance(info.value, TicosError) and isinstance(info.value, ValueError)
    assert await agent.store.memories() == []


async def test_without_storage_or_when_stopped_a_clear_storage_error(tmp_path):
    agent = Agent(agent_config(tmp_path))
    with pytest.raises(StorageError, match="not running"):
        await agent.remember("x")
    async with Agent(agent_config(tmp_path / "off", storage={"enabled": False})) as off:
        with pytest.raises(StorageError, match="storage is disabled"):
            await off.recall("x")
        with pytest.raises(StorageError, match="storage is disabled"):
            await off.forget(everything=True)


async def test_a_failing_store_raises_storage_error_and_nothing_is_told(agent):
    changes = []
    agent.on_memory(lambda *args: changes.append(args))
    with sqlite3.connect(agent.store.health()["path"]) as con:
        con.execute("ALTER TABLE memories RENAME TO memories_gone")
    with pytest.raises(StorageError):
        await agent.recall("anything")
    with pytest.raises(StorageError):
        await agent.remember("lost?")
    await asyncio.sleep(0.1)
    assert changes == []


async def test_emit_memory_is_what_generation_is_given(agent):
    """memory generation stores through the store and tells the handlers with emit_memory."""
    changes = []
    agent.on_memory(lambda action, payload: changes.append((action, payload)))
    emit = agent.emit_memory  # the narrow callable handed to generation
    summary = await agent.store.remember("long_term", "Lin talked about giraffes.")
    emit("stored", stored_payload(summary, "generation"))
    await wait_for(lambda: changes)
    assert changes == [("stored", {"memory": summary.as_dict(), "via": "generation"})]


async def test_an_async_and_a_broken_memory_handler(agent, caplog):
    seen = []

    async def slow(action, payload):
        await asyncio.sleep(0.01)
        seen.append(action)

    agent.on_memory(slow)

    @agent.on_memory
    def broken(action, payload):
        raise RuntimeError("handler bug")

    memory = await agent.remember("Lin plays piano.")
    await wait_for(lambda: seen == ["stored"])
    await wait_for(lambda: "handler bug" in caplog.text)
    assert [h.id for h in await agent.recall("piano") if h.source == "memory"] == [str(memory.id)]


def test_ticos_client_remembers_recalls_forgets_from_its_own_thread(tmp_path):
    client = TicosClient(port=free_port())
    with pytest.raises(StorageError, match="not running"):
        client.recall("x")
    changes = []
    client.set_memory_handler(lambda action, payload: changes.append((action, payload["via"])))
    client.enable_local_storage(str(tmp_path / "db"))
    assert client.start(), client.start_error
    try:
        memory = client.remember("The user's name is Lin.", subject="user")
        assert isinstance(memory, Memory) and memory.subject == "user"
        hits = client.recall("Lin", limit=3)
        assert hits[0].text == "The user's name is Lin." and hits[0].source == "memory"
        with pytest.raises(BadMemory):
            client.remember("")
        assert client.forget(query="Lin") == 1
        assert client.forget(ids=[memory.id]) == 0
        deadline = time.monotonic() + 3
        while len(changes) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert changes == [("stored", "api"), ("forgotten", "api")]
    finally:
        client.stop()
