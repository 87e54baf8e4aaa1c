"""Realtime traces the agent has never seen, played the way an outside checker would.

A real agent on a loopback port, a real aiohttp WebSocket client, a real SQLite file, and a robot
of simulated ``mock`` actuators whose ``history`` says what each one was told. Expectations come
from the design and the README, not from the code: voice turns in both spellings, barge-in,
streamed and odd function calls, a long session, hostile frames, a reconnect mid-response.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import helpers
import pytest
from helpers import calls, health, messages, messages_all, moves, ops, replies, settle, wait_for
from traces import Voice, ev, pcm_b64

from ticos_agent import Agent
from ticos_agent.consumers import MAX_LOGGED

# the robot (conftest's ``robot``): an arm (position) and a face (light), simulated ``mock`` actuators

# --- what came back ------------------------------------------------------------------------------

def codes(frames: list[dict]) -> list[str]:
    return [f["error"]["code"] for f in frames if f.get("type") == "error"]


def outputs(frames: list[dict]) -> dict[str, dict]:
    return {f["item"]["call_id"]: json.loads(f["item"]["output"]) for f in frames
            if f.get("type") == "conversation.item.create" and f["item"].get("type") == "function_call_output"}


# --- 6. reconnect mid-response ----------------------------------------------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_barge_in_on_the_new_socket_stops_the_continued_response(robot, connect, ga):
    """The socket drops while resp_1 streams and its long motion runs; the voice agent goes on
    on a new socket, and the user talks over the robot there: the interrupted response's motion
    stops (design: barge-in drops the interrupted response's motions; ids are the conversation's)."""
    agent = await robot(conversation={"reconnect_grace": 5.0})
    v = Voice(ga, "sess_rc")
    first = await connect(agent)
    await first.send(*v.session(), *v.user("item_U1", "Dance for me"), v.created("resp_1"),
                     *v.said("resp_1", "item_A1", ["Here ", "I "], finish=False),
                     *v.call("resp_1", "item_F1", "call_sway", "motion", '{"motion_tag":"sway","repeat":20}'))
    await wait_for(lambda: moves(agent))  # the 10 s motion runs
    await first.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    second = await connect(agent)
    await second.send(*v.session(), ev(v.t("response.audio_transcript.delta"), response_id="resp_1",
                                       item_id="item_A1", output_index=0, content_index=0, delta="go!"),
                      ev("input_audio_buffer.speech_started", audio_start_ms=3000, item_id="item_U2"))
    rows = await calls(agent, "call_sway")
    assert rows["call_sway"]["status"] == "dropped"
    await second.send(v.done("resp_1", [v.message("item_A1", "Here I go!", "incomplete")], status="cancelled"))
    assert await replies(second) == []
    assert await messages(agent) == [("user", "Dance for me", "completed", "item_U1"),
                                     ("assistant", "Here I go!", "cancelled", "item_A1")]


async def test_one_barge_in_stops_every_cut_off_response_and_counts_once(robot, connect):
    """Two sockets dropped mid-response (each with a motion running or queued), the voice agent
    goes on with a third response on a new socket, and the user talks over it: all three stop,
    their later calls are dropped, and that is one interruption, not three."""
    agent = await robot(conversation={"reconnect_grace": 5.0})
    v = Voice(True, "sess_two")
    for n in (1, 2):
        old = await connect(agent)
        await old.send(*v.session(), v.created(f"resp_{n}"),
                       *v.said(f"resp_{n}", f"item_A{n}", ["Going "], finish=False),
                       *v.call(f"resp_{n}", f"item_F{n}", f"call_{n}", "motion", '{"motion_tag":"sway","repeat":20}'))
        await old.close()
        await wait_for(lambda: agent.health()["connections"] == 0)
    now = await connect(agent)
    await now.send(*v.session(), v.created("resp_3"),
                   ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U9"))
    await settle(agent)
    assert agent.counters["interruptions"] == 1
    assert {agent.turns.interrupted(f"resp_{n}") for n in (1, 2, 3)} == {"barge-in"}
    await now.send(*v.call("resp_1", "item_F1b", "call_late", "motion", '{"motion_tag":"wave"}'))
    rows = await calls(agent, "call_1", "call_2", "call_late")
    assert rows["call_2"]["status"] == rows["call_late"]["status"] == "dropped"
    assert rows["call_1"]["status"] == "dropped"  # its 10 s sway stopped where it was
    assert moves(agent)  # a sway had begun,
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")  # and the arm rests


async def test_a_barge_in_on_a_new_socket_stops_the_half_open_old_ones_response(robot, connect):
    """The voice agent's old socket is half-open (not closed yet, heartbeat pending) while it goes
    on with the same session on a new one, audio off: a barge-in there stops the old socket's
    response and its motion. A socket of another session is not touched by it."""
    agent = await robot()
    v = Voice(True, "sess_half")
    old = await connect(agent)
    await old.send(*v.session(), v.created("resp_1"),
                   *v.call("resp_1", "item_F1", "call_1", "motion", '{"motion_tag":"sway","repeat":20}'))
    await wait_for(lambda: moves(agent))
    other = await connect(agent)
    await other.send(*Voice(True, "sess_other").session(), ev("input_audio_buffer.speech_started",
                                                              audio_start_ms=10, item_id="item_X"))
    await settle(agent)
    assert agent.turns.interrupted("resp_1") is None and agent.counters["interruptions"] == 0
    new = await connect(agent)
    await new.send(*v.session(), ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"))
    rows = await calls(agent, "call_1")
    assert rows["call_1"]["status"] == "dropped" and agent.turns.interrupted("resp_1") == "barge-in"
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")
    await new.send(ev("input_audio_buffer.speech_started", audio_start_ms=900, item_id="item_U3"))
    await settle(agent)
    assert agent.counters["interruptions"] == 1  # not stopped again while the old socket hangs on
    assert not old.ws.closed


async def test_a_response_done_on_the_new_socket_is_done_for_the_half_open_old_one(robot, connect):
    """resp_1 began on socket A (half-open now); its response.done comes on socket B, then resp_2
    there, and the user talks over resp_2: resp_1 is finished, so its motion runs to its end."""
    agent = await robot()
    v = Voice(True, "sess_doneB")
    args = '{"motion_tag":"sway","repeat":2}'
    old = await connect(agent)
    await old.send(*v.session(), v.created("resp_1"), *v.call("resp_1", "item_F1", "call_s", "motion", args))
    await wait_for(lambda: moves(agent))
    new = await connect(agent)
    await new.send(*v.session(), v.done("resp_1", [v.call_item("item_F1", "call_s", "motion", args)]),
                   v.created("resp_2"),
                   ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"))
    assert (await calls(agent, "call_s"))["call_s"]["status"] == "done"
    assert moves(agent) == [20, 0, 20, 0]
    assert agent.turns.interrupted("resp_1") is None and agent.turns.interrupted("resp_2") == "barge-in"
    assert not old.ws.closed


async def test_response_done_on_the_new_socket_gives_the_whole_text(robot, connect):
    """Cut after "Hello, ": the voice agent's response.done on the new socket (within the grace)
    carries the item's whole transcript; the stored row has it, not the half the first socket saw."""
    agent = await robot(conversation={"reconnect_grace": 5.0})
    v = Voice(True, "sess_rc2")
    first = await connect(agent)
    await first.send(*v.session(), v.created("resp_1"), *v.said("resp_1", "item_A1", ["Hello, "], finish=False))
    await first.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    second = await connect(agent)
    await second.send(*v.session(), v.done("resp_1", [v.message("item_A1", "Hello, world!")]))
    assert await replies(second) == []
    assert await messages(agent) == [("assistant", "Hello, world!", "completed", "item_A1")]


async def test_a_message_only_whole_in_its_done_events_is_stored(robot, connect):
    """An item announced by output_item.added whose words come only in output_item.done and
    response.done (no transcript deltas): the words are stored, not lost."""
    agent = await robot()
    v = Voice(False, "sess_nod")
    peer = await connect(agent)
    await peer.send(v.created("resp_1"),
                    ev("response.output_item.added", response_id="resp_1", output_index=0,
                       item={"id": "item_A1", "type": "message", "role": "assistant", "content": []}),
                    ev("response.output_item.done", response_id="resp_1", output_index=0,
                       item=v.message("item_A1", "Just the words.")),
                    v.done("resp_1", [v.message("item_A1", "Just the words.")]))
    assert await replies(peer) == []
    assert await messages(agent) == [("assistant", "Just the words.", "completed", "item_A1")]


async def test_a_call_streaming_when_the_socket_drops_is_finished_on_the_new_one(robot, connect):
    """Argument deltas on the old socket, the rest of the call and response.done on the new one:
    the call runs once, with the whole arguments."""
    agent = await robot(conversation={"reconnect_grace": 5.0})
    seen = []
    agent.on_motion(seen.append)
    v = Voice(True, "sess_rc3")
    args = '{"motion_tag": "wave", "repeat": 2}'
    call = v.call("resp_1", "item_F1", "call_w", "motion", args, pieces=6)
    first = await connect(agent)
    await first.send(*v.session(), *v.user("item_U1", "wave twice"), v.created("resp_1"),
                     *v.said("resp_1", "item_A1", ["Wav"], finish=False), *call[:4])
    await first.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    second = await connect(agent)
    await second.send(*v.session(), ev(v.t("response.audio_transcript.delta"), response_id="resp_1",
                                       item_id="item_A1", output_index=0, content_index=0, delta="ing!"),
                      *call[4:],
                      v.done("resp_1", [v.message("item_A1", "Waving!"), v.call_item("item_F1", "call_w", "motion",
                                                                                      args)]))
    assert await replies(second) == []
    rows = await calls(agent, "call_w")
    assert rows["call_w"]["status"] == "done" and rows["call_w"]["arguments"] == args
    assert seen == [{"motion_tag": "wave", "speed": 1.0, "repeat": 2, "wait": True}]
    assert moves(agent) == [30, 0, 30, 0]
    assert await messages(agent) == [("user", "wave twice", "completed", "item_U1"),
                                     ("assistant", "Waving!", "completed", "item_A1")]
    assert agent.counters["dispatches"] == 1


# --- 1. a full voice turn, GA and beta ------------------------------------------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_full_voice_turn_with_a_motion(robot, connect, http, ga):
    agent = await robot()
    motions, convo, every, done_events, fn_calls = [], [], [], [], []
    agent.on_motion(motions.append)
    agent.on_conversation(lambda *a: convo.append(a))
    agent.on("*", every.append)
    agent.on("response.output_audio_transcript.done", done_events.append)  # GA name: both spellings reach it
    agent.on_function("*", lambda call: fn_calls.append(call.name))
    v = Voice(ga, "sess_full")
    args = '{"motion_tag":"wave","speed":2.0,"repeat":2,"wait":true}'
    trace = v.session() + v.user("item_U1", "Could you wave at me, twice?") + [v.created("resp_1")]
    trace += v.said("resp_1", "item_A1", ["Sure, ", "here ", "is ", "a ", "wave!"])
    trace += v.call("resp_1", "item_F1", "call_wave", "motion", args, pieces=len(args))  # one char a delta
    trace += [v.done("resp_1", [v.message("item_A1", "Sure, here is a wave!"),
                                v.call_item("item_F1", "call_wave", "motion", args)])]
    peer = await connect(agent)
    t0 = asyncio.get_running_loop().time()
    await peer.send(*trace)
    assert await replies(peer) == []
    rows = await calls(agent, "call_wave")
    assert rows["call_wave"]["status"] == "done"
    assert (rows["call_wave"]["response_id"], rows["call_wave"]["item_id"]) == ("resp_1", "item_F1")
    result = json.loads(rows["call_wave"]["result"]) if isinstance(rows["call_wave"]["result"], str) \
        else rows["call_wave"]["result"]
    assert result["motion"]["detail"]["planned_s"] == pytest.approx(0.1)  # 0.1 s, twice, at speed 2
    assert await messages(agent) == [("user", "Could you wave at me, twice?", "completed", "item_U1"),
                                     ("assistant", "Sure, here is a wave!", "completed", "item_A1")]
    stored = await agent.store.messages(limit=10)
    assert {r["session_id"] for r in stored} == {"sess_full"}
    # what the handlers saw
    await wait_for(lambda: len(every) == len(trace))
    assert [event["type"] for event in every] == [event["type"] for event in trace]  # as on the wire, in order
    assert motions == [{"motion_tag": "wave", "speed": 2.0, "repeat": 2, "wait": True}]
    assert fn_calls == []  # motion is the robot's, not an integrator function
    assert [event["transcript"] for event in done_events] == ["Sure, here is a wave!"]
    assert ("item_U1", "user", "") in convo and ("item_U1", "user", "Could you wave at me, twice?") in convo
    assert "".join(c for i, r, c in convo if i == "item_A1" and r == "assistant") == "Sure, here is a wave!"
    # what the arm did: the wave's two keyframes, twice, and nothing else moved it
    assert moves(agent, t0) == [30, 0, 30, 0]
    assert [op for op, _ in ops(agent, "face", t0) if op != "light"] == []
    h = await health(agent, http)
    assert h["counters"]["errors"] == 0 and h["counters"]["dispatches"] == 1
    assert h["counters"]["events"] == len(trace)
    assert h["counters"]["duplicate_calls"] == 1  # the copy inside response.done


# --- 2. barge-in ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_barge_in_stops_the_running_motion_drops_the_queued_and_late_calls(robot, connect, ga):
    agent = await robot()
    v = Voice(ga, "sess_barge")
    peer = await connect(agent)
    await peer.send(*v.session(), *v.user("item_U1", "Tell me a story and dance"), v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_long", "motion", '{"motion_tag":"sway","repeat":20}',
                            index=0),
                    *v.call("resp_1", "item_F2", "call_next", "motion", '{"motion_tag":"wave"}', index=1),
                    *v.said("resp_1", "item_A1", ["Once ", "upon ", "a "], index=2, finish=False))
    await wait_for(lambda: moves(agent))  # the long sway runs, the wave waits behind it
    cut = asyncio.get_running_loop().time()
    # the user talks; the server's late events of resp_1, then its cancellation
    late_call = '{"motion_tag":"wave"}'
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=4000, item_id="item_U2"),
                    ev(v.t("response.audio_transcript.delta"), response_id="resp_1", item_id="item_A1",
                       output_index=2, content_index=0, delta="time"),
                    ev(v.t("response.audio.delta"), response_id="resp_1", item_id="item_A1", output_index=2,
                       content_index=0, delta=pcm_b64(240, 900)),
                    *v.call("resp_1", "item_F3", "call_late", "motion", late_call, index=3),
                    ev("response.cancelled", response_id="resp_1"),  # a relay's own event: ignored, no error
                    ev("output_audio_buffer.cleared", response_id="resp_1"),
                    ev("conversation.item.truncated", item_id="item_A1", content_index=0, audio_end_ms=1200),
                    ev("response.output_item.done", response_id="resp_1", output_index=2,
                       item=v.message("item_A1", "Once upon a time", "incomplete")),
                    v.done("resp_1", [v.message("item_A1", "Once upon a time", "incomplete"),
                                      v.call_item("item_F3", "call_late", "motion", late_call)], status="cancelled"))
    rows = await calls(agent, "call_long", "call_next", "call_late")
    assert {c: r["status"] for c, r in rows.items()} == {"call_long": "dropped", "call_next": "dropped",
                                                         "call_late": "dropped"}
    assert any(op == "safe" for op, _ in ops(agent, "arm", cut))  # the arm was brought to rest
    # the next turn moves the arm at once: nothing of resp_1 is left in its lane
    await peer.send(*v.user("item_U2", "Just wave"), v.created("resp_2"),
                    *v.call("resp_2", "item_F4", "call_wave", "motion", '{"motion_tag":"wave"}', index=0),
                    v.done("resp_2", [v.call_item("item_F4", "call_wave", "motion", '{"motion_tag":"wave"}')]))
    assert (await calls(agent, "call_wave", timeout=3.0))["call_wave"]["status"] == "done"
    after = [args[0][0] for op, args in ops(agent, "arm", cut) if op == "move"]
    assert after[-2:] == [30, 0] and set(after[:-2]) <= {20, 0}  # at most what sway sent before the cut landed
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Tell me a story and dance", "completed", "item_U1"),
                                     ("assistant", "Once upon a time", "cancelled", "item_A1"),
                                     ("user", "Just wave", "completed", "item_U2")]
    assert agent.counters["interruptions"] == 1  # the barge-in; the cancelled done does not stop it again
    assert agent.turns.active_response(next(iter(agent.peers))) is None


async def test_barge_in_spares_the_motion_of_a_response_already_done(robot, connect):
    """Audio off: the robot "speaks" from the first words to response.done. Speech after that is
    no barge-in; a motion of the finished response that still plays runs to its end."""
    agent = await robot()
    v = Voice(True)
    peer = await connect(agent)
    args = '{"motion_tag":"sway","repeat":2}'
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["Swaying."]),
                    *v.call("resp_1", "item_F1", "call_s", "motion", args),
                    v.done("resp_1", [v.message("item_A1", "Swaying."), v.call_item("item_F1", "call_s", "motion",
                                                                                     args)]))
    await wait_for(lambda: moves(agent))
    await peer.send(*v.user("item_U2", "nice"))
    assert (await calls(agent, "call_s"))["call_s"]["status"] == "done"
    assert moves(agent) == [20, 0, 20, 0]
    assert agent.counters["interruptions"] == 0


# --- 3. function calls: streamed, repeated, out of order, wrong -------------------------------------

async def test_arguments_in_many_pieces_with_repeated_and_out_of_order_done_events(robot, connect):
    agent = await robot()
    got = []
    agent.on_function("lights", lambda call: got.append((call.call_id, call.arguments)) or {"ok": True})
    v = Voice(True)
    args = json.dumps({"room": "kitchen", "on": True, "level": 0.25, "note": "ünïcødé 🤖 " * 20})
    streamed = v.call("resp_1", "item_F1", "call_l1", "lights", args, pieces=200)
    added, deltas, args_done, item_done = streamed[0], streamed[1:-2], streamed[-2], streamed[-1]
    assert len(deltas) > 100
    peer = await connect(agent)
    await peer.send(v.created("resp_1"), added, *deltas, args_done, args_done, item_done, item_done,
                    v.done("resp_1", [item_done["item"]]), v.done("resp_1", [item_done["item"]]))
    # another call whose response.done comes first, then its item and its arguments
    item2 = v.call_item("item_F2", "call_l2", "lights", '{"room":"hall"}')
    await peer.send(v.created("resp_2"), v.done("resp_2", [item2]),
                    ev("response.output_item.done", response_id="resp_2", output_index=0, item=item2),
                    ev("response.function_call_arguments.done", response_id="resp_2", item_id="item_F2",
                       call_id="call_l2", name="lights", arguments='{"room":"hall"}'))
    assert await replies(peer) == []
    rows = await calls(agent, "call_l1", "call_l2")
    assert rows["call_l1"]["status"] == rows["call_l2"]["status"] == "done"
    await wait_for(lambda: len(got) == 2)
    assert got == [("call_l1", json.loads(args)), ("call_l2", {"room": "hall"})]
    assert agent.counters["dispatches"] == 2


BAD_MOTION_ARGS = {  # arguments -> the field the error must name
    '{"motion_tag": "wave", "speed": "1.5"}': "speed",
    '{"motion_tag": "wave", "repeat": -1}': "repeat",
    '{"motion_tag": "wave", "repeat": 1.5}': "repeat",
    '{"motion_tag": "wave", "speed": 0}': "speed",
    '{"motion_tag": "wave", "wait": "yes"}': "wait",
    '{"motion_tag": 7}': "motion_tag",
    '{"speed": 1}': "motion_tag",
    '{"motion_tag": "wave", "speed": NaN}': "speed",  # not JSON, but read as such: not finite
    '{"motion_tag": "wave"': "arguments",
    '["wave"]': "arguments",
    '"wave"': "arguments",
}


@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_invalid_and_wrongly_typed_arguments_are_refused_naming_the_field(robot, connect, ga):
    agent = await robot()
    seen = []
    agent.on_motion(seen.append)
    agent.on_emotion(seen.append)
    v = Voice(ga)
    peer = await connect(agent)
    await peer.send(v.created("resp_1"))
    frames = []
    for n, (args, field) in enumerate(BAD_MOTION_ARGS.items()):
        frames.append((v.call("resp_1", f"item_B{n}", f"call_b{n}", "motion", args), field))
    frames.append((v.call("resp_1", "item_E1", "call_e1", "emotion", '{"emotion_tag":"happy","intensity":"high"}'),
                   "intensity"))
    frames.append((v.call("resp_1", "item_E2", "call_e2", "motion_and_emotion",
                          '{"motion_tag":"wave","emotion_tag":"happy","fade_in":-2}'), "fade_in"))
    for events, _ in frames:
        await peer.send(*events)
    got = await replies(peer)
    assert codes(got) == ["invalid_arguments"] * len(frames)
    for reply, (events, field) in zip([f for f in got if f["type"] == "error"], frames):
        assert field in reply["error"]["message"], (field, reply)
        assert reply["error"]["event_id"] == events[-1]["event_id"]  # the output_item.done it answers
    ids = [f"call_b{n}" for n in range(len(BAD_MOTION_ARGS))] + ["call_e1", "call_e2"]
    # the model hears it too: a failed output naming the field, so it can call again
    outs = outputs(got)
    assert [(outs[i]["status"], outs[i]["field"]) for i in ids] == [("failed", field) for _, field in frames]
    rows = await calls(agent, *ids)
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert seen == [] and moves(agent) == []
    # the robot still works: the same response's good call runs
    await peer.send(*v.call("resp_1", "item_G", "call_good", "motion", '{"motion_tag":"wave"}'))
    assert (await calls(agent, "call_good"))["call_good"]["status"] == "done"
    assert moves(agent) == [30, 0]


async def test_unknown_tags_are_answered_with_the_allowed_ones(robot, connect):
    agent = await robot()
    v = Voice(True)
    peer = await connect(agent)
    await peer.send(v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_flip", "motion", '{"motion_tag":"backflip"}', index=0),
                    *v.call("resp_1", "item_F2", "call_both", "motion_and_emotion",
                            '{"motion_tag":"wave","emotion_tag":"furious"}', index=1),
                    v.done("resp_1"))
    outs = outputs(await replies(peer))
    assert set(outs) == {"call_flip", "call_both"}
    assert outs["call_flip"]["status"] == "failed" and "backflip" in outs["call_flip"]["reason"]
    assert outs["call_flip"]["allowed"] == {"motion_tag": ["sway", "wave"]}
    assert outs["call_both"]["status"] == "failed"
    assert outs["call_both"]["allowed"] == {"emotion_tag": ["happy", "neutral"]}
    rows = await calls(agent, "call_flip", "call_both")
    assert rows["call_flip"]["status"] == "failed" and rows["call_both"]["status"] == "failed"


async def test_a_call_for_an_unknown_function_reaches_the_handlers(robot, connect):
    agent = await robot()
    named, anyname, events_seen = [], [], []
    agent.on_function("get_weather", lambda call: named.append(call.arguments) or {"sky": "clear"})
    agent.on_function("*", lambda call: anyname.append((call.name, call.call_id, call.arguments)))
    agent.on("response.output_item.done", lambda event: events_seen.append(event["item"]["call_id"]))
    v = Voice(False)
    peer = await connect(agent)
    await peer.send(v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_wx", "get_weather", '{"city":"Zürich","days":3}', index=0),
                    *v.call("resp_1", "item_F2", "call_empty", "set_timer", "", index=1),
                    v.done("resp_1"))
    assert await replies(peer) == []
    rows = await calls(agent, "call_wx", "call_empty")
    assert rows["call_wx"]["status"] == "done" and rows["call_empty"]["status"] == "done"
    await wait_for(lambda: len(anyname) == 2)
    assert named == [{"city": "Zürich", "days": 3}]
    assert sorted(anyname) == [("get_weather", "call_wx", {"city": "Zürich", "days": 3}),
                               ("set_timer", "call_empty", {})]
    assert json.loads(rows["call_wx"]["result"])["result"] == {"sky": "clear"}
    await wait_for(lambda: len(events_seen) == 2)
    assert moves(agent) == []


# --- 5. hostile frames ------------------------------------------------------------------------------

NESTED_OK = '{"type":"session.updated","event_id":"evt_deep_ok","session":{"id":"sess_h","x":' + "[" * 200 \
    + "]" * 200 + "}}"
HOSTILE = [  # (frame, the error codes allowed for it, the event_id the error must name)
    (b"\xff\xfe\xfd", {"invalid_utf8"}, None),
    (b'{"type":"session.update","x":"\xc3"}', {"invalid_utf8"}, None),
    (b"", {"invalid_json"}, None),
    ("", {"invalid_json"}, None),
    ("   \n\t ", {"invalid_json"}, None),
    ("\ufeff" + json.dumps({"type": "session.update"}), {"invalid_json"}, None),
    ('{"type":"session.update"} trailing', {"invalid_json"}, None),
    ('"just a string"', {"invalid_event"}, None),
    ("42", {"invalid_event"}, None),
    ("null", {"invalid_event"}, None),
    ("true", {"invalid_event"}, None),
    ("[]", {"invalid_event"}, None),
    ('{"event_id":"evt_no_type"}', {"missing_type"}, "evt_no_type"),
    ('{"type":null,"event_id":"evt_t_null"}', {"missing_type"}, "evt_t_null"),
    ('{"type":["response.done"],"event_id":"evt_t_list"}', {"missing_type"}, "evt_t_list"),
    ('{"type":{"name":"response.done"},"event_id":"evt_t_obj"}', {"missing_type"}, "evt_t_obj"),
    ('{"type":true,"event_id":"evt_t_bool"}', {"missing_type"}, "evt_t_bool"),
    ('{"type":"","event_id":"evt_t_empty"}', {"missing_type"}, "evt_t_empty"),
    ('{"type":"response.done","event_id":"evt_rd","response":null}', {"invalid_shape"}, "evt_rd"),
    ('{"type":"conversation.item.input_audio_transcription.completed","event_id":"evt_sur1","item_id":"item_S",'
     '"transcript":"a\\ud800b"}', {"invalid_json"}, None),
    ('{"type":"conversation.item.input_audio_transcription.completed","event_id":"evt_sur2","item_id":"item_S",'
     '"transcript":"\\udc00"}', {"invalid_json"}, None),
    ('{"type":"conversation.item.input_audio_transcription.completed","event_id":"evt_sur3","item_id":"item_S",'
     '"transcript":"\\ude00\\ud83d"}', {"invalid_json"}, None),
    ('{"type":"session.update","event_id":"\\ud800"}', {"invalid_json"}, None),
    ('{"type":"session.update","x":"a\x00b"}', {"invalid_frame"}, None),
    ('{"type":"session.update","x":' + "[" * 100_000 + "]" * 100_000 + "}", {"too_deep"}, None),
    ('{"type":"session.update","x":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}", {"too_deep"}, None),
]


def _good_turn(v: Voice, n: int) -> list[dict]:
    return (v.user(f"item_U{n}", f"question {n}") + [v.created(f"resp_{n}")]
            + v.said(f"resp_{n}", f"item_A{n}", ["answer ", f"{n}"]) + [v.done(f"resp_{n}")])


@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_hostile_frames_get_clear_errors_and_nothing_is_lost(robot, connect, http, ga):
    agent = await robot()
    v = Voice(ga, "sess_hostile")
    peer = await connect(agent)
    await peer.send(*v.session())
    sent = 2
    expected = []
    for n, (frame, allowed, event_id) in enumerate(HOSTILE):
        # a bad frame in the middle of a streaming response, then the rest of the turn
        turn = _good_turn(v, n)
        half = len(turn) // 2
        await peer.send(*turn[:half])
        if isinstance(frame, bytes):
            await peer.send_bytes(frame)
        else:
            await peer.send(frame)
        await peer.send(*turn[half:])
        sent += len(turn) + 1
        got = await replies(peer, quiet=0.05)
        assert [g["type"] for g in got] == ["error"], (n, frame[:80], got)
        assert got[0]["error"]["code"] in allowed, (n, frame[:80], got)
        assert got[0]["error"]["event_id"] == event_id, (n, got)
        assert got[0]["error"]["message"]
        if "\\ud" in str(frame) or "\ufeff" in str(frame):  # valid UTF-8: not said to be otherwise
            assert "UTF-8:" not in got[0]["error"]["message"], got
        expected += [("user", f"question {n}", "completed", f"item_U{n}"),
                     ("assistant", f"answer {n}", "completed", f"item_A{n}")]
        if n % 8 == 0:
            assert (await health(agent, http))["status"] == "ok"
    # frames that look odd but are fine: answered with nothing, and used
    await peer.send(NESTED_OK)
    await peer.send_bytes(json.dumps(ev("conversation.item.input_audio_transcription.completed", item_id="item_BIN",
                                        content_index=0, transcript="binary \u0000 nul, 🤖 ok")).encode())
    await peer.send(json.dumps(ev("conversation.item.input_audio_transcription.completed", item_id="item_RAW",
                                  content_index=0, transcript="raw ünïcode 🤖"), ensure_ascii=False))
    sent += 3
    assert await replies(peer, quiet=0.1) == []
    expected += [("user", "binary \u0000 nul, 🤖 ok", "completed", "item_BIN"),
                 ("user", "raw ünïcode 🤖", "completed", "item_RAW")]
    assert await messages(agent) == expected
    h = await health(agent, http)
    assert h["status"] == "ok" and h["connections"] == 1
    assert h["counters"]["errors"] == len(HOSTILE) and h["counters"]["events"] == sent
    # the same frames over HTTP: a 400 with the same code each, and /health still answers
    for frame, allowed, _ in HOSTILE[:20]:
        async with http.post(f"http://127.0.0.1:{agent.port}/v1/events", data=frame,
                             headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400, frame[:80]
            assert (await r.json())["error"]["code"] in allowed
    assert (await health(agent, http))["status"] == "ok"


async def test_repeated_event_ids_are_not_taken_for_repeated_events(robot, connect):
    """event_id is the sender's label, not the content: two different events with one id both count."""
    agent = await robot()
    v = Voice(True)
    peer = await connect(agent)
    same = "evt_same"
    await peer.send({**ev("conversation.item.input_audio_transcription.completed", item_id="item_U1", content_index=0,
                          transcript="first"), "event_id": same},
                    {**ev("conversation.item.input_audio_transcription.completed", item_id="item_U2", content_index=0,
                          transcript="second"), "event_id": same},
                    {**v.created("resp_1"), "event_id": same},
                    *[{**x, "event_id": same} for x in v.said("resp_1", "item_A1", ["one ", "two"])],
                    {**v.done("resp_1"), "event_id": same},
                    {**ev("conversation.item.input_audio_transcription.completed", item_id="item_U3",
                          content_index=0, transcript="third"), "event_id": 12345})
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "first", "completed", "item_U1"),
                                     ("user", "second", "completed", "item_U2"),
                                     ("assistant", "one two", "completed", "item_A1"),
                                     ("user", "third", "completed", "item_U3")]


async def test_a_frame_over_the_cap_closes_only_its_socket(robot, connect, http):
    agent = await robot()
    v = Voice(True, "sess_big")
    other = await connect(agent)
    await other.send(*v.session(), v.created("resp_1"), *v.said("resp_1", "item_A1", ["Still "], finish=False))
    big = await connect(agent)
    await big.send(json.dumps(ev("conversation.item.input_audio_transcription.completed", item_id="item_X",
                                 content_index=0, transcript="x" * (2 * 1024 * 1024))))
    msg = await big.ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
    assert big.ws.close_code == 1009
    assert (await health(agent, http))["status"] == "ok"
    await other.send(ev(v.t("response.audio_transcript.delta"), response_id="resp_1", item_id="item_A1",
                        output_index=0, content_index=0, delta="here."), v.done("resp_1"))
    assert await replies(other) == []
    assert await messages(agent) == [("assistant", "Still here.", "completed", "item_A1")]


async def test_lone_surrogates_inside_call_arguments_are_refused_and_lose_nothing(robot, connect):
    """Arguments are a JSON string inside the frame: their own \\u escapes are read by a second
    decoder, as strictly as the frame's: half a surrogate pair is no text, so each call is
    refused as unusable arguments (the robot's own tools answered with the field), stored as
    failed, reaches no handler, and everything around it is stored."""
    agent = await robot()
    echoed = []
    agent.on_function("echo", lambda call: echoed.append(call.arguments) or call.arguments)
    v = Voice(True, "sess_sur")
    peer = await connect(agent)
    await peer.send(*v.session(), *v.user("item_U1", "before"), v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_m", "motion", '{"motion_tag":"wa\\ud800ve"}', index=0),
                    *v.call("resp_1", "item_F2", "call_x", "echo", '{"text":"a\\udfffb"}', index=1),
                    *v.call("resp_1", "item_F3", "call_e", "emotion", '{"emotion_tag":"\\ud83d"}', index=2),
                    *v.said("resp_1", "item_A1", ["after"], index=3), v.done("resp_1"),
                    *v.user("item_U2", "later"))
    frames = await replies(peer)
    assert codes(frames) == ["invalid_arguments"] * 3
    assert all("lone surrogate" in f["error"]["message"] for f in frames if f["type"] == "error")
    outs = outputs(frames)  # echo is not the robot's tool: its outcome goes back only when outcomes do
    assert {c: (o["status"], o["field"]) for c, o in outs.items()} == {"call_m": ("failed", "motion_tag"),
                                                                       "call_e": ("failed", "emotion_tag")}
    rows = await calls(agent, "call_m", "call_x", "call_e")
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert json.loads(rows["call_x"]["result"])["field"] == "text"
    assert echoed == [] and moves(agent) == []
    assert await messages(agent) == [("user", "before", "completed", "item_U1"),
                                     ("assistant", "after", "completed", "item_A1"),
                                     ("user", "later", "completed", "item_U2")]
    assert agent.health()["storage"]["state"] == "ok"


# --- 4. a long session --------------------------------------------------------------------------------

async def test_long_session_per_response_state_is_cleaned_up_and_caps_hold(robot, connect, http, monkeypatch):
    """Thousands of GA events on one socket: turns, emotion calls, barge-ins, rate limits and session
    updates. Per-response state empties after each response; what is kept by id stays under its cap
    (small caps here, to see them hold) and nothing is lost to them."""
    from ticos_agent import calls as calls_mod
    from ticos_agent import conversation, turns

    monkeypatch.setattr(conversation, "MAX_TRACKED", 40)
    monkeypatch.setattr(calls_mod, "MAX_TRACKED_CALLS", 10)
    monkeypatch.setattr(turns, "MAX_INTERRUPTED", 5)
    agent = await robot()
    every = []
    agent.on("*", lambda event: every.append(1))
    v = Voice(True, "sess_long")
    peer = await connect(agent)
    await peer.send(*v.session())
    sent, expected, call_ids, barge_ins = 2, [], [], 0

    async def turn(i: int) -> None:
        nonlocal sent, barge_ins
        rid, aid = f"resp_{i}", f"item_A{i}"
        batch = v.user(f"item_U{i}", f"question number {i}")
        expected.append(("user", f"question number {i}", "completed", f"item_U{i}"))
        batch += [v.created(rid), ev("rate_limits.updated", rate_limits=[
            {"name": "requests", "limit": 5000, "remaining": 4999 - i, "reset_seconds": 0.01},
            {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5}])]
        if i % 7 == 3:  # the user talks over the robot
            batch += v.said(rid, aid, ["I was ", "going "], finish=False)
            batch += [ev("input_audio_buffer.speech_started", audio_start_ms=50, item_id=f"item_X{i}"),
                      v.done(rid, [v.message(aid, "I was going ", "incomplete")], status="cancelled")]
            expected.append(("assistant", "I was going ", "cancelled", aid))
            barge_ins += 1
        else:
            parts = ["The ", "answer ", "is ", f"{i}."]
            batch += v.said(rid, aid, parts)
            output = [v.message(aid, "".join(parts))]
            if i % 3 == 0:
                args = json.dumps({"emotion_tag": "happy", "intensity": round(0.1 + (i % 9) / 10, 2)})
                batch += v.call(rid, f"item_F{i}", f"call_{i}", "emotion", args)
                output.append(v.call_item(f"item_F{i}", f"call_{i}", "emotion", args))
                call_ids.append(f"call_{i}")
            batch += [v.done(rid, output)]
            expected.append(("assistant", "".join(parts), "completed", aid))
        if i % 10 == 9:
            batch.append(ev("session.updated", session={"id": "sess_long", "object": "realtime.session",
                                                        "instructions": f"turn {i}"}))
        await peer.send(*batch)
        sent += len(batch)

    for half in (range(100), range(100, 200)):
        for i in half:
            await turn(i)
        await wait_for(lambda: agent.counters["events"] == sent, timeout=20)
        rows = await calls(agent, *call_ids, timeout=20)
        # an emotion still waiting to be shown when the next comes is replaced by it: nothing else
        assert all(r["status"] == "done" or (r["status"] == "dropped" and "preempted by emotion" in r["result"])
                   for r in rows.values()), rows
        conn = next(iter(agent.peers))
        # per response: nothing left once each was done
        assert agent.turns.active_response(conn) is None and not agent.turns._orphans
        assert agent.conversations.open_items() == 0 and not agent.conversations._waiting
        calls_in = next(c for c in _consumers(agent) if isinstance(c, calls_mod.CallIntake))
        assert not calls_in._streamed and calls_in._in_flight == 0
        assert all(not lane for lane in agent.actuators.lanes.values())
        await wait_for(lambda: agent.dispatcher.stats()["backlog"] == 0, timeout=10)
        # kept by id: under the caps
        assert len(agent.conversations._users) <= 40 and len(agent.conversations._stored) <= 40
        assert len(calls_in._seen) <= 10
        assert len(agent.turns._interrupted) <= 5
        assert len(agent.life._peers) == 1 and len(agent.life._timers) <= 4
    assert sent > 4000
    assert await messages_all(agent) == expected  # nothing lost to the caps
    h = await health(agent, http)
    assert h["counters"]["errors"] == 0 and h["counters"]["events"] == sent
    assert h["counters"]["interruptions"] == barge_ins
    assert h["counters"]["dispatches"] == len(call_ids)
    assert h["counters"]["duplicate_calls"] == len(call_ids)  # each again in its response.done
    await wait_for(lambda: len(every) == sent, timeout=10)


def _consumers(agent: Agent) -> list:
    """The consumers wired into the intake (their routes' bound methods name them)."""
    found = {}
    for _, routes in agent.intake._consumers:
        for handler in routes.values():
            owner = getattr(handler, "__self__", None)
            if owner is not None:
                found[id(owner)] = owner
    return list(found.values())


async def test_huge_types_and_ids_do_not_make_huge_event_log_lines(robot, connect):
    """Frames just under the 1 MiB cap whose type or ids are most of it: the event log keeps one
    compact line each (a card must not pay a megabyte per hostile frame), the ids of normal
    events as they are."""
    agent = await robot()
    v = Voice(True, "sess_ids")
    peer = await connect(agent)
    huge = "z" * 900_000
    done = v.done("resp_ok")
    await peer.send(*v.session(),
                    ev("x.unknown." + huge),
                    {**ev("session.update"), "event_id": "evt_" + huge},
                    ev("conversation.item.deleted", item_id="item_" + huge),
                    ev("response.done", response={"id": "resp_" + huge, "status": "completed", "output": []}),
                    v.created("resp_ok"), *v.said("resp_ok", "item_ok", ["fine"]), done)
    assert await replies(peer) == []
    await settle(agent)
    path = agent.store.health()["path"]
    lines = helpers.db_rows(path, "SELECT type, event_id, item_id, response_id FROM events ORDER BY id", readonly=True)
    assert len(lines) >= 8
    assert max(len(x or "") for line in lines for x in line) <= MAX_LOGGED
    assert lines[-1] == ("response.done", done["event_id"], None, "resp_ok")
    assert sum(len(x or "") for line in lines for x in line) < 10_000
    assert await messages(agent) == [("assistant", "fine", "completed", "item_ok")]
