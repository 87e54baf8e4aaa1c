"""Priming end to end through the WebSocket: what the robot remembers reaches a voice agent that
connects, as a user or system item, once per session; nothing when off or nothing is remembered;
the echoed item is not stored as something the user said; a peer gone before the send is harmless."""

from __future__ import annotations

import asyncio
import logging

import pytest
from helpers import agent_config, wait_for
from traces import assistant_turn, ev, session_created, transcription, user_item

from ticos_agent import Agent


async def remembered(agent) -> None:
    await agent.store.remember("long_term", "The user is Lin, seven years old, who loves dinosaurs.")
    await agent.store.remember("fact", "The user's name is Lin.", subject="user", key="name", value="Lin")
    await agent.store.remember("fact", "Lin has a cat called Mochi.", subject="user")


async def primed(peer, timeout: float = 2.0) -> dict:
    event = await peer.receive_json(timeout)
    assert event["type"] == "conversation.item.create", event
    return event


@pytest.mark.parametrize("role", ["user", "system"])
async def test_a_voice_agent_that_connects_is_told_what_the_robot_remembers(tmp_path, connect, role):
    agent = Agent(agent_config(tmp_path, memory={"prime": role}))
    async with agent:
        await remembered(agent)
        peer = await connect(agent)
        event = await primed(peer)
        item = event["item"]
        assert item["type"] == "message" and item["role"] == role
        assert item["id"].startswith("ticos_memory_") and len(item["id"]) <= 32
        assert event["event_id"].startswith("event_ticos_")
        [part] = item["content"]
        assert part["type"] == "input_text"
        text = part["text"]
        assert "The user is Lin, seven years old, who loves dinosaurs." in text
        assert "- Lin has a cat called Mochi.\n- The user's name is Lin." in text  # facts, newest first
        assert "The last exchanges" not in text  # prime_rounds = 0
        await peer.send(session_created("sess_1"))  # the session the item went to: not sent twice
        await peer.no_reply(0.3)
        await peer.send(session_created("sess_1"))
        await peer.no_reply(0.2)
        await peer.send(session_created("sess_2"))  # a new upstream session on the same socket
        again = await primed(peer)
        assert again["item"]["content"] == item["content"] and again["item"]["id"] != item["id"]
        # the voice agent echoes the item: it is not something the user said
        await peer.send(ev("conversation.item.created", item={**item, "status": "completed"}),
                        ev("conversation.item.done", item={**item, "status": "completed"}))
        await asyncio.sleep(0.1)
        await agent.store.flush()
        assert await agent.store.count_messages() == 0
        assert agent.memory is not None and agent.memory.rounds == 0  # nor a round


async def test_a_session_created_first_primes_once(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, memory={"prime": "user"}))
    async with agent:
        await remembered(agent)
        peer = await connect(agent)
        await primed(peer)
        await peer.send(session_created("sess_1"))
        await peer.no_reply(0.3)
        second = await connect(agent)  # every voice agent's socket gets its own
        await primed(second)


async def test_the_last_rounds_go_with_it_when_asked(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, memory={"prime": "user", "prime_rounds": 1}))
    async with agent:
        first = await connect(agent)
        await first.no_reply(0.3)  # nothing remembered yet: nothing sent
        for n in (1, 2):
            await first.send(user_item(f"item_U{n}"), transcription(f"item_U{n}", f"question {n}"),
                             *assistant_turn(f"resp_{n}", f"item_A{n}", [f"answer {n}"], audio=False))
        await wait_for(lambda: agent.conversations.stored == 4)
        await first.close()
        peer = await connect(agent)
        text = (await primed(peer))["item"]["content"][0]["text"]
        assert text == "The last exchanges:\nuser: question 2\nassistant: answer 2"


async def test_off_sends_nothing(tmp_path, connect):
    agent = Agent(agent_config(tmp_path))
    async with agent:
        await remembered(agent)
        peer = await connect(agent)
        await peer.no_reply(0.3)
        await peer.send(session_created("sess_1"))
        await peer.no_reply(0.3)


async def test_nothing_remembered_sends_nothing(tmp_path, connect, caplog):
    agent = Agent(agent_config(tmp_path, memory={"prime": "system", "prime_rounds": 3}))
    with caplog.at_level(logging.INFO, "ticos_agent.memory"):
        async with agent:
            peer = await connect(agent)
            await peer.no_reply(0.3)
            await peer.send(session_created("sess_9"))
            await peer.no_reply(0.3)
    assert "nothing remembered yet" in caplog.text


async def test_a_peer_gone_before_the_send_is_harmless(tmp_path, connect, caplog):
    agent = Agent(agent_config(tmp_path, memory={"prime": "user"}))
    with caplog.at_level(logging.WARNING):
        async with agent:
            await remembered(agent)
            for _ in range(5):
                gone = await connect(agent)
                await gone.ws.close()
            await asyncio.sleep(0.2)
            peer = await connect(agent)
            await primed(peer)  # still serving, still priming
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
