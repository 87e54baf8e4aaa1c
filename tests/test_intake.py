"""Voice turns through a real server, a real WebSocket client and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import pytest
from helpers import db_rows, settle, stored_call, wait_for
from traces import (
    assistant_turn,
    ev,
    function_call_done,
    response_done,
    session_created,
    speech_started,
    transcription,
    transcription_failed,
    user_item,
)


async def _messages(agent, **kw):
    await settle(agent)
    return list(reversed(await agent.store.messages(limit=100, **kw)))  # oldest first


@pytest.mark.parametrize("ga", [False, True], ids=["beta", "ga"])
async def test_voice_turn_is_stored_and_reaches_conversation_handler(agent, connect, ga):
    seen = []
    agent.on_conversation(lambda item_id, role, content: seen.append((item_id, role, content)))
    peer = await connect(agent)
    await peer.send(session_created("sess_A"), user_item("item_U1", ga=ga), transcription("item_U1", "Wave at me!"),
                    *assistant_turn("resp_1", "item_A1", ["Sure, ", "waving ", "now!"], ga=ga))
    rows = await _messages(agent)
    assert [(r["role"], r["content"], r["status"], r["item_id"]) for r in rows] == [
        ("user", "Wave at me!", "completed", "item_U1"),
        ("assistant", "Sure, waving now!", "completed", "item_A1"),
    ]
    assert {r["session_id"] for r in rows} == {"sess_A"}
    assert rows[1]["response_id"] == "resp_1"
    await wait_for(lambda: len(seen) >= 5)
    assert seen == [("item_U1", "user", ""), ("item_U1", "user", "Wave at me!"),
                    ("item_A1", "assistant", "Sure, "), ("item_A1", "assistant", "waving "),
                    ("item_A1", "assistant", "now!")]
    await peer.no_reply()


async def test_transcriptions_out_of_order_each_keep_their_text(agent, connect):
    peer = await connect(agent)
    await peer.send(user_item("item_U1"), user_item("item_U2"),
                    *assistant_turn("resp_1", "item_A1", ["Hello!"]),
                    transcription("item_U2", "second"), transcription("item_U1", "first"))
    rows = await _messages(agent)
    assert [(r["item_id"], r["content"], r["status"]) for r in rows] == [
        ("item_U1", "first", "completed"), ("item_U2", "second", "completed"),
        ("item_A1", "Hello!", "completed")]


async def test_transcription_before_item_is_not_duplicated(agent, connect):
    peer = await connect(agent)
    await peer.send(transcription("item_U1", "early bird"), user_item("item_U1"), user_item("item_U1"))
    rows = await _messages(agent)
    assert [(r["item_id"], r["content"], r["status"]) for r in rows] == [("item_U1", "early bird", "completed")]


async def test_failed_transcription_is_stored_as_failed(agent, connect):
    peer = await connect(agent)
    await peer.send(user_item("item_U1"), transcription_failed("item_U1"))
    rows = await _messages(agent)
    assert [(r["content"], r["status"]) for r in rows] == [("", "transcription_failed")]


async def test_done_transcript_used_when_deltas_are_missing(agent, connect):
    peer = await connect(agent)
    turn = [e for e in assistant_turn("resp_1", "item_A1", ["Only ", "done"]) if not e["type"].endswith("delta")]
    await peer.send(*turn)
    rows = await _messages(agent)
    assert [(r["content"], r["status"]) for r in rows] == [("Only done", "completed")]


async def test_two_connections_interleaving_keep_their_own_state(agent, connect):
    a, b = await connect(agent), await connect(agent)
    turn_a = assistant_turn("resp_a", "item_A", ["alpha ", "one"])
    turn_b = assistant_turn("resp_b", "item_B", ["bravo ", "two"])
    await a.send(session_created("sess_a"))
    await b.send(session_created("sess_b"))
    for ea, eb in zip(turn_a, turn_b):
        await a.send(ea)
        await b.send(eb)
    rows = await _messages(agent)
    by_item = {r["item_id"]: (r["content"], r["session_id"]) for r in rows}
    assert by_item == {"item_A": ("alpha one", "sess_a"), "item_B": ("bravo two", "sess_b")}
    assert [r["item_id"] for r in await _messages(agent, session_id="sess_b")] == ["item_B"]


async def test_barge_in_stores_cancelled_response(agent, connect):
    peer = await connect(agent)
    turn = assistant_turn("resp_1", "item_A1", ["I was saying ", "something long"], status="cancelled")
    before_done = turn[:-4]  # created, item added, first delta pair... cut before the done events
    await peer.send(*before_done, speech_started(), response_done("resp_1", "cancelled"))
    rows = await _messages(agent)
    assert [(r["content"], r["status"]) for r in rows] == [("I was saying something long", "cancelled")]
    assert agent.counters["interruptions"] >= 1


async def test_open_response_is_stored_incomplete_when_socket_closes(agent, connect):
    peer = await connect(agent)
    await peer.send(*assistant_turn("resp_1", "item_A1", ["half a ", "sentence"])[:4])
    await peer.send(user_item("item_U7"))
    await peer.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    rows = await _messages(agent)
    assert [(r["content"], r["status"]) for r in rows] == [("", "pending")]  # the voice agent may come back
    await asyncio.sleep(0.3)  # it did not, within reconnect_grace
    rows = await _messages(agent)
    assert [(r["content"], r["status"]) for r in rows] == [("", "incomplete"), ("half a ", "incomplete")]


async def test_function_call_dispatched_once(agent, connect):
    calls = []
    agent.on_function("get_weather", lambda call: calls.append((call.name, call.call_id, call.arguments)) or "sunny")
    peer = await connect(agent)
    done = function_call_done("resp_1", "call_1", "get_weather", {"city": "Paris"})
    await peer.send(
        ev("response.function_call_arguments.done", response_id="resp_1", item_id="item_call_1",
           call_id="call_1", arguments='{"city": "Paris"}'),
        done, done,
        response_done("resp_1", output=[done["item"]]),
    )
    await settle(agent)
    await wait_for(lambda: calls)
    await asyncio.sleep(0.1)
    assert calls == [("get_weather", "call_1", {"city": "Paris"})]
    assert (await stored_call(agent, "call_1"))["status"] == "done"
    assert agent.counters["duplicate_calls"] == 2




async def test_function_call_only_in_response_done_is_dispatched(agent, connect):
    calls = []
    agent.on_function("lights", lambda call: calls.append(call.call_id))
    peer = await connect(agent)
    item = function_call_done("resp_1", "call_9", "lights", {"on": True})["item"]
    await peer.send(response_done("resp_1", output=[item]), response_done("resp_1", output=[item]))
    await wait_for(lambda: calls)
    await asyncio.sleep(0.05)
    assert calls == ["call_9"]


async def test_incomplete_and_bad_argument_calls_are_answered_not_dispatched(agent, connect):
    calls = []
    agent.on_function("*", lambda call: calls.append(call.name))
    peer = await connect(agent)
    await peer.send(function_call_done("resp_1", "call_1", "lights", {"on": True}, status="incomplete"))
    err = await peer.receive_json()
    assert err["type"] == "error" and err["error"]["code"] == "incomplete_function_call"
    await peer.send(function_call_done("resp_1", "call_2", "lights", "[1, 2]"))
    err = await peer.receive_json()
    assert err["error"]["code"] == "invalid_arguments" and "object" in err["error"]["message"]
    await peer.send(function_call_done("resp_1", "call_3", "motion", {"motion_tag": "wave", "speed": "fast"}))
    err, output = await peer.rejected()  # the robot's own tool: the model hears it too
    assert err["error"]["code"] == "invalid_arguments" and "speed" in err["error"]["message"]
    out = output["item"]
    assert out["call_id"] == "call_3" and json.loads(out["output"])["field"] == "speed"
    await peer.send(function_call_done("resp_1", "call_4", "lights", "{not json"))
    err = await peer.receive_json()
    assert err["error"]["code"] == "invalid_arguments"
    await asyncio.sleep(0.1)
    assert calls == []


async def test_unusable_arguments_of_other_functions_are_answered_as_outcomes_go(start_agent, connect):
    """``lights`` is not the robot's tool: its failed output goes back only when outcomes do."""
    for outcomes in (False, True):
        agent = await start_agent(replies={"function_call_output": outcomes})
        peer = await connect(agent)
        await peer.send(function_call_done("resp_1", "call_l", "lights", "[1, 2]"))
        got = [await peer.receive_json()]
        if outcomes:
            got.append(await peer.receive_json())
        await peer.no_reply(0.3)
        assert sorted(r["type"] for r in got) == ["conversation.item.create"] * outcomes + ["error"]
        if outcomes:
            out = next(r for r in got if r["type"] == "conversation.item.create")["item"]
            assert out["call_id"] == "call_l" and json.loads(out["output"])["status"] == "failed"


async def test_motion_handlers_get_validated_arguments(agent, connect):
    motions, emotions, others = [], [], []
    agent.on_motion(motions.append)
    agent.on_emotion(emotions.append)
    agent.on_function("*", lambda call: others.append(call.name))
    peer = await connect(agent)
    await peer.send(
        function_call_done("resp_1", "call_1", "motion", {"motion_tag": "wave", "repeat": 2}),
        function_call_done("resp_1", "call_2", "motion_and_emotion",
                           {"motion_tag": "nod", "emotion_tag": "happy", "intensity": 1, "speed": 2}),
    )
    await wait_for(lambda: len(motions) == 2 and len(emotions) == 1)
    assert motions[0] == {"motion_tag": "wave", "speed": 1.0, "repeat": 2, "wait": True}
    assert motions[1]["speed"] == 2.0 and isinstance(motions[1]["speed"], float)
    assert emotions[0]["emotion_tag"] == "happy" and emotions[0]["intensity"] == 1.0
    assert others == []


async def test_function_call_output_sent_back_when_configured(tmp_path, connect):
    from helpers import agent_config

    from ticos_agent import Agent

    async with Agent(agent_config(tmp_path, replies={"function_call_output": True})) as agent:
        agent.on_function("add", lambda call: call.arguments["a"] + call.arguments["b"])
        peer = await connect(agent)
        await peer.send(function_call_done("resp_1", "call_1", "add", {"a": 2, "b": 3}))
        reply = await peer.receive_json()
        assert reply["type"] == "conversation.item.create"
        assert reply["item"]["type"] == "function_call_output" and reply["item"]["call_id"] == "call_1"
        import json
        assert json.loads(reply["item"]["output"]) == {"status": "done", "reason": None, "result": 5}


async def test_unknown_event_types_are_counted_quietly(agent, connect):
    peer = await connect(agent)
    await peer.send(ev("rate_limits.updated", rate_limits=[]), ev("some.future.event", x=1))
    await peer.no_reply()
    assert agent.counters["ignored"] == 2


async def test_ever_new_unknown_type_names_do_not_grow_the_database_for_good(agent, connect, caplog):
    """Each type name is stored once, for good (``event_types``; the log's rows go with the
    retention): a peer sending ever new names is logged under one name past the first 256."""
    from ticos_agent.consumers import MAX_OTHER_TYPES, OTHER_TYPES

    caplog.set_level(logging.WARNING, logger="ticos_agent.consumers")
    peer = await connect(agent)
    await peer.send(ev("rate_limits.updated", rate_limits=[]), ev(OTHER_TYPES),  # (the name itself, too)
                    *(ev(f"made.up.{n}", event_id=f"event_u{n}") for n in range(MAX_OTHER_TYPES + 50)),
                    ev("rate_limits.updated", rate_limits=[]), session_created("sess_T"))
    await settle(agent)
    path = agent.store.health()["path"]
    names = [t for (t,) in db_rows(path, "SELECT type FROM event_types")]
    # the first 256 (the catch-all's own name among them) and session.created, a type acted on
    assert len(names) == MAX_OTHER_TYPES + 1 and OTHER_TYPES in names and "session.created" in names
    assert "rate_limits.updated" in names and f"made.up.{MAX_OTHER_TYPES - 3}" in names
    logged = db_rows(path, "SELECT type, event_id FROM events ORDER BY id")
    assert len(logged) == MAX_OTHER_TYPES + 54  # every event is still a line
    assert (OTHER_TYPES, f"event_u{MAX_OTHER_TYPES + 49}") in logged
    assert len([r for r in caplog.records if OTHER_TYPES in r.getMessage()]) == 1


async def test_event_log_has_types_and_ids_but_no_payloads(agent, connect):
    peer = await connect(agent)
    await peer.send(session_created("sess_L"), *assistant_turn("resp_1", "item_A1", ["hi"]))
    await settle(agent)
    con = sqlite3.connect(agent.store.health()["path"])
    rows = con.execute("SELECT type, session_id, response_id FROM events").fetchall()
    items = con.execute("SELECT item_id FROM events WHERE type = 'response.output_item.added'").fetchall()
    columns = [c[1] for c in con.execute("PRAGMA table_info(events)")]
    con.close()
    types = [r[0] for r in rows]
    assert "session.created" in types and "response.done" in types
    assert not any(t.endswith(".delta") for t in types)
    assert ("response.done", "sess_L", "resp_1") in rows
    assert items == [("item_A1",)]
    assert "delta" not in columns and "audio" not in columns


async def test_arguments_streamed_before_a_bare_output_item_are_used(agent, connect):
    calls = []
    agent.on_function("lights", lambda call: calls.append(call.arguments))
    peer = await connect(agent)
    await peer.send(
        ev("response.function_call_arguments.delta", response_id="r1", item_id="fc1", call_id="call_s", delta='{"on"'),
        ev("response.function_call_arguments.done", response_id="r1", item_id="fc1", call_id="call_s",
           arguments='{"on": false}'),
        ev("response.output_item.done", response_id="r1", output_index=0,
           item={"id": "fc1", "type": "function_call", "status": "completed", "name": "lights", "call_id": "call_s"}))
    await wait_for(lambda: calls)
    assert calls == [{"on": False}]


@pytest.mark.parametrize("named", ["before", "between"])
async def test_streamed_arguments_are_used_when_the_session_is_named_in_between(agent, connect, named):
    """The voice agent may name its session (``session.created``) after a call's arguments came
    and before its bare output item: the arguments are the call's all the same."""
    calls = []
    agent.on_function("lights", lambda call: calls.append(call.arguments))
    peer = await connect(agent)
    created = ev("session.created", session={"id": "sess_late", "object": "realtime.session"})
    await peer.send(*([created] if named == "before" else []),
                    ev("response.function_call_arguments.done", response_id="r1", item_id="fc1", call_id="call_s",
                       arguments='{"on": true}'),
                    *([created] if named == "between" else []),
                    ev("response.output_item.done", response_id="r1", output_index=0,
                       item={"id": "fc1", "type": "function_call", "status": "completed", "name": "lights",
                             "call_id": "call_s"}))
    await wait_for(lambda: calls)
    assert calls == [{"on": True}]
    assert json.loads((await stored_call(agent, "call_s"))["arguments"]) == {"on": True}


async def test_long_session_keeps_bounded_state(agent, connect):
    peer = await connect(agent)
    for n in range(600):
        await peer.send(user_item(f"u{n}"), transcription(f"u{n}", f"q{n}"),
                        *assistant_turn(f"r{n}", f"a{n}", ["a", "b"], audio=False))
    await settle(agent)
    conn = next(iter(agent.peers))
    assert agent.conversations.open_items() == 0
    assert agent.turns.active_response(conn) is None
    assert await agent.store.count_messages() == 1200
    assert agent.health()["counters"]["errors"] == 0


async def test_endless_deltas_for_one_item_are_capped(agent, connect):
    from ticos_agent.conversation import MAX_ITEM_CHARS

    peer = await connect(agent)
    chunk = "x" * 65536
    for _ in range(MAX_ITEM_CHARS // len(chunk) + 4):
        await peer.send(ev("response.audio_transcript.delta", response_id="r1", item_id="a1", delta=chunk))
    await peer.send(response_done("r1"))
    rows = await _messages(agent)
    assert len(rows) == 1 and len(rows[0]["content"]) == MAX_ITEM_CHARS
