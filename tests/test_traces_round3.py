"""Realtime traces, third round: what the earlier trace modules did not play.

GA-only sessions with the output audio buffer and no ``speech_started`` (a WebRTC-style cut),
``input_audio_buffer.timeout_triggered``, transcription segments, text whose ``done`` differs
from its deltas; ``motion_and_emotion`` with one half unusable; ``wait=false`` within and across
responses; repeat/speed clamps as the simulated arm saw them; barge-ins during a long queued
motion and during an emotion's fade-in (what must stop, what must stay); a response mixing a
motion, an integrator function and memory tools cut by a barge-in; client events a relay echoes
back (``session.update``, ``response.cancel``, ``conversation.item.delete``); hostile frames:
control characters in ids and types (one log line each), duplicate JSON keys, 10,000 distinct
unknown types, the 1 MiB cap in bytes not characters, and fragmented WebSocket messages written
by hand (a raw socket: aiohttp's client never fragments).

The same robot (conftest's ``robot``: a simulated arm and face), voice builders (``traces``) and
readers (``helpers``) as the other trace modules.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct

import aiohttp
import helpers
import pytest
from helpers import HAPPY, NEUTRAL, calls, health, lights, messages, move_times, moves, ops, replies, settle, wait_for
from traces import Voice, ev, user_ga


def now() -> float:
    return asyncio.get_running_loop().time()


# --- 1. GA-only sessions ----------------------------------------------------------------------------

async def test_webrtc_style_cut_without_speech_started_stops_the_motion_once_cancelled(robot, connect, http):
    """WebRTC: the voice agent plays the audio itself; a cut shows as ``output_audio_buffer.cleared``
    and the cancelled ``response.done`` (no ``speech_started`` on this socket). The cancelled
    response's long motion stops and the arm rests; its words are stored as cancelled; the next
    response's wave runs; no error, and one interruption counted: the cancellation (no barge-in:
    no user talked on this socket)."""
    agent = await robot()
    v = Voice(True, "sess_rtc")
    peer = await connect(agent)
    sway = '{"motion_tag":"sway","repeat":20}'
    await peer.send(*v.session(), *user_ga("item_U1", None, "Dance for me"), v.created("resp_1"),
                    ev("output_audio_buffer.started", response_id="resp_1"),
                    *v.said("resp_1", "item_A1", ["Here ", "I go"], finish=False),
                    *v.call("resp_1", "item_F1", "call_dance", "motion", sway, index=1))
    await wait_for(lambda: moves(agent))
    cut = now()
    await peer.send(ev("output_audio_buffer.cleared", response_id="resp_1"),
                    ev("conversation.item.truncated", item_id="item_A1", content_index=0, audio_end_ms=640),
                    v.done("resp_1", [v.message("item_A1", "Here I go", "incomplete")], status="cancelled"),
                    ev("output_audio_buffer.stopped", response_id="resp_1"))
    assert (await calls(agent, "call_dance"))["call_dance"]["status"] == "dropped"
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")
    rested = now()
    await asyncio.sleep(0.6)  # a sway keyframe is 0.25 s: nothing more of it comes
    assert moves(agent, rested) == []
    assert len(moves(agent, cut)) <= 2
    t2 = now()
    await peer.send(v.created("resp_2"), *v.call("resp_2", "item_F2", "call_wave", "motion", '{"motion_tag":"wave"}'),
                    v.done("resp_2"))
    assert (await calls(agent, "call_wave"))["call_wave"]["status"] == "done"
    assert moves(agent, t2) == [30, 0]
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Dance for me", "completed", "item_U1"),
                                     ("assistant", "Here I go", "cancelled", "item_A1")]
    h = await health(agent, http)
    assert h["status"] == "ok" and h["counters"]["errors"] == 0
    assert h["counters"].get("interruptions", 0) == 1  # the cancellation, once
    assert agent.turns.interrupted("resp_1") == "response cancelled"


async def test_idle_timeout_triggered_turn_is_no_barge_in_and_the_nudge_is_stored(robot, connect, http):
    """GA server VAD with ``idle_timeout_ms``: nobody spoke, the server commits the silence
    (``timeout_triggered``) and answers with a nudge. Nothing is interrupted, the empty user turn
    leaves no pending row, the nudge is stored and every event reaches the handlers."""
    agent = await robot()
    every = []
    agent.on("*", lambda event: every.append(event["type"]))
    v = Voice(True, "sess_idle")
    peer = await connect(agent)
    empty = {"id": "item_U1", "type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_audio", "transcript": None}]}
    trace = [*v.session(),
             ev("input_audio_buffer.timeout_triggered", audio_start_ms=5000, audio_end_ms=11000, item_id="item_U1"),
             ev("input_audio_buffer.committed", previous_item_id=None, item_id="item_U1"),
             ev("conversation.item.added", previous_item_id=None, item=empty),
             ev("conversation.item.done", previous_item_id=None, item=empty),
             ev("conversation.item.input_audio_transcription.completed", item_id="item_U1", content_index=0,
                transcript=""),
             v.created("resp_1"), *v.said("resp_1", "item_A1", ["Are you ", "still there?"]), v.done("resp_1")]
    await peer.send(*trace)
    assert await replies(peer) == []
    rows = await messages(agent)
    assert ("assistant", "Are you still there?", "completed", "item_A1") in rows
    assert all(r[2] != "pending" for r in rows)
    assert not [r for r in rows if r[0] == "user" and r[1]]
    await wait_for(lambda: len(every) == len(trace))
    assert "input_audio_buffer.timeout_triggered" in every
    h = await health(agent, http)
    assert h["counters"]["errors"] == 0 and h["counters"].get("interruptions", 0) == 0
    assert h["counters"]["ignored"] == 1, h["counters"]  # timeout_triggered: counted, not acted on


async def test_transcription_segments_and_deltas_leave_one_row_with_the_completed_text(robot, connect):
    """GA diarized transcription: ``...transcription.segment`` events (speaker, start, end) and
    deltas before ``completed``. One row, the completed text; the conversation callback gets it."""
    agent = await robot()
    convo = []
    agent.on_conversation(lambda *a: convo.append(a))
    peer = await connect(agent)
    seg = {"item_id": "item_U1", "content_index": 0}
    await peer.send(*user_ga("item_U1", None, None),
                    ev("conversation.item.input_audio_transcription.delta", **seg, delta="Turn "),
                    ev("conversation.item.input_audio_transcription.segment", **seg, id="seg_0", speaker="A",
                       start=0.0, end=0.6, text="Turn left"),
                    ev("conversation.item.input_audio_transcription.delta", **seg, delta="left, "),
                    ev("conversation.item.input_audio_transcription.segment", **seg, id="seg_1", speaker="B",
                       start=0.7, end=1.4, text="no, right"),
                    ev("conversation.item.input_audio_transcription.delta", **seg, delta="no, right"),
                    ev("conversation.item.input_audio_transcription.completed", **seg,
                       transcript="Turn left, no, right"))
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Turn left, no, right", "completed", "item_U1")]
    await wait_for(lambda: convo and convo[-1] == ("item_U1", "user", "Turn left, no, right"))


async def test_text_done_is_the_answer_even_when_it_differs_from_its_deltas(robot, connect):
    """GA ``response.output_text.*``: a delta was lost by a relay; ``output_text.done`` and the item
    in ``output_item.done`` carry the whole text. The stored answer is the whole text."""
    agent = await robot()
    v = Voice(True, "sess_txt")
    peer = await connect(agent)
    where = {"response_id": "resp_1", "item_id": "item_A1", "output_index": 0, "content_index": 0}
    whole = "One, two, three."
    item = {"id": "item_A1", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": whole}]}
    await peer.send(v.created("resp_1"),
                    ev("response.output_item.added", response_id="resp_1", output_index=0,
                       item={**item, "status": "in_progress", "content": []}),
                    ev("response.output_text.delta", **where, delta="One, "),
                    ev("response.output_text.delta", **where, delta="three."),  # "two, " never came
                    ev("response.output_text.done", **where, text=whole),
                    ev("response.output_item.done", response_id="resp_1", output_index=0, item=item),
                    v.done("resp_1", [item]))
    assert await replies(peer) == []
    assert await messages(agent) == [("assistant", whole, "completed", "item_A1")]


# --- 2. motion_and_emotion with one half unusable ---------------------------------------------------

async def test_motion_and_emotion_with_an_unknown_emotion_moves_and_says_which_half_failed(robot, connect):
    """The motion half is good, the emotion tag unknown: the arm waves (the person sees the
    robot do what it could), the face is untouched, and the outcome names the emotion tags the
    robot knows so the model can correct itself."""
    agent = await robot(replies={"function_call_output": True})
    v = Voice(True, "sess_half")
    peer = await connect(agent)
    t0 = now()
    args = '{"motion_tag":"wave","emotion_tag":"ecstatic"}'
    await peer.send(v.created("resp_1"), *v.call("resp_1", "item_F1", "call_1", "motion_and_emotion", args),
                    v.done("resp_1"))
    row = (await calls(agent, "call_1"))["call_1"]
    result = json.loads(row["result"]) if isinstance(row["result"], str) else row["result"]
    assert result["motion"]["status"] == "done" and result["emotion"]["status"] == "failed"
    assert "ecstatic" in result["emotion"]["reason"]
    assert sorted(result["allowed"]["emotion_tag"]) == ["happy", "neutral"] and "motion_tag" not in result["allowed"]
    assert moves(agent, t0) == [30, 0]
    assert lights(agent, t0) == []
    outs = [r for r in await replies(peer) if r["type"] == "conversation.item.create"]
    assert [o["item"]["call_id"] for o in outs] == ["call_1"]
    assert json.loads(outs[0]["item"]["output"])["allowed"]["emotion_tag"]


@pytest.mark.parametrize("args, field", [
    ('{"motion_tag":"wave"}', "emotion_tag"),
    ('{"motion_tag":"wave","emotion_tag":"happy","intensity":"very"}', "intensity"),
    ('{"motion_tag":"wave","emotion_tag":"happy","fade_in":-1}', "fade_in"),
    ('{"emotion_tag":"happy","speed":2}', "motion_tag"),
], ids=["no-emotion-tag", "intensity-text", "negative-fade", "no-motion-tag"])
async def test_motion_and_emotion_with_an_unusable_half_runs_neither(robot, connect, args, field):
    """Arguments of one call are checked as a whole: an unusable field in either half refuses the
    call (naming the field) before anything moves or lights; the next good call runs."""
    agent = await robot()
    v = Voice(True, "sess_bad_half")
    peer = await connect(agent)
    t0 = now()
    await peer.send(v.created("resp_1"),
                    ev("response.output_item.done", response_id="resp_1", output_index=0,
                       item=v.call_item("item_F1", "call_bad", "motion_and_emotion", args)))
    error, output = await peer.rejected()
    assert field in error["error"]["message"]
    assert json.loads(output["item"]["output"])["field"] == field
    assert (await calls(agent, "call_bad"))["call_bad"]["status"] == "failed"
    await peer.send(ev("response.output_item.done", response_id="resp_1", output_index=1,
                       item=v.call_item("item_F2", "call_ok", "motion_and_emotion",
                                        '{"motion_tag":"wave","emotion_tag":"happy","intensity":0.5}')),
                    v.done("resp_1"))
    assert (await calls(agent, "call_ok"))["call_ok"]["status"] == "done"
    assert moves(agent, t0) == [30, 0]
    assert lights(agent, t0) == [(HAPPY, 0.5)]


# --- 3. wait, repeat, speed as the arm saw them -------------------------------------------------

async def test_wait_false_then_a_queued_motion_in_the_same_response_plays_both_in_order(robot, connect):
    """``wait=false`` clears the arm for the first motion; the second (default wait) queues behind
    it: the arm plays the whole first motion, then the second."""
    agent = await robot()
    v = Voice(True, "sess_wait")
    peer = await connect(agent)
    t0 = now()
    await peer.send(v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_1", "motion", '{"motion_tag":"sway","repeat":2,"wait":false}',
                            index=0),
                    *v.call("resp_1", "item_F2", "call_2", "motion", '{"motion_tag":"wave"}', index=1),
                    v.done("resp_1"))
    rows = await calls(agent, "call_1", "call_2")
    assert rows["call_1"]["status"] == rows["call_2"]["status"] == "done"
    assert moves(agent, t0) == [20, 0, 20, 0, 30, 0]
    times = move_times(agent, t0)
    assert times[4] - times[0] > 0.6  # the wave began after the sway's ~1 s, not over it


async def test_wait_false_in_the_next_response_preempts_the_previous_responses_motion(robot, connect):
    """resp_1 finished speaking but its 10 s sway still runs; resp_2's ``wait=false`` wave replaces
    it at once (dropped, naming the preemption), and the arm waves within a second."""
    agent = await robot()
    v = Voice(True, "sess_pre")
    peer = await connect(agent)
    await peer.send(v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_long", "motion", '{"motion_tag":"sway","repeat":20}'),
                    v.done("resp_1"))
    await wait_for(lambda: moves(agent))
    t1 = now()
    await peer.send(v.created("resp_2"),
                    *v.call("resp_2", "item_F2", "call_now", "motion", '{"motion_tag":"wave","wait":false}'),
                    v.done("resp_2"))
    rows = await calls(agent, "call_long", "call_now")
    assert rows["call_now"]["status"] == "done"
    assert rows["call_long"]["status"] == "dropped" and "preempt" in rows["call_long"]["result"]
    after = moves(agent, t1)
    assert after[-2:] == [30, 0] and after.count(30) == 1
    i = after.index(30)
    assert set(after[:i]) <= {20, 0} and len(after[:i]) <= 2  # at most a keyframe of the sway in between
    assert move_times(agent, t1)[i] - t1 < 1.0
    await asyncio.sleep(0.6)
    assert moves(agent, t1)[-2:] == [30, 0]  # the sway never came back


async def test_repeat_and_speed_clamps_as_the_arm_saw_them(robot, connect):
    """repeat 500 plays 20 waves (not 500, not 1); speed 0.001 plays at 0.1 (ten times slower, not
    a thousand); speed 1000 at 5. The clamps are in the stored outcome's notes."""
    agent = await robot()
    v = Voice(True, "sess_clamp")
    peer = await connect(agent)

    async def play(call_id: str, args: dict) -> tuple[list[float], list[float], dict]:
        t0 = now()
        await peer.send(*v.call("resp_1", f"item_{call_id}", call_id, "motion", json.dumps(args)))
        row = (await calls(agent, call_id, timeout=20))[call_id]
        assert row["status"] == "done", row
        result = json.loads(row["result"]) if isinstance(row["result"], str) else row["result"]
        return moves(agent, t0), move_times(agent, t0), result

    await peer.send(v.created("resp_1"))
    got, _, res = await play("call_many", {"motion_tag": "wave", "repeat": 500})
    assert got == [30, 0] * 20
    assert any("repeat" in n and "20" in n for n in res["notes"])
    got, at, res = await play("call_slow", {"motion_tag": "wave", "speed": 0.001})
    assert got == [30, 0]
    assert 0.3 < at[1] - at[0] < 3.0  # 0.5 s at speed 0.1 (0.05 s at 1); never 50 s
    assert any("speed" in n and "0.1" in n for n in res["notes"])
    got, at, res = await play("call_fast", {"motion_tag": "sway", "repeat": 4, "speed": 1000})
    assert got == [20, 0] * 4
    assert at[-1] - at[0] < 1.5  # 2 s of sway at speed 5: ~0.35 s
    assert any("speed" in n and "5" in n for n in res["notes"])


# --- 4. barge-ins: what stops, what stays --------------------------------------------------------

async def test_barge_in_during_a_long_queued_motion_keeps_the_earlier_responses_held_emotion(robot, connect):
    """resp_0 (done) left the face happy for 30 s. resp_1 speaks, sways (wait=true, 10 s) and has a
    wave queued behind it. The user talks: the sway stops, the wave never plays, the arm rests;
    the face stays happy (not the interrupted response's)."""
    agent = await robot()
    v = Voice(True, "sess_keep")
    peer = await connect(agent)
    await peer.send(v.created("resp_0"),
                    *v.call("resp_0", "item_F0", "call_face", "emotion", '{"emotion_tag":"happy","duration":30}'),
                    v.done("resp_0"))
    assert (await calls(agent, "call_face"))["call_face"]["status"] == "done"
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["Watch ", "this"], finish=False),
                    *v.call("resp_1", "item_F1", "call_sway", "motion", '{"motion_tag":"sway","repeat":20}', index=1),
                    *v.call("resp_1", "item_F2", "call_wave", "motion", '{"motion_tag":"wave","wait":true}', index=2))
    await wait_for(lambda: moves(agent))
    cut = now()
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=900, item_id="item_U2"))
    rows = await calls(agent, "call_sway", "call_wave")
    assert rows["call_sway"]["status"] == rows["call_wave"]["status"] == "dropped"
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")
    await asyncio.sleep(0.6)
    assert 30 not in moves(agent, cut) and len(moves(agent, cut)) <= 1
    assert lights(agent)[-1] == (HAPPY, 1.0)  # still happy: not resp_1's to end
    assert [op for op, _ in ops(agent, "face", cut)] == []
    await peer.send(v.done("resp_1", [v.message("item_A1", "Watch this", "incomplete")], status="cancelled"))
    await settle(agent)
    assert agent.counters["interruptions"] == 1
    assert await messages(agent) == [("assistant", "Watch this", "cancelled", "item_A1")]


async def test_barge_in_during_an_emotion_fade_in_rests_the_face_at_once(robot, connect):
    """An emotion fading in over 3 s (held 30 s) belongs to the response being spoken; the user
    talks over it: the ramp stops where it was and the face goes to neutral within a moment,
    and no more of the ramp (or the hold) comes afterwards."""
    agent = await robot()
    v = Voice(True, "sess_fade")
    peer = await connect(agent)
    t0 = now()
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["I am so "], finish=False),
                    *v.call("resp_1", "item_F1", "call_glow", "emotion",
                            '{"emotion_tag":"happy","fade_in":3,"duration":30}', index=1))
    await wait_for(lambda: len(lights(agent, t0)) >= 3, timeout=4)
    ramp = [b for c, b in lights(agent, t0) if c == HAPPY]
    assert ramp == sorted(ramp) and ramp[-1] < 1.0  # rising, not there yet
    cut = now()
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=300, item_id="item_U2"))
    await wait_for(lambda: lights(agent, cut) and lights(agent, cut)[-1][0] == NEUTRAL, timeout=2)
    rested = now()
    assert rested - cut < 2.0
    await asyncio.sleep(0.8)
    assert [x for x in lights(agent, rested) if x[0] == HAPPY] == []  # the ramp did not go on
    assert lights(agent)[-1][0] == NEUTRAL
    row = (await calls(agent, "call_glow"))["call_glow"]
    assert row["status"] == "dropped"  # cut by the barge-in while it faded in


async def test_a_response_with_a_motion_a_function_and_memory_tools_cut_by_a_barge_in(robot, connect, http):
    """One response: a long sway, an integrator's ``lights`` call, ``remember`` and ``recall``.
    The sway starts, then the user talks; the rest of the calls arrive late (in output items and
    response.done). The README: the interrupted response's later calls are dropped, but a
    ``remember`` is not (a ``recall`` is). The memory is stored and findable."""
    agent = await robot()
    got = []
    agent.on_function("lights", lambda call: got.append(call.arguments) or "ok")
    v = Voice(True, "sess_mix")
    peer = await connect(agent)
    sway = '{"motion_tag":"sway","repeat":20}'
    rem = '{"content":"The user\'s dog is called Biscuit.","kind":"fact","subject":"user"}'
    rec = '{"query":"dog"}'
    lit = '{"room":"kitchen"}'
    await peer.send(*v.session(), *user_ga("item_U1", None, "My dog is Biscuit. Dance and dim the lights!"),
                    v.created("resp_1"), *v.said("resp_1", "item_A1", ["Nice "], finish=False),
                    *v.call("resp_1", "item_F1", "call_sway", "motion", sway, index=1))
    await wait_for(lambda: moves(agent))
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=500, item_id="item_U2"),
                    *v.call("resp_1", "item_F2", "call_lights", "lights", lit, index=2),
                    *v.call("resp_1", "item_F3", "call_rem", "remember", rem, index=3),
                    *v.call("resp_1", "item_F4", "call_rec", "recall", rec, index=4),
                    v.done("resp_1", [v.message("item_A1", "Nice ", "incomplete"),
                                      v.call_item("item_F1", "call_sway", "motion", sway),
                                      v.call_item("item_F2", "call_lights", "lights", lit),
                                      v.call_item("item_F3", "call_rem", "remember", rem),
                                      v.call_item("item_F4", "call_rec", "recall", rec)], status="cancelled"))
    rows = await calls(agent, "call_sway", "call_lights", "call_rem", "call_rec")
    assert rows["call_sway"]["status"] == "dropped"
    assert rows["call_lights"]["status"] == "dropped"
    assert rows["call_rec"]["status"] == "dropped"
    assert rows["call_rem"]["status"] == "done"
    await settle(agent)
    assert got == []  # the integrator's function never ran
    async with http.get(f"http://127.0.0.1:{agent.port}/v1/memories", params={"q": "Biscuit"}) as r:
        assert r.status == 200
        hits = (await r.json())["hits"]
    assert any("Biscuit" in h["text"] and h["source"] == "memory" for h in hits)
    frames = await replies(peer)
    # nothing asks the model to speak about a recall nobody waits for
    assert not [f for f in frames if f["type"] == "response.create"]
    assert not [f for f in frames if f.get("item", {}).get("call_id") == "call_rec"]
    assert agent.counters["interruptions"] == 1


# --- 5. client events a relay echoes back ------------------------------------------------------------

async def test_client_events_echoed_by_a_relay_are_ignored_and_change_nothing(robot, connect, http):
    """A relay that mirrors the voice agent's own client events (``session.update``,
    ``response.cancel``, ``conversation.item.delete``, ``input_audio_buffer.append``,
    ``response.create``) into the device socket: none is an error, none deletes a stored row,
    none moves the robot; the server's cancelled ``response.done`` is what stops the motion."""
    agent = await robot()
    v = Voice(True, "sess_relay")
    peer = await connect(agent)
    await peer.send(*v.session(), *user_ga("item_U1", None, "Keep me"), v.created("resp_1"),
                    *v.said("resp_1", "item_A1", ["Stored ", "answer"]), v.done("resp_1"))
    await settle(agent)
    before = agent.counters["ignored"]
    echoed = [ev("session.update", session={"type": "realtime", "instructions": "be brief",
                                              "tools": [{"type": "function", "name": "motion"}]}),
              ev("input_audio_buffer.append", audio=base64.b64encode(b"\0" * 960).decode()),
              ev("conversation.item.delete", item_id="item_U1"),
              ev("conversation.item.delete", item_id="item_A1"),
              ev("response.create", response={"instructions": "wave"}),
              ev("conversation.item.create", item={"type": "message", "role": "user",
                                                   "content": [{"type": "input_text", "text": "typed by relay"}]}),
              ev("response.cancel", response_id="resp_1")]
    await peer.send(*echoed)
    await peer.send(v.created("resp_2"),
                    *v.call("resp_2", "item_F2", "call_long", "motion", '{"motion_tag":"sway","repeat":20}'))
    await wait_for(lambda: moves(agent))
    await peer.send(ev("response.cancel", response_id="resp_2"))
    await settle(agent)
    assert agent.actuators.lanes["arm"]  # a client's cancel request is not the server's answer
    await peer.send(v.done("resp_2", status="cancelled"))
    assert (await calls(agent, "call_long"))["call_long"]["status"] == "dropped"
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Keep me", "completed", "item_U1"),
                                     ("assistant", "Stored answer", "completed", "item_A1")]
    h = await health(agent, http)
    assert h["counters"]["errors"] == 0
    # each echoed client event, and the later response.cancel of resp_2: counted, not acted on
    assert agent.counters["ignored"] - before == len(echoed) + 1, agent.counters


# --- 6. hostile frames -------------------------------------------------------------------------------

EVIL = "x\n2026-01-01 00:00:00 ERROR forged line\r\x1b[31mred\x1b[0m\x07\x00\u2028\x9b2J"


async def test_control_characters_in_ids_types_and_words_stay_on_one_log_line(robot, connect, caplog):
    """Ids, a session id, a type, tags, a transcript and the voice agent's own error message
    holding newlines, ANSI escapes, a BEL, C1 CSI and U+2028: every log line of the agent, as its
    formatters write it, is one line with no escape sequence; the database keeps the text as sent."""
    from ticos_agent.logs import ConsoleFormatter, JournalFormatter

    caplog.set_level(logging.DEBUG, logger="ticos_agent")
    agent = await robot()
    v = Voice(True, "sess" + EVIL)
    peer = await connect(agent)
    rid, uid = "resp" + EVIL, "item_U" + EVIL
    await peer.send(*v.session(), *user_ga(uid, None, "heard" + EVIL),
                    ev("weird.type" + EVIL), v.created(rid),
                    *v.said(rid, "item_A" + EVIL, ["said" + EVIL], finish=False),
                    *v.call(rid, "item_F1", "call_1" + EVIL, "motion", json.dumps({"motion_tag": "wave" + EVIL})),
                    *v.call(rid, "item_F2", "call_2" + EVIL, "nobody" + EVIL, "{}", index=2),
                    ev("error", error={"type": "server_error", "message": "boom" + EVIL}),
                    ev("input_audio_buffer.speech_started", audio_start_ms=1, item_id="item_U9" + EVIL),
                    v.done(rid, status="cancelled"),
                    '{"type": "bad' + EVIL.replace("\x00", "") + '", ')
    frames = await replies(peer)
    assert frames and all(f["type"] in ("error", "conversation.item.create") for f in frames)
    await settle(agent)
    rows = await messages(agent)
    assert ("user", "heard" + EVIL, "completed", uid) in rows
    records = [r for r in caplog.records if r.name.startswith("ticos_agent") and not r.exc_info]
    assert len(records) > 5
    joined = " ".join(r.getMessage() for r in records)
    assert "forged line" in joined  # the hostile text did reach the log ...
    for fmt in (ConsoleFormatter(), JournalFormatter()):
        for record in records:
            line = fmt.format(record)
            assert "\n" not in line and "\r" not in line, line  # ... each on one line
            assert not any(c in line for c in "\x1b\x07\x00\x9b\u2028"), line
            assert len(line) < 4000, line[:200]


async def test_duplicate_json_keys_last_one_wins_for_the_frame_and_the_arguments(robot, connect):
    """JSON with a repeated key (a relay appending a field): the last value counts, in the frame
    and in the call's arguments, the same for what moves, what is stored and what handlers get."""
    agent = await robot()
    seen = []
    agent.on("response.output_item.done", lambda event: seen.append(event["item"]["name"]))
    peer = await connect(agent)
    t0 = now()
    args = '{"motion_tag": "wave", "repeat": 3, "motion_tag": "sway", "repeat": 1}'
    first = json.dumps(Voice.call_item("item_F0", "call_x", "emotion", '{"emotion_tag":"happy"}'))
    second = json.dumps(Voice.call_item("item_F1", "call_dup", "motion", args))
    frame = ('{"type": "response.output_item.done", "event_id": "evt_dup", "response_id": "resp_1", '
             f'"item": {first}, "output_index": 0, "item": {second}}}')
    await peer.send('{"type": "session.created", "type": "response.created", "event_id": "evt_c", '
                    '"response": {"id": "resp_1", "status": "in_progress", "output": []}}', frame)
    row = (await calls(agent, "call_dup"))["call_dup"]
    assert row["status"] == "done" and row["name"] == "motion" and row["arguments"] == args
    assert moves(agent, t0) == [20, 0]  # one sway, not three waves
    assert lights(agent, t0) == []  # the first "item" was never a call
    await wait_for(lambda: seen)
    assert seen == ["motion"]
    assert agent.turns.active_response(next(iter(agent.peers))) == "resp_1"
    assert await replies(peer) == []


async def test_ten_thousand_distinct_unknown_types_keep_memory_and_health_bounded(robot, connect, http):
    """A voice agent that puts a counter in its type names: every one is counted and ignored; the
    handlers' topic cache, the dispatcher's table, /health and the per-connection state do not
    grow with the number of distinct names."""
    agent = await robot()
    every = []
    agent.on("*", lambda event: every.append(1))
    peer = await connect(agent)
    v = Voice(True, "sess_types")
    await peer.send(*v.session(), *user_ga("item_U0", None, "warm up"))
    await settle(agent)
    from ticos_agent.consumers import IntegratorEvents

    integ = next(h.__self__ for _, routes in agent.intake._consumers for h in routes.values()
                 if isinstance(getattr(h, "__self__", None), IntegratorEvents))
    size0 = len(json.dumps(agent.health()))
    topics0, handlers0 = len(integ._topics), len(agent.dispatcher._handlers)
    for chunk in range(10):
        await peer.send(*[ev(f"vendor.metric.{chunk}_{n}.tick", value=n) for n in range(1000)])
    await wait_for(lambda: agent.counters["events"] >= helpers._SENT[agent.port], timeout=30)
    await settle(agent)
    assert agent.counters["ignored"] == 10_000 and agent.counters["errors"] == 0, agent.counters
    assert len(integ._topics) == topics0 and len(agent.dispatcher._handlers) == handlers0
    assert abs(len(json.dumps(agent.health())) - size0) < 200
    await wait_for(lambda: len(every) >= 10_000 + 7, timeout=30)
    await peer.send(*user_ga("item_U1", None, "still here"))
    assert await messages(agent) == [("user", "warm up", "completed", "item_U0"),
                                     ("user", "still here", "completed", "item_U1")]
    h = await health(agent, http)
    assert h["status"] == "ok"


def _transcript_frame(item_id: str, text: str) -> str:
    return json.dumps(ev("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                         transcript=text), ensure_ascii=False)


async def test_a_frame_of_exactly_one_mib_is_taken(robot, connect):
    """README: "Frames over server.max_frame_bytes (1 MiB) close that socket with 1009": one of
    exactly 1,048,576 bytes is not over, and is stored."""
    agent = await robot()
    peer = await connect(agent)
    await peer.send(*user_ga("item_U1", None, None))
    overhead = len(_transcript_frame("item_U1", "").encode())
    text = "a" * (1024 * 1024 - overhead)
    exact = _transcript_frame("item_U1", text)
    assert len(exact.encode()) == 1024 * 1024
    await peer.send(exact)
    await settle(agent)
    assert not peer.ws.closed
    assert await messages(agent) == [("user", text, "completed", "item_U1")]


async def test_the_frame_cap_counts_bytes_so_a_cjk_frame_under_a_million_characters_is_closed(robot, connect):
    """1 MiB is counted in bytes on the wire: 400,000 CJK characters (1.2 MB of UTF-8) close the
    socket with 1009; a CJK frame just under the cap in bytes is stored whole; other sockets go on."""
    agent = await robot()
    v = Voice(True, "sess_cap")
    peer = await connect(agent)
    await peer.send(*user_ga("item_U1", None, None))
    fits = "长" * ((1024 * 1024 - 200) // 3)
    await peer.send(_transcript_frame("item_U1", fits))
    assert await messages(agent) == [("user", fits, "completed", "item_U1")]
    await peer.send(*user_ga("item_U2", None, None))
    await peer.send(_transcript_frame("item_U2", "长" * 400_000))
    msg = await peer.ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert peer.ws.close_code == 1009
    other = await connect(agent)
    await other.send(*v.session(), *user_ga("item_U3", None, "after"))
    await settle(agent)
    rows = await messages(agent)
    assert rows[0] == ("user", fits, "completed", "item_U1") and rows[-1] == ("user", "after", "completed", "item_U3")
    assert [r[1] for r in rows if r[3] == "item_U2"] in ([], [""])  # never the 1.2 MB transcript


# --- 7. fragmented WebSocket messages, by hand ----------------------------------------------------------

class RawWs:
    """A WebSocket client written by hand, to send what aiohttp's client never does: a message in
    many fragments, control frames between them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawWs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /realtime HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        rep = (mask * (n // 4 + 1))[:n]
        body = (int.from_bytes(payload, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big") if n else b""
        self.writer.write(head + mask + body)

    def fragmented(self, text: str, size: int, ping_at: int | None = None, binary: bool = False) -> None:
        data = text.encode()
        pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        for i, piece in enumerate(pieces):
            if i == ping_at:
                self.frame(0x9, b"are you there")
            self.frame((0x2 if binary else 0x1) if i == 0 else 0x0, piece, fin=i == len(pieces) - 1)

    async def read(self, timeout: float = 5.0) -> tuple[int, bytes]:
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await asyncio.wait_for(self.reader.readexactly(n), timeout)

    def close(self) -> None:
        self.writer.close()


async def test_messages_in_many_fragments_with_a_ping_between_are_whole_events(robot):
    """Every event of a voice turn sent as a message of 1-7 byte fragments (text and binary), a
    ping in the middle of one: the agent answers the ping, stores the turn and runs the wave."""
    agent = await robot()
    v = Voice(True, "sess_frag")
    trace = [*v.session(), *user_ga("item_U1", None, "Fragmented 你好 🤖"), v.created("resp_1"),
             *v.said("resp_1", "item_A1", ["Piece ", "by ", "piece 🧩"]),
             *v.call("resp_1", "item_F1", "call_1", "motion", '{"motion_tag":"wave"}', index=1), v.done("resp_1")]
    ws = await RawWs.open(agent.port)
    try:
        t0 = now()
        for n, event in enumerate(trace):
            ws.fragmented(json.dumps(event, ensure_ascii=False), size=1 + n % 7, ping_at=3 if n == 5 else None,
                          binary=n % 2 == 1)
        await ws.writer.drain()
        opcode, payload = await ws.read()
        assert (opcode, payload) == (0xA, b"are you there")  # the pong
        await wait_for(lambda: agent.counters["events"] >= len(trace), timeout=10)
        assert (await calls(agent, "call_1"))["call_1"]["status"] == "done"
        assert moves(agent, t0) == [30, 0]
        assert await messages(agent) == [("user", "Fragmented 你好 🤖", "completed", "item_U1"),
                                         ("assistant", "Piece by piece 🧩", "completed", "item_A1")]
        assert agent.counters["errors"] == 0
    finally:
        ws.close()


async def test_a_message_over_the_cap_in_small_fragments_is_closed_1009(robot, connect):
    """Fragments of 64 KiB each, none over the cap, adding up to 1.5 MiB: the message is over the
    cap and the socket is closed with 1009 (or reset, when the agent closes while the rest is still
    on the wire) and never taken in whole; other sockets go on."""
    agent = await robot()
    errors0 = agent.counters["errors"]
    ws = await RawWs.open(agent.port)
    try:
        big = _transcript_frame("item_U1", "z" * (1536 * 1024))
        ws.fragmented(big, size=64 * 1024)
        try:
            await ws.writer.drain()
            opcode, payload = await ws.read()
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the close frame lost to the reset of the unread rest
    finally:
        ws.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    assert agent.counters["errors"] == errors0 + 1 and agent.counters["events"] == 0
    peer = await connect(agent)
    await peer.send(*user_ga("item_U2", None, "fine"))
    assert await messages(agent) == [("user", "fine", "completed", "item_U2")]


# --- 8. more of what must stop and what must stay ---------------------------------------------------------

async def test_the_user_speaking_after_the_answer_lets_its_emotion_finish_fading_in(robot, connect):
    """The answer is over (response.done); its emotion still fades in. The user starts the next
    turn: no barge-in (nothing is being said), and the face goes on to full happy, not cut."""
    agent = await robot()
    v = Voice(True, "sess_glow")
    peer = await connect(agent)
    t0 = now()
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["Yay"]),
                    *v.call("resp_1", "item_F1", "call_glow", "emotion",
                            '{"emotion_tag":"happy","fade_in":1.0,"duration":30}', index=1),
                    v.done("resp_1"))
    await wait_for(lambda: lights(agent, t0))
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"))
    await wait_for(lambda: agent.health()["robot"]["state"] == "listening")
    await wait_for(lambda: lights(agent, t0)[-1] == (HAPPY, 1.0), timeout=4)
    assert [c for c, _ in lights(agent, t0)] == [HAPPY] * len(lights(agent, t0))
    assert agent.counters.get("interruptions", 0) == 0
    assert (await calls(agent, "call_glow"))["call_glow"]["status"] == "done"


async def test_barge_in_drops_the_queued_wave_but_not_the_finished_responses_sway_ahead_of_it(robot, connect):
    """resp_1 is done and its sway (2 s) still plays; resp_2 queued a wave behind it on the same
    arm. The user talks over resp_2: the wave is dropped; the sway, not resp_2's, plays to its end."""
    agent = await robot()
    v = Voice(True, "sess_lane")
    peer = await connect(agent)
    t0 = now()
    await peer.send(v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_sway", "motion", '{"motion_tag":"sway","repeat":4}'),
                    v.done("resp_1"), v.created("resp_2"), *v.said("resp_2", "item_A2", ["And "], finish=False),
                    *v.call("resp_2", "item_F2", "call_wave", "motion", '{"motion_tag":"wave"}', index=1))
    await wait_for(lambda: moves(agent, t0))
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"))
    rows = await calls(agent, "call_sway", "call_wave")
    assert rows["call_wave"]["status"] == "dropped"
    assert rows["call_sway"]["status"] == "done"
    assert moves(agent, t0) == [20, 0] * 4


async def test_a_call_without_response_id_belongs_to_the_response_being_spoken(robot, connect):
    """A relay drops ``response_id`` from the call's ``output_item.done`` while resp_1 is being
    spoken on that socket. The user talks over resp_1: the robot must stop that motion too
    (a person sees one answer and one motion, and interrupted both)."""
    agent = await robot()
    v = Voice(True, "sess_norid")
    peer = await connect(agent)
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["Look "], finish=False),
                    ev("response.output_item.done", output_index=1,
                       item=v.call_item("item_F1", "call_sway", "motion", '{"motion_tag":"sway","repeat":20}')))
    await wait_for(lambda: moves(agent))
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"))
    assert (await calls(agent, "call_sway", timeout=3))["call_sway"]["status"] == "dropped"
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")


async def test_clamped_motions_count_against_the_queue_cap_and_busy_is_always_answered(robot, connect):
    """sway x20 at speed 0.001 (clamped to 0.1): 100 s of planned motion. A wave fits behind it;
    a second such sway would put 200 s on the arm (cap 120 s): answered ``busy`` at once, sent back
    as its output though outputs are off, and stored. A barge-in then clears the rest."""
    agent = await robot()
    v = Voice(True, "sess_cap_q")
    peer = await connect(agent)
    slow = '{"motion_tag":"sway","repeat":20,"speed":0.001}'
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["Slowly "], finish=False),
                    *v.call("resp_1", "item_F1", "call_slow", "motion", slow, index=1),
                    *v.call("resp_1", "item_F2", "call_wave", "motion", '{"motion_tag":"wave"}', index=2),
                    *v.call("resp_1", "item_F3", "call_more", "motion", slow, index=3))
    row = (await calls(agent, "call_more"))["call_more"]
    assert row["status"] == "busy"
    frames = await replies(peer)
    outs = [f for f in frames if f["type"] == "conversation.item.create"]
    assert [o["item"]["call_id"] for o in outs] == ["call_more"]
    assert json.loads(outs[0]["item"]["output"])["status"] == "busy"
    await wait_for(lambda: moves(agent))
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"))
    rows = await calls(agent, "call_slow", "call_wave")
    assert rows["call_slow"]["status"] == rows["call_wave"]["status"] == "dropped"
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")
    assert 30 not in moves(agent)


async def test_a_voice_agent_that_dies_mid_answer_does_not_leave_the_robot_speaking(robot, connect, http):
    """The voice agent crashes mid-answer and never comes back: after the reconnect grace the
    answer is stored as incomplete and the robot is no longer "speaking" (a person would see it
    mouthing words forever otherwise)."""
    agent = await robot()
    v = Voice(True, "sess_dead")
    peer = await connect(agent)
    await peer.send(*v.session(), v.created("resp_1"), *v.said("resp_1", "item_A1", ["I was about "], finish=False))
    await wait_for(lambda: agent.health()["robot"]["state"] == "speaking")
    await peer.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    await wait_for(lambda: agent.health()["robot"]["state"] in ("idle", "sleeping"), timeout=3)
    await wait_for(lambda: not agent.conversations._waiting, timeout=3)  # past the grace (0.2 s)
    assert await messages(agent) == [("assistant", "I was about ", "incomplete", "item_A1")]
    assert (await health(agent, http))["robot"]["state"] in ("idle", "sleeping")


async def test_parallel_calls_streaming_interleaved_each_get_their_own_arguments(robot, connect):
    """GA parallel tool calls: the argument deltas of two calls interleave piece by piece and the
    output items carry no arguments. Each call runs once with its own arguments; the motion
    handler gets the checked values (clamped) and the fields it does not check, unchanged."""
    agent = await robot()
    motions, fns = [], []
    agent.on_motion(motions.append)
    agent.on_function("lights", lambda call: fns.append(call.arguments) or "ok")
    v = Voice(True, "sess_inter")
    peer = await connect(agent)
    a = '{"motion_tag":"wave","repeat":500,"speed":9,"style":"big"}'
    b = '{"room":"hall","level":0.25}'
    t0 = now()
    bare = {"F1": v.call_item("item_F1", "call_a", "motion", ""), "F2": v.call_item("item_F2", "call_b", "lights", "")}
    frames = [v.created("resp_1"),
              ev("response.output_item.added", response_id="resp_1", output_index=0, item=bare["F1"]),
              ev("response.output_item.added", response_id="resp_1", output_index=1, item=bare["F2"])]
    for i in range(0, max(len(a), len(b)), 5):
        for idx, (call_id, text) in enumerate((("call_a", a), ("call_b", b))):
            if text[i:i + 5]:
                frames.append(ev("response.function_call_arguments.delta", response_id="resp_1",
                                 item_id=f"item_F{idx + 1}", output_index=idx, call_id=call_id, delta=text[i:i + 5]))
    frames += [ev("response.function_call_arguments.done", response_id="resp_1", item_id="item_F2", output_index=1,
                  call_id="call_b", name="lights", arguments=b),
               ev("response.function_call_arguments.done", response_id="resp_1", item_id="item_F1", output_index=0,
                  call_id="call_a", name="motion", arguments=a),
               ev("response.output_item.done", response_id="resp_1", output_index=1, item=bare["F2"]),
               ev("response.output_item.done", response_id="resp_1", output_index=0, item=bare["F1"]),
               v.done("resp_1", list(bare.values()))]
    await peer.send(*frames)
    rows = await calls(agent, "call_a", "call_b", timeout=10)
    assert rows["call_a"]["arguments"] == a and rows["call_b"]["arguments"] == b
    assert rows["call_a"]["status"] == rows["call_b"]["status"] == "done"
    assert moves(agent, t0) == [30, 0] * 20
    await wait_for(lambda: motions and fns)
    assert fns == [{"room": "hall", "level": 0.25}]
    assert motions == [{"motion_tag": "wave", "repeat": 20, "speed": 5.0, "wait": True, "style": "big"}]
    assert agent.counters["dispatches"] == 2 and agent.counters["errors"] == 0
