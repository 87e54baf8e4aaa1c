"""A voice agent that drops its socket mid-response and goes on on a new one: the items are
the conversation's, so each one is one row, continued in place (issue 8, item 7)."""

from __future__ import annotations

import asyncio

import pytest
from helpers import agent_config, settle, wait_for
from traces import ev, response_done, session_created, transcription, user_item

from ticos_agent import Agent


def delta(text: str, ga: bool = False) -> dict:
    return ev("response.audio_transcript.delta", ga, response_id="r1", item_id="A1", output_index=0,
              content_index=0, delta=text)


FIRST_HALF = [session_created("sess_1"), user_item("U1"),
              ev("response.created", response={"id": "r1", "status": "in_progress", "output": []}),
              ev("response.output_item.added", response_id="r1", output_index=0,
                 item={"id": "A1", "type": "message", "role": "assistant", "content": []}),
              delta("Hello, "), delta("wor")]


def second_half(ga: bool = False) -> list[dict]:
    return [session_created("sess_1"), transcription("U1", "hi robot"), delta("ld!", ga),
            ev("response.audio_transcript.done", ga, response_id="r1", item_id="A1", transcript="Hello, world!"),
            response_done("r1")]


async def rows(agent: Agent) -> list[tuple]:
    await settle(agent)
    got = await agent.store.messages(limit=50)
    return [(r["role"], r["content"], r["status"], r["item_id"], r["session_id"]) for r in reversed(got)]


@pytest.fixture
def running(start_agent):
    return lambda grace: start_agent(conversation={"reconnect_grace": grace})


@pytest.mark.parametrize("ga", [False, True], ids=["beta", "ga"])
async def test_continued_within_the_grace_period_is_one_row_per_item(running, connect, ga):
    agent = await running(grace=5.0)
    heard = []
    agent.on_conversation(lambda item_id, role, text: heard.append((item_id, role, text)))
    first = await connect(agent)
    await first.send(*FIRST_HALF)
    await first.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    second = await connect(agent)
    await second.send(*second_half(ga))
    await wait_for(lambda: agent.conversations.open_items() == 0)
    assert await rows(agent) == [("user", "hi robot", "completed", "U1", "sess_1"),
                                 ("assistant", "Hello, world!", "completed", "A1", "sess_1")]
    assert ("A1", "assistant", "ld!") in heard  # the handlers heard the rest too


async def test_continued_after_the_grace_period_updates_the_same_rows(running, connect):
    agent = await running(grace=0.2)
    first = await connect(agent)
    await first.send(*FIRST_HALF)
    await first.close()
    await asyncio.sleep(0.4)
    assert await rows(agent) == [("user", "", "incomplete", "U1", "sess_1"),
                                 ("assistant", "Hello, wor", "incomplete", "A1", "sess_1")]
    ids_before = [r["id"] for r in await agent.store.messages(limit=50)]
    second = await connect(agent)
    await second.send(*second_half())
    await wait_for(lambda: agent.conversations.open_items() == 0)
    assert await rows(agent) == [("user", "hi robot", "completed", "U1", "sess_1"),
                                 ("assistant", "Hello, world!", "completed", "A1", "sess_1")]
    assert [r["id"] for r in await agent.store.messages(limit=50)] == ids_before


async def test_an_item_seen_again_only_in_response_done_gets_its_whole_text(running, connect):
    agent = await running(grace=0.1)
    first = await connect(agent)
    await first.send(*FIRST_HALF)
    await first.close()
    await asyncio.sleep(0.3)
    second = await connect(agent)
    whole = {"id": "A1", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "audio", "transcript": "Hello, world! How are you?"}]}
    await second.send(response_done("r1", output=[whole]))
    await wait_for(lambda: agent.conversations.open_items() == 0)
    assert (await rows(agent))[-1] == ("assistant", "Hello, world! How are you?", "completed", "A1", "sess_1")


async def test_the_agent_stopping_within_the_grace_period_loses_nothing(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, conversation={"reconnect_grace": 60.0}))
    await agent.start()
    first = await connect(agent)
    await first.send(*FIRST_HALF)
    await first.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    await agent.stop()
    import sqlite3

    db = sqlite3.connect(tmp_path / "internal" / "ticos.db")
    got = db.execute("SELECT role, content, status FROM messages ORDER BY rowid").fetchall()
    assert got == [("user", "", "incomplete"), ("assistant", "Hello, wor", "incomplete")]


async def test_a_finished_response_is_not_reopened_by_stragglers(running, connect):
    agent = await running(grace=0.1)
    peer = await connect(agent)
    await peer.send(*FIRST_HALF, response_done("r1", "cancelled"), delta(" late"))
    await peer.close()
    await asyncio.sleep(0.3)
    assert (await rows(agent))[-1] == ("assistant", "Hello, wor", "cancelled", "A1", "sess_1")
