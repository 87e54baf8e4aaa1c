"""Realtime traces, second round: what ``test_traces_unseen.py`` did not play.

GA-only event shapes (items added then done, transcription deltas, text-only responses, content
parts, the output audio buffer, rate limits), the user's transcription arriving after the
assistant answered, failed and empty transcriptions, parallel and oddly streamed function calls,
responses that end ``cancelled``/``incomplete``/``failed``, barge-ins at odd moments, unicode and
very long text, many sessions one after another and two at once, and what an integrator sees
through ``TicosClient``. The same robot (conftest's ``robot``), voice builders (``traces``) and
readers (``helpers``): a real agent on a loopback port, real sockets, a real SQLite file, simulated
``mock`` actuators.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
import helpers
import pytest
from helpers import (
    calls,
    free_port,
    health,
    messages,
    messages_all,
    moves,
    ops,
    recording_client,
    replies,
    settle,
    wait_for,
    wait_sync,
)
from traces import Voice, ev, user_ga


def text_said(v: Voice, rid: str, item_id: str, parts: list[str], *, index: int = 0) -> list[dict]:
    """A text-only answer (no audio), GA shape: item added, content part, text deltas, done."""
    where = {"response_id": rid, "item_id": item_id, "output_index": index, "content_index": 0}
    out = [ev("response.output_item.added", response_id=rid, output_index=index,
              item={"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}),
           ev("conversation.item.added", previous_item_id=None,
              item={"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}),
           ev("response.content_part.added", **where, part={"type": "output_text", "text": ""})]
    out += [ev("response.output_text.delta", **where, delta=p) for p in parts]
    whole = "".join(parts)
    item = {"id": item_id, "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": whole}]}
    out += [ev("response.output_text.done", **where, text=whole),
            ev("response.content_part.done", **where, part={"type": "output_text", "text": whole}),
            ev("response.output_item.done", response_id=rid, output_index=index, item=item),
            ev("conversation.item.done", previous_item_id=None, item=item)]
    return out


def text_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text}]}


async def api_messages(agent, http, **query) -> list[dict]:
    await settle(agent)
    async with http.get(f"http://127.0.0.1:{agent.port}/v1/messages", params=query) as r:
        assert r.status == 200
        body = await r.json()
    return body["messages"] if isinstance(body, dict) else body


# --- 1. GA-only shapes --------------------------------------------------------------------------------

async def test_ga_text_only_turn_with_every_side_event_is_stored_once_and_answered_with_nothing(robot, connect,
                                                                                                  http):
    agent = await robot()
    convo, every = [], []
    agent.on_conversation(lambda *a: convo.append(a))
    agent.on("*", lambda event: every.append(event["type"]))
    v = Voice(True, "sess_ga_text")
    rid = "resp_1"
    trace = [*v.session(),
             ev("input_audio_buffer.cleared"),
             *user_ga("item_U1", ["What ", "time ", "is it?"], "What time is it?"),
             ev("conversation.item.retrieved", item={"id": "item_U1", "type": "message", "role": "user",
                                                     "content": [{"type": "input_audio",
                                                                  "transcript": "What time is it?"}]}),
             v.created(rid),
             ev("rate_limits.updated", rate_limits=[{"name": "tokens", "limit": 1000, "remaining": 900,
                                                     "reset_seconds": 1.0}]),
             *text_said(v, rid, "item_A1", ["It is ", "ten ", "o'clock."]),
             v.done(rid, [text_item("item_A1", "It is ten o'clock.")]),
             ev("session.updated", session={"id": "sess_ga_text", "object": "realtime.session"})]
    peer = await connect(agent)
    await peer.send(*trace)
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "What time is it?", "completed", "item_U1"),
                                     ("assistant", "It is ten o'clock.", "completed", "item_A1")]
    stored = await api_messages(agent, http)
    assert {m["session_id"] for m in stored} == {"sess_ga_text"}
    # the user's item added then done: one "" then the transcript, not twice
    assert [c for c in convo if c[0] == "item_U1"] == [("item_U1", "user", ""), ("item_U1", "user",
                                                                                  "What time is it?")]
    assert "".join(c[2] for c in convo if c[0] == "item_A1") == "It is ten o'clock."
    await wait_for(lambda: len(every) == len(trace))
    assert every == [event["type"] for event in trace]
    h = await health(agent, http)
    assert h["status"] == "ok" and h["counters"]["errors"] == 0 and h["counters"]["events"] == len(trace)


@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_transcription_after_the_answer_completes_the_users_row_in_its_place(robot, connect, http, ga):
    """Transcription runs beside the response: the user's words come after the robot answered.
    The row was kept in its place (before the answer) and is completed there."""
    agent = await robot()
    v = Voice(ga, "sess_late")
    peer = await connect(agent)
    await peer.send(*v.session(), *v.user("item_U1", None), v.created("resp_1"),
                    *v.said("resp_1", "item_A1", ["Hello ", "there!"]), v.done("resp_1"))
    await settle(agent)
    assert await messages(agent) == [("user", "", "pending", "item_U1"),
                                     ("assistant", "Hello there!", "completed", "item_A1")]
    await peer.send(ev("conversation.item.input_audio_transcription.delta", item_id="item_U1", content_index=0,
                       delta="Hi "),
                    ev("conversation.item.input_audio_transcription.completed", item_id="item_U1", content_index=0,
                       transcript="Hi robot"))
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Hi robot", "completed", "item_U1"),
                                     ("assistant", "Hello there!", "completed", "item_A1")]
    api = await api_messages(agent, http)
    assert [(m["role"], m["content"]) for m in api] == [("assistant", "Hello there!"), ("user", "Hi robot")]


async def test_failed_and_empty_transcriptions_leave_no_pending_row_and_a_retry_wins(robot, connect, http):
    agent = await robot()
    v = Voice(True, "sess_fail")
    peer = await connect(agent)
    failed = ev("conversation.item.input_audio_transcription.failed", item_id="item_U1", content_index=0,
                error={"type": "transcription_error", "code": "audio_unintelligible", "message": "noise"})
    await peer.send(*v.session(), *user_ga("item_U1", ["mm"], None), failed,
                    *user_ga("item_U2", [], ""),
                    *user_ga("item_U3", None, None), failed | {"item_id": "item_U3", "event_id": "evt_f3"},
                    ev("conversation.item.input_audio_transcription.completed", item_id="item_U3", content_index=0,
                       transcript="second try"),
                    # a failure after a transcript never erases it
                    *user_ga("item_U4", None, "kept"), failed | {"item_id": "item_U4", "event_id": "evt_f4"})
    assert await replies(peer) == []
    rows = await messages(agent)
    assert rows[0] == ("user", "", "transcription_failed", "item_U1")
    assert rows[1] == ("user", "", "completed", "item_U2")
    assert rows[2:] == [("user", "second try", "completed", "item_U3"), ("user", "kept", "completed", "item_U4")]
    assert (await health(agent, http))["status"] == "ok"


async def test_deleted_truncated_and_cleared_events_change_no_stored_row_and_raise_no_error(robot, connect, http):
    agent = await robot()
    v = Voice(True, "sess_del")
    peer = await connect(agent)
    await peer.send(*v.session(), *user_ga("item_U1", None, "Keep this"), v.created("resp_1"),
                    *v.said("resp_1", "item_A1", ["Kept ", "too"]), v.done("resp_1"),
                    ev("output_audio_buffer.started", response_id="resp_1"),
                    ev("output_audio_buffer.stopped", response_id="resp_1"),
                    ev("output_audio_buffer.cleared", response_id="resp_1"),
                    ev("conversation.item.truncated", item_id="item_A1", content_index=0, audio_end_ms=300),
                    ev("conversation.item.deleted", item_id="item_U1"),
                    ev("conversation.item.deleted", item_id="item_never_seen"),
                    ev("input_audio_buffer.cleared"))
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Keep this", "completed", "item_U1"),
                                     ("assistant", "Kept too", "completed", "item_A1")]
    h = await health(agent, http)
    assert h["status"] == "ok" and h["counters"]["errors"] == 0


# --- 2. function calls: parallel, streamed-only, in responses that end badly ---------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_parallel_calls_in_one_response_each_run_once(robot, connect, http, ga):
    agent = await robot()
    motions, emotions, fns = [], [], []
    agent.on_motion(motions.append)
    agent.on_emotion(emotions.append)
    agent.on_function("set_volume", lambda call: fns.append(call.arguments) or {"volume": 3})
    v = Voice(ga, "sess_par")
    m_args, em_args, f_args = '{"motion_tag":"wave"}', '{"emotion_tag":"happy","intensity":0.5}', '{"level":3}'
    items = [v.call_item("item_F1", "call_m", "motion", m_args), v.call_item("item_F2", "call_e", "emotion", em_args),
             v.call_item("item_F3", "call_f", "set_volume", f_args)]
    peer = await connect(agent)
    t0 = asyncio.get_running_loop().time()
    await peer.send(*v.session(), v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_m", "motion", m_args, index=0),
                    *v.call("resp_1", "item_F2", "call_e", "emotion", em_args, index=1),
                    *v.call("resp_1", "item_F3", "call_f", "set_volume", f_args, index=2),
                    v.done("resp_1", items), v.done("resp_1", items))  # the whole response.done twice
    assert await replies(peer) == []
    rows = await calls(agent, "call_m", "call_e", "call_f")
    assert {c: r["status"] for c, r in rows.items()} == {"call_m": "done", "call_e": "done", "call_f": "done"}
    assert {r["response_id"] for r in rows.values()} == {"resp_1"}
    await wait_for(lambda: fns and motions and emotions)
    assert fns == [{"level": 3}]
    assert [m["motion_tag"] for m in motions] == ["wave"] and [x["intensity"] for x in emotions] == [0.5]
    assert moves(agent, t0) == [30, 0]
    # the face showed happy (#FFC800) once, at the call's intensity
    assert ops(agent, "face", t0) == [("light", ((0xFF / 255, 0xC8 / 255, 0x00 / 255), 0.5, "solid", 1.0))]
    h = await health(agent, http)
    assert h["counters"]["dispatches"] == 3 and h["counters"]["duplicate_calls"] == 6


async def test_arguments_only_in_the_streamed_events_are_the_calls_arguments(robot, connect):
    """The output item and response.done carry no arguments (empty or absent): those of
    ``function_call_arguments.done`` are the call's."""
    agent = await robot()
    got = []
    agent.on_function("lights", lambda call: got.append((call.call_id, call.arguments)) or "ok")
    v = Voice(True, "sess_stream")
    peer = await connect(agent)
    a1, a2 = '{"motion_tag":"wave","repeat":2}', '{"room":"hall"}'
    bare1 = {"id": "item_F1", "type": "function_call", "status": "completed", "name": "motion", "call_id": "call_1"}
    bare2 = {"id": "item_F2", "type": "function_call", "status": "completed", "name": "lights", "call_id": "call_2",
             "arguments": ""}
    await peer.send(v.created("resp_1"),
                    ev("response.output_item.added", response_id="resp_1", output_index=0, item=bare1),
                    ev("response.function_call_arguments.delta", response_id="resp_1", item_id="item_F1",
                       output_index=0, call_id="call_1", delta=a1[:10]),
                    ev("response.function_call_arguments.delta", response_id="resp_1", item_id="item_F1",
                       output_index=0, call_id="call_1", delta=a1[10:]),
                    ev("response.function_call_arguments.done", response_id="resp_1", item_id="item_F1",
                       output_index=0, call_id="call_1", arguments=a1),
                    ev("response.output_item.done", response_id="resp_1", output_index=0, item=bare1),
                    # the second only in response.done, its arguments streamed before
                    ev("response.function_call_arguments.done", response_id="resp_1", item_id="item_F2",
                       output_index=1, call_id="call_2", arguments=a2),
                    v.done("resp_1", [bare1, bare2]))
    assert await replies(peer) == []
    rows = await calls(agent, "call_1", "call_2")
    assert rows["call_1"]["status"] == rows["call_2"]["status"] == "done"
    assert rows["call_1"]["arguments"] == a1 and rows["call_2"]["arguments"] == a2
    assert moves(agent) == [30, 0, 30, 0]
    await wait_for(lambda: got)
    assert got == [("call_2", {"room": "hall"})]
    assert agent.counters["dispatches"] == 2


async def test_calls_of_a_cancelled_response_stop_or_never_run(robot, connect):
    """A call running when its response is cancelled stops and the arm rests; a call seen first in
    the cancelled response.done is never run."""
    agent = await robot()
    v = Voice(True, "sess_cancel")
    peer = await connect(agent)
    long = '{"motion_tag":"sway","repeat":20}'
    await peer.send(v.created("resp_1"), *v.call("resp_1", "item_F1", "call_long", "motion", long))
    await wait_for(lambda: moves(agent))
    cut = asyncio.get_running_loop().time()
    await peer.send(v.done("resp_1", [v.call_item("item_F1", "call_long", "motion", long),
                                      v.call_item("item_F2", "call_new", "motion", '{"motion_tag":"wave"}')],
                           status="cancelled"))
    rows = await calls(agent, "call_long", "call_new")
    assert rows["call_long"]["status"] == rows["call_new"]["status"] == "dropped"
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")
    assert 30 not in moves(agent, cut)  # the wave never moved the arm
    assert agent.counters["dispatches"] == 1


async def test_incomplete_response_keeps_its_words_and_its_finished_call_failed_drops_them(robot, connect):
    agent = await robot()
    v = Voice(True, "sess_status")
    peer = await connect(agent)
    wave = '{"motion_tag":"wave"}'
    # max tokens: the text stops short; the call that was complete runs
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["I will wave and "]),
                    *v.call("resp_1", "item_F1", "call_ok", "motion", wave, index=1),
                    v.done("resp_1", [v.message("item_A1", "I will wave and ", "incomplete"),
                                      v.call_item("item_F1", "call_ok", "motion", wave)], status="incomplete"))
    assert (await calls(agent, "call_ok"))["call_ok"]["status"] == "done"
    # a failed response: its call seen only in response.done does not run
    await peer.send(v.created("resp_2"), *v.said("resp_2", "item_A2", ["Oops"], finish=False),
                    ev("response.done", response={"id": "resp_2", "status": "failed", "status_details": {
                         "type": "failed", "error": {"type": "server_error", "code": "internal"}},
                         "output": [v.call_item("item_F2", "call_bad", "motion", wave)]}))
    assert (await calls(agent, "call_bad"))["call_bad"]["status"] == "dropped"
    assert await replies(peer) == []
    assert await messages(agent) == [("assistant", "I will wave and ", "incomplete", "item_A1"),
                                     ("assistant", "Oops", "failed", "item_A2")]
    assert moves(agent) == [30, 0]
    assert agent.turns.active_response(next(iter(agent.peers))) is None


# --- 3. barge-ins at odd moments --------------------------------------------------------------------------

async def test_barge_in_right_after_response_created_drops_everything_of_it(robot, connect):
    agent = await robot()
    v = Voice(True, "sess_early")
    peer = await connect(agent)
    await peer.send(*v.session(), *user_ga("item_U1", None, "Dance"), v.created("resp_1"),
                    ev("input_audio_buffer.speech_started", audio_start_ms=900, item_id="item_U2"))
    await settle(agent)
    assert agent.counters["interruptions"] == 1 and agent.turns.interrupted("resp_1") == "barge-in"
    await peer.send(*v.said("resp_1", "item_A1", ["Let's "]),
                    *v.call("resp_1", "item_F1", "call_d", "motion", '{"motion_tag":"sway"}', index=1),
                    v.done("resp_1", [v.message("item_A1", "Let's ", "incomplete")], status="cancelled"),
                    *user_ga("item_U2", None, "No, stop"))
    assert (await calls(agent, "call_d"))["call_d"]["status"] == "dropped"
    assert moves(agent) == []
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Dance", "completed", "item_U1"),
                                     ("assistant", "Let's ", "cancelled", "item_A1"),
                                     ("user", "No, stop", "completed", "item_U2")]
    assert agent.counters["interruptions"] == 1


async def test_two_barge_ins_in_a_row_stop_the_response_once(robot, connect):
    """The user starts, pauses, starts again before the voice agent's cancellation arrives: the
    robot was interrupted once (the second start stops nothing more)."""
    agent = await robot()
    v = Voice(True, "sess_twice")
    peer = await connect(agent)
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["Well "], finish=False),
                    *v.call("resp_1", "item_F1", "call_s", "motion", '{"motion_tag":"sway","repeat":20}', index=1))
    await wait_for(lambda: moves(agent))
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"),
                    ev("input_audio_buffer.speech_stopped", audio_end_ms=200, item_id="item_U2"),
                    ev("input_audio_buffer.speech_started", audio_start_ms=400, item_id="item_U3"))
    assert (await calls(agent, "call_s"))["call_s"]["status"] == "dropped"
    await settle(agent)
    assert agent.counters["interruptions"] == 1
    await peer.send(v.done("resp_1", status="cancelled"))
    await settle(agent)
    assert agent.counters["interruptions"] == 1


async def test_speech_with_no_response_is_no_barge_in(robot, connect, http):
    agent = await robot()
    states = []
    agent.on_state(lambda state, previous: states.append(state))
    v = Voice(True, "sess_quiet")
    peer = await connect(agent)
    await peer.send(*v.session(), *user_ga("item_U1", None, "hello?"))
    assert await replies(peer) == []
    await settle(agent)
    assert agent.counters.get("interruptions", 0) == 0
    await wait_for(lambda: "listening" in states)
    assert await messages(agent) == [("user", "hello?", "completed", "item_U1")]
    assert (await health(agent, http))["status"] == "ok"


# --- 4. text: unicode, very long --------------------------------------------------------------------------

UNICODE = ["你好，机器人！", "こんにちは 🤖👋🏽", "Привет, ", "مرحبا ", "👨‍👩‍👧‍👦 e\u0301 \u200d", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]


@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_unicode_and_very_long_text_are_stored_exactly(robot, connect, http, ga):
    agent = await robot()
    v = Voice(ga, "sess_uni")
    long_user = ("长" * 50_000) + " 🤖" * 10_000  # about 100 KB of characters, one frame
    long_parts = [f"part {n} 段落 🦾 " * 40 for n in range(200)]  # ~ 100 KB in 200 deltas
    peer = await connect(agent)
    await peer.send(*v.session(), *v.user("item_U1", "".join(UNICODE)), v.created("resp_1"),
                    *v.said("resp_1", "item_A1", UNICODE), v.done("resp_1"))
    await peer.send(*v.user("item_U2", long_user), v.created("resp_2"),
                    *v.said("resp_2", "item_A2", long_parts, audio=False), v.done("resp_2"))
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "".join(UNICODE), "completed", "item_U1"),
                                     ("assistant", "".join(UNICODE), "completed", "item_A1"),
                                     ("user", long_user, "completed", "item_U2"),
                                     ("assistant", "".join(long_parts), "completed", "item_A2")]
    api = await api_messages(agent, http)
    assert [m["content"] for m in api][::-1] == ["".join(UNICODE), "".join(UNICODE), long_user, "".join(long_parts)]
    assert (await health(agent, http))["status"] == "ok"


# --- 5. many sessions, one after another and two at once ---------------------------------------------------

async def test_many_sessions_one_after_another_each_keeps_its_rows(robot, connect, http):
    agent = await robot()
    for n in range(15):
        v = Voice(n % 2 == 0, f"sess_{n:02d}")
        peer = await connect(agent)
        await peer.send(*v.session(), *v.user(f"item_U{n}", f"question {n}"), v.created(f"resp_{n}"),
                        *v.said(f"resp_{n}", f"item_A{n}", ["answer ", str(n)]),
                        *v.call(f"resp_{n}", f"item_F{n}", f"call_{n}", "emotion", '{"emotion_tag":"happy"}',
                                index=1), v.done(f"resp_{n}"))
        await settle(agent)
        await peer.close()
        await wait_for(lambda: agent.health()["connections"] == 0)
    rows = await messages_all(agent)
    assert len(rows) == 30
    stored = await agent.store.messages(limit=100)
    by_session: dict[str, list] = {}
    for r in stored:
        by_session.setdefault(r["session_id"], []).append(r["content"])
    assert {s: sorted(c) for s, c in by_session.items()} == {
        f"sess_{n:02d}": sorted([f"question {n}", f"answer {n}"]) for n in range(15)}
    only = await api_messages(agent, http, session="sess_07")
    assert sorted(m["content"] for m in only) == ["answer 7", "question 7"]
    rows = await calls(agent, *[f"call_{n}" for n in range(15)])
    assert {r["session_id"] for r in rows.values()} == {f"sess_{n:02d}" for n in range(15)}
    h = await health(agent, http)
    assert h["status"] == "ok" and h["connections"] == 0 and h["counters"]["errors"] == 0
    assert h["counters"]["dispatches"] == 15


async def test_two_sessions_interleaved_frame_by_frame_stay_apart(robot, connect):
    """Two voice agents at once: their frames interleave; rows keep their sessions, and a barge-in
    on one socket does not stop the other's response or motion."""
    agent = await robot()
    a, b = Voice(True, "sess_A"), Voice(False, "sess_B")
    pa, pb = await connect(agent), await connect(agent)
    ta = [*a.session(), *a.user("item_UA", "alpha question"), a.created("resp_A"),
          *a.said("resp_A", "item_AA", ["alpha ", "answer"], finish=False)]
    tb = [*b.session(), *b.user("item_UB", "beta question"), b.created("resp_B"),
          *b.call("resp_B", "item_FB", "call_B", "motion", '{"motion_tag":"sway","repeat":2}', index=1),
          *b.said("resp_B", "item_AB", ["beta ", "answer"], finish=False)]
    for n in range(max(len(ta), len(tb))):
        if n < len(ta):
            await pa.send(ta[n])
        if n < len(tb):
            await pb.send(tb[n])
    await wait_for(lambda: moves(agent))
    await pa.send(ev("input_audio_buffer.speech_started", audio_start_ms=5, item_id="item_UA2"),
                  a.done("resp_A", [a.message("item_AA", "alpha answer", "incomplete")], status="cancelled"))
    await settle(agent)
    assert agent.turns.interrupted("resp_A") == "barge-in" and agent.turns.interrupted("resp_B") is None
    await pb.send(ev("response.output_item.done", response_id="resp_B", output_index=0,
                     item=b.message("item_AB", "beta answer")), b.done("resp_B"))
    assert (await calls(agent, "call_B"))["call_B"]["status"] == "done"
    assert moves(agent) == [20, 0, 20, 0]
    assert await replies(pa) == [] and await replies(pb) == []
    stored = await agent.store.messages(limit=10)
    assert sorted((r["session_id"], r["role"], r["content"], r["status"]) for r in stored) == [
        ("sess_A", "assistant", "alpha answer", "cancelled"), ("sess_A", "user", "alpha question", "completed"),
        ("sess_B", "assistant", "beta answer", "completed"), ("sess_B", "user", "beta question", "completed")]


# --- 6. what an integrator sees through TicosClient --------------------------------------------------------

async def test_ticos_client_sees_a_ga_trace_with_parallel_calls_and_a_late_transcript(tmp_path):
    port = free_port()
    client, seen = recording_client(port, tmp_path / "store")
    v = Voice(True, "sess_client")
    both = '{"motion_tag":"nod","emotion_tag":"happy","intensity":0.4}'
    trace = [*v.session(), *user_ga("item_U1", None, None), v.created("resp_1"),
             *text_said(v, "resp_1", "item_A1", ["好的", "，", "🤖!"]),
             *v.call("resp_1", "item_F1", "call_1", "motion_and_emotion", both, index=1),
             *v.call("resp_1", "item_F2", "call_2", "set_volume", '{"level":2}', index=2),
             v.done("resp_1", [text_item("item_A1", "好的，🤖!"),
                               v.call_item("item_F1", "call_1", "motion_and_emotion", both),
                               v.call_item("item_F2", "call_2", "set_volume", '{"level":2}')]),
             ev("conversation.item.input_audio_transcription.completed", item_id="item_U1", content_index=0,
                transcript="点头")]
    assert client.start()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"http://127.0.0.1:{port}/realtime") as ws:
            for event in trace:
                await ws.send_str(json.dumps(event, ensure_ascii=False))
            wait_sync(lambda: len(seen.messages) >= len(trace) and seen.functions and seen.motions and seen.emotions,
                      5.0)
            with pytest.raises(asyncio.TimeoutError):  # nothing is sent back
                await ws.receive(timeout=0.2)
    finally:
        client.stop()
    assert [m["type"] for m in seen.messages] == [event["type"] for event in trace]  # as on the wire, once each
    assert seen.functions == [("set_volume", {"level": 2})]
    assert seen.motions[0]["motion_tag"] == "nod" and seen.emotions[0]["emotion_tag"] == "happy"
    assert seen.emotions[0]["intensity"] == 0.4
    assert seen.convo[0] == ("item_U1", "user", "") and seen.convo[-1] == ("item_U1", "user", "点头")
    assert "".join(c for i, r, c in seen.convo if i == "item_A1") == "好的，🤖!"
    rows = sqlite3.connect(tmp_path / "store" / "ticos.db").execute(
        "SELECT role, content, item_id FROM messages ORDER BY rowid").fetchall()
    assert rows == [("user", "点头", "item_U1"), ("assistant", "好的，🤖!", "item_A1")]


# --- 7. more GA shapes and overlapping responses --------------------------------------------------------

async def test_typed_user_text_added_then_done_is_one_completed_row(robot, connect):
    agent = await robot()
    convo = []
    agent.on_conversation(lambda *a: convo.append(a))
    item = {"id": "item_T1", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": "typed 文字 ✍️"}]}
    peer = await connect(agent)
    await peer.send(ev("conversation.item.added", previous_item_id=None, item=item),
                    ev("conversation.item.done", previous_item_id=None, item=item),
                    ev("conversation.item.retrieved", item=item))
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "typed 文字 ✍️", "completed", "item_T1")]
    await wait_for(lambda: convo)
    await settle(agent)
    assert convo == [("item_T1", "user", "typed 文字 ✍️")]


async def test_barge_in_stops_an_earlier_response_still_speaking_when_a_second_began(robot, connect):
    """An out-of-band response (GA ``conversation: none``) starts while the first still streams its
    words and runs its motion: the user talking stops both, not only the newer one."""
    agent = await robot()
    v = Voice(True, "sess_overlap")
    peer = await connect(agent)
    await peer.send(v.created("resp_1"), *v.said("resp_1", "item_A1", ["First "], finish=False),
                    *v.call("resp_1", "item_F1", "call_1", "motion", '{"motion_tag":"sway","repeat":20}', index=1))
    await wait_for(lambda: moves(agent))
    await peer.send(v.created("resp_2"), *v.said("resp_2", "item_A2", ["Second "], finish=False),
                    ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"))
    rows = await calls(agent, "call_1")
    assert rows["call_1"]["status"] == "dropped"
    assert agent.turns.interrupted("resp_1") == "barge-in" and agent.turns.interrupted("resp_2") == "barge-in"
    assert agent.counters["interruptions"] == 1
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")


async def test_a_very_long_unicode_session_id_still_finds_its_rows_by_that_id(robot, connect, http):
    """The README: a session id over 128 characters is stored as its first 96 and a digest. An
    integrator who asks ``/v1/messages?session=`` with the id the voice agent gave gets its rows."""
    agent = await robot()
    sid = "会话-🤖-" + "x" * 300
    v = Voice(True, sid)
    peer = await connect(agent)
    await peer.send(*v.session(), *v.user("item_U1", "long id"), v.created("resp_1"),
                    *v.said("resp_1", "item_A1", ["ok"]), v.done("resp_1"))
    other = await connect(agent)
    await other.send(*Voice(True, "sess_short").session(), *user_ga("item_O1", None, "other"))
    assert await replies(peer) == []
    stored = await agent.store.messages(limit=10)
    kept = {r["session_id"] for r in stored if r["item_id"] != "item_O1"}
    assert len(kept) == 1 and len(next(iter(kept))) <= 128 and next(iter(kept)).startswith(sid[:96])
    found = await api_messages(agent, http, session=sid)
    assert sorted(m["content"] for m in found) == ["long id", "ok"]
    assert [m["content"] for m in await api_messages(agent, http, session="sess_short")] == ["other"]


async def test_the_calls_api_and_voice_agent_errors_in_a_ga_trace(robot, connect, http):
    """``GET /v1/calls`` lists every call of a parallel response with its outcome; the voice
    agent's own error events in between are logged, never answered, and leave /health ok."""
    agent = await robot()
    v = Voice(True, "sess_api")
    peer = await connect(agent)
    await peer.send(*v.session(), v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_a", "motion", '{"motion_tag":"wave"}', index=0),
                    ev("error", error={"type": "invalid_request_error", "code": "response_cancel_not_active",
                                       "message": "Cancellation failed: no active response found", "event_id": None}),
                    *v.call("resp_1", "item_F2", "call_b", "emotion", '{"emotion_tag":"sad"}', index=1),
                    *v.call("resp_1", "item_F3", "call_c", "no_such_function", '{}', index=2),
                    v.done("resp_1"))
    frames = await replies(peer)
    assert all(f["type"] != "error" for f in frames)
    rows = await calls(agent, "call_a", "call_b", "call_c")
    async with http.get(f"http://127.0.0.1:{agent.port}/v1/calls") as r:
        assert r.status == 200
        listed = {c["call_id"]: c for c in (await r.json())["calls"]}
    assert set(listed) == {"call_a", "call_b", "call_c"}
    assert {c: listed[c]["status"] for c in listed} == {c: rows[c]["status"] for c in rows}
    assert listed["call_a"]["status"] == "done" and listed["call_b"]["status"] == "failed"
    assert listed["call_c"]["status"] == "failed"
    assert {c["session_id"] for c in listed.values()} == {"sess_api"}
    h = await health(agent, http)
    assert h["status"] == "ok" and h["counters"]["errors"] == 0


async def test_twenty_voice_agents_at_once_each_keep_their_turns(robot, connect, http):
    agent = await robot()
    peers = [await connect(agent) for _ in range(20)]
    voices = [Voice(n % 2 == 1, f"sess_c{n:02d}") for n in range(20)]
    traces = [[*v.session(), *v.user(f"item_U{n}", f"q{n} 🤖"), v.created(f"resp_{n}"),
               *v.said(f"resp_{n}", f"item_A{n}", ["a", f"{n}"]), v.done(f"resp_{n}")]
              for n, v in enumerate(voices)]
    await asyncio.gather(*(p.send(*t) for p, t in zip(peers, traces)))
    await wait_for(lambda: agent.counters["events"] == sum(map(len, traces)), timeout=10)
    await settle(agent)
    stored = await agent.store.messages(limit=100)
    assert sorted((r["session_id"], r["role"], r["content"]) for r in stored) == sorted(
        [(f"sess_c{n:02d}", "user", f"q{n} 🤖") for n in range(20)]
        + [(f"sess_c{n:02d}", "assistant", f"a{n}") for n in range(20)])
    h = await health(agent, http)
    assert h["status"] == "ok" and h["connections"] == 20 and h["counters"]["errors"] == 0


async def test_a_new_session_on_the_same_socket_groups_what_follows(robot, connect, http):
    agent = await robot()
    peer = await connect(agent)
    first, second = Voice(True, "sess_one"), Voice(True, "sess_two")
    await peer.send(*first.session(), *first.user("item_U1", "in one"),
                    *second.session(), *second.user("item_U2", "in two"))
    assert await replies(peer) == []
    assert [m["content"] for m in await api_messages(agent, http, session="sess_one")] == ["in one"]
    assert [m["content"] for m in await api_messages(agent, http, session="sess_two")] == ["in two"]


async def test_a_restarted_voice_agent_numbering_items_anew_loses_no_turn(robot, connect, http):
    """A voice agent restarted (a new session on a new socket) that numbers its items from the
    start again: the new session's turns are stored, the old session's rows stay as they were."""
    agent = await robot()
    for n, sid in enumerate(("sess_boot1", "sess_boot2")):
        v = Voice(True, sid)
        peer = await connect(agent)
        await peer.send(*v.session(), *v.user("item_1", f"hello {n}"), v.created("resp_1"),
                        *v.said("resp_1", "item_2", [f"hi {n}"]), v.done("resp_1"))
        await settle(agent)
        await peer.close()
        await wait_for(lambda: agent.health()["connections"] == 0)
    assert [(m["role"], m["content"]) for m in await api_messages(agent, http, session="sess_boot1")] == [
        ("assistant", "hi 0"), ("user", "hello 0")]
    assert [(m["role"], m["content"]) for m in await api_messages(agent, http, session="sess_boot2")] == [
        ("assistant", "hi 1"), ("user", "hello 1")]


async def test_an_old_sessions_user_turn_still_waiting_is_not_left_pending_by_a_new_one_of_that_id(robot, connect):
    """The old session's user turn waits for its transcript on a socket still open when the
    restarted voice agent's own ``item_1`` comes: the new one is stored, and the old one is no
    longer tracked, so it is stored incomplete at once (it stayed ``pending`` for good)."""
    agent = await robot()
    old, new = Voice(True, "sess_old"), Voice(True, "sess_new")
    first = await connect(agent)
    await first.send(*old.session(), *old.user("item_1", None))
    await settle(agent)
    second = await connect(agent)
    await second.send(*new.session(), *new.user("item_1", "hello again"))
    await settle(agent)
    assert sorted((m[1], m[2]) for m in await messages(agent)) == [("", "incomplete"),
                                                                     ("hello again", "completed")]


async def test_a_restart_within_the_grace_does_not_finish_the_old_sessions_item(robot, connect):
    """The old socket was cut mid-answer (its item waits for the grace); the restarted voice agent
    has a new session and numbers anew: its response.done stores its own item, and the old
    one is kept as it was cut (incomplete), not overwritten."""
    agent = await robot(conversation={"reconnect_grace": 5.0})
    old = await connect(agent)
    one = Voice(True, "sess_before")
    await old.send(*one.session(), one.created("resp_1"), *one.said("resp_1", "item_2", ["I was saying "],
                                                                     finish=False))
    await settle(agent)
    await old.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    new = await connect(agent)
    two = Voice(True, "sess_after")
    await new.send(*two.session(), *two.user("item_1", "hello again"), two.created("resp_1"),
                   *two.said("resp_1", "item_2", ["Fresh start."]), two.done("resp_1"))
    assert await replies(new) == []
    path = agent.store.health()["path"]
    await agent.stop()  # what still waits for the grace is stored now
    rows = sorted(helpers.db_rows(path, "SELECT session_id, role, content, status FROM messages", readonly=True))
    assert rows == [("sess_after", "assistant", "Fresh start.", "completed"),
                    ("sess_after", "user", "hello again", "completed"),
                    ("sess_before", "assistant", "I was saying ", "incomplete")]



async def test_a_restarted_voice_agent_reusing_an_interrupted_response_id_gets_its_motion_run(robot, connect):
    """Session A's resp_1 was barged in; the restarted voice agent (session B, numbering anew)
    has a resp_1 of its own, and its wave runs. A's interruption still holds for A: a late call of
    A's resp_1 on a new socket of session A is dropped."""
    agent = await robot()
    a, b = Voice(True, "sess_gone"), Voice(True, "sess_fresh")
    old = await connect(agent)
    await old.send(*a.session(), a.created("resp_1"),
                   ev("input_audio_buffer.speech_started", audio_start_ms=300, item_id="item_U2"),
                   a.done("resp_1", status="cancelled"))
    await settle(agent)
    assert agent.turns.interrupted("resp_1") == "barge-in"
    await old.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    new = await connect(agent)
    await new.send(*b.session(), b.created("resp_1"),
                   *b.call("resp_1", "item_F1", "call_fresh", "motion", '{"motion_tag":"wave"}'), b.done("resp_1"))
    assert (await calls(agent, "call_fresh"))["call_fresh"]["status"] == "done"
    assert moves(agent) == [30, 0]
    assert agent.turns.interrupted("resp_1", "sess_fresh") is None
    assert agent.turns.interrupted("resp_1", "sess_gone") == "barge-in"
    back = await connect(agent)  # session A again, with a call of its interrupted response
    await back.send(*a.session(), *a.call("resp_1", "item_F9", "call_late", "motion", '{"motion_tag":"wave"}'))
    assert (await calls(agent, "call_late"))["call_late"]["status"] == "dropped"
    assert moves(agent) == [30, 0] and agent.counters["dispatches"] == 1


async def test_a_restarted_voice_agent_reusing_a_call_id_gets_its_call_run_and_stored_once(robot, connect):
    """Session A ran call_1 (a wave); the restarted voice agent (session B) numbers anew and its
    call_1 is a sway: it runs and is stored as a row of its own, A's row kept. Within B the call
    comes three times (arguments.done, output_item.done, response.done) and once more on a new
    socket of B: it runs once."""
    agent = await robot()
    a, b = Voice(True, "sess_first"), Voice(True, "sess_second")
    wave, nod = '{"motion_tag":"wave"}', '{"motion_tag":"sway"}'
    old = await connect(agent)
    await old.send(*a.session(), a.created("resp_1"), *a.call("resp_1", "item_F1", "call_1", "motion", wave),
                   a.done("resp_1", [a.call_item("item_F1", "call_1", "motion", wave)]))
    assert (await helpers.stored_call(agent, "call_1", session="sess_first"))["status"] == "done"
    await old.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    cut = asyncio.get_running_loop().time()
    new = await connect(agent)
    await new.send(*b.session(), b.created("resp_1"), *b.call("resp_1", "item_F1", "call_1", "motion", nod),
                   b.done("resp_1", [b.call_item("item_F1", "call_1", "motion", nod)]))
    row = await helpers.stored_call(agent, "call_1", session="sess_second")
    assert row["status"] == "done" and row["arguments"] == nod
    assert moves(agent, cut)  # the sway moved the arm
    again = await connect(agent)  # B on a new socket, the call once more: a duplicate
    await again.send(*b.session(), ev("response.output_item.done", response_id="resp_1", output_index=1,
                                     item=b.call_item("item_F1", "call_1", "motion", nod)))
    await settle(agent)
    # one run per session; the copies in response.done (A's, B's) and B's on its new socket skipped
    assert agent.counters["dispatches"] == 2 and agent.counters["duplicate_calls"] == 3
    await agent.store.flush()
    stored = [(c["session_id"], c["arguments"], c["status"]) for c in await agent.store.calls(limit=50)
              if c["call_id"] == "call_1"]
    assert stored == [("sess_second", nod, "done"), ("sess_first", wave, "done")]  # newest first
