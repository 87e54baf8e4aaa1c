"""Integrator handlers: sync and async, unsubscribe, errors contained and named."""

from __future__ import annotations

import asyncio
import logging

from helpers import settle, stored_call, wait_for
from traces import ev, function_call_done, transcription, user_item


async def test_raising_handler_is_logged_with_event_and_name_and_intake_goes_on(agent, connect, caplog):
    caplog.set_level(logging.ERROR, logger="ticos_agent")
    good = []

    def exploding_handler(event):
        raise RuntimeError("boom")

    agent.on("conversation.item.created", exploding_handler)
    agent.on("conversation.item.created", lambda event: good.append(event["item"]["id"]))
    peer = await connect(agent)
    await peer.send(user_item("item_U1"), transcription("item_U1", "hello"), user_item("item_U2"))
    await wait_for(lambda: len(good) == 2)
    records = [r.getMessage() for r in caplog.records if "exploding_handler" in r.getMessage()]
    assert len(records) == 2
    assert "event:conversation.item.created" in records[0] and "boom" in records[0]
    await settle(agent)
    assert {m["content"] for m in await agent.store.messages()} == {"hello", ""}
    assert agent.health()["handlers"]["errors"] == 2


async def test_async_handlers_and_unsubscribe(agent, connect):
    got = []

    async def on_created(event):
        await asyncio.sleep(0)
        got.append(event["item"]["id"])

    unsubscribe = agent.subscribe("event:conversation.item.created", on_created)
    peer = await connect(agent)
    await peer.send(user_item("a"))
    await wait_for(lambda: got == ["a"])
    unsubscribe()
    unsubscribe()  # twice is harmless
    await peer.send(user_item("b"))
    await settle(agent)
    assert got == ["a"]


async def test_ga_name_registration_matches_both_spellings(agent, connect):
    got = []
    agent.on("response.output_audio_transcript.delta", lambda e: got.append(e["type"]))
    peer = await connect(agent)
    base = {"item_id": "i", "response_id": "r", "output_index": 0, "content_index": 0, "delta": "x"}
    await peer.send({"type": "response.audio_transcript.delta", **base},
                    {"type": "response.output_audio_transcript.delta", **base})
    await wait_for(lambda: len(got) == 2)
    assert got == ["response.audio_transcript.delta", "response.output_audio_transcript.delta"]


async def test_sync_handlers_see_events_in_arrival_order(agent, connect):
    seen = []
    agent.on("*", lambda e: seen.append(e.get("n")))
    peer = await connect(agent)
    await peer.send(*({"type": "custom.tick", "n": i} for i in range(300)))
    await wait_for(lambda: len(seen) == 300)
    assert seen == list(range(300))


async def test_function_handler_exception_becomes_failed_outcome(agent, connect):
    def broken(call):
        raise ValueError("no such room")

    agent.on_function("lights", broken)
    peer = await connect(agent)
    await peer.send(function_call_done("r1", "call_1", "lights", {"room": "attic"}))

    row = await stored_call(agent, "call_1")
    assert row["status"] == "failed" and "no such room" in str(row["result"])


async def test_a_result_holding_half_a_surrogate_pair_is_stored(agent, connect):
    """A handler may return any str: a file name with a byte that is not UTF-8 comes as a lone
    surrogate (``os.fsdecode``). Its outcome is stored, that character as its JSON escape."""
    import json
    import os

    name = os.fsdecode(b"scan-\xff.png")
    assert "\udcff" in name
    agent.on_function("latest_scan", lambda call: name)
    peer = await connect(agent)
    await peer.send(function_call_done("r1", "call_s", "latest_scan", {}))
    row = await stored_call(agent, "call_s")
    assert row["status"] == "done" and json.loads(row["result"])["result"] == name
    assert "\\udcff" in row["result"]


async def test_function_without_handler_fails_clearly(agent, connect):
    peer = await connect(agent)
    await peer.send(function_call_done("r1", "call_x", "teleport", {}))
    row = await stored_call(agent, "call_x")
    assert row["status"] == "failed" and "no handler registered for function 'teleport'" in str(row["result"])


async def test_handler_calling_sys_exit_does_not_kill_the_handler_thread(agent, connect):
    import sys

    got = []
    agent.on("custom.exit", lambda e: sys.exit(3))
    agent.on("custom.after", lambda e: got.append(1))
    peer = await connect(agent)
    await peer.send({"type": "custom.exit"}, {"type": "custom.after"})
    await wait_for(lambda: got)
    assert agent.alive() and agent.health()["handlers"]["errors"] == 1


async def test_timed_out_async_function_handler_is_cancelled(agent, connect, monkeypatch):
    from ticos_agent import call_outcomes

    monkeypatch.setattr(call_outcomes, "HANDLER_TIMEOUT", 0.2)
    finished = []

    async def hangs(call):
        await asyncio.sleep(5)
        finished.append(call.call_id)

    agent.on_function("hang", hangs)
    peer = await connect(agent)
    await peer.send(function_call_done("r1", "c1", "hang", {}))
    row = await stored_call(agent, "c1")
    assert row["status"] == "failed" and "timed out" in str(row["result"])
    await asyncio.sleep(0.1)
    assert not agent.dispatcher._tasks and finished == []


async def test_reply_for_a_closed_connection_is_not_broadcast(tmp_path, connect):
    from helpers import agent_config

    from ticos_agent import Agent

    async with Agent(agent_config(tmp_path, replies={"function_call_output": True})) as agent:
        release = asyncio.Event()

        async def slow(call):
            await release.wait()
            return "ok"

        agent.on_function("slow", slow)
        a, b = await connect(agent), await connect(agent)
        await a.send(function_call_done("r1", "c1", "slow", {}))
        await asyncio.sleep(0.1)
        await a.close()
        await wait_for(lambda: agent.health()["connections"] == 1)
        release.set()
        await b.no_reply(0.3)


async def test_inline_handlers_run_on_the_loop_and_their_errors_are_contained(agent, connect, caplog):
    import threading

    caplog.set_level(logging.ERROR, logger="ticos_agent")
    loop_thread = threading.get_ident()
    where: list[tuple[str, int]] = []

    def quick(event):
        where.append(("inline", threading.get_ident()))

    def threaded(event):
        where.append(("thread", threading.get_ident()))

    def broken(event):
        raise ValueError("inline boom")

    agent.on("conversation.item.created", quick, inline=True)
    agent.on("conversation.item.created", broken, inline=True)
    agent.on("conversation.item.created", threaded)
    agent.on_function("lights", lambda call: {"on": call.arguments["on"]}, inline=True)
    peer = await connect(agent)
    await peer.send(user_item("u1"), function_call_done("r1", "c1", "lights", {"on": True}))
    await wait_for(lambda: len(where) == 2)
    assert ("inline", loop_thread) in where
    assert [t for kind, t in where if kind == "thread"] != [loop_thread]
    assert any("inline boom" in r.getMessage() and "broken" in r.getMessage() for r in caplog.records)
    row = await stored_call(agent, "c1")
    assert row["status"] == "done" and '"on": true' in row["result"]
    await peer.no_reply()


async def test_one_events_handlers_come_in_the_order_the_readme_gives(agent, connect):
    """For one event: the state change it causes, then its event handlers, then its
    conversation callback; a function call's handler after the event that carried it."""
    seen: list[tuple[str, str]] = []
    agent.on("*", lambda event: seen.append(("event", event["type"])))
    agent.on_state(lambda state, previous: seen.append(("state", state)))
    agent.on_conversation(lambda item_id, role, text: seen.append(("conversation", role)))
    agent.on_function("set_light", lambda call: seen.append(("function", call.name)) or {"on": True})
    peer = await connect(agent)
    await peer.send(ev("input_audio_buffer.speech_started", item_id="u1", audio_start_ms=0))
    await wait_for(lambda: ("event", "input_audio_buffer.speech_started") in seen)
    await peer.send(user_item("u1"), transcription("u1", "turn the light on"))
    await wait_for(lambda: ("conversation", "user") in seen)
    await peer.send(function_call_done("r1", "c1", "set_light", {"on": True}))
    await wait_for(lambda: ("function", "set_light") in seen)
    assert seen.index(("state", "listening")) < seen.index(("event", "input_audio_buffer.speech_started"))
    assert seen.index(("event", "conversation.item.created")) < seen.index(("conversation", "user"))
    heard = seen.index(("event", "conversation.item.input_audio_transcription.completed"))
    assert ("conversation", "user") in seen[heard + 1:]
    assert seen.index(("event", "response.output_item.done")) < seen.index(("function", "set_light"))
