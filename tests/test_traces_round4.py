"""Realtime traces, fourth round: what the earlier trace modules did not play.

Out-of-band responses (``response.create`` with ``conversation: "none"``: the server marks them
with ``conversation_id: null`` and keeps them going when the user talks, since turn detection
only interrupts responses of the default conversation) carrying calls, text and audio; a
response that fails on the server after its call streamed and started; MCP tool calls the
server runs itself (``mcp_call`` items, ``response.mcp_call*`` events) named like the robot's
tools; the server echoing the agent's own ``function_call_output`` and the call items into the
conversation (GA ``conversation.item.added`` / ``done``); parallel calls whose outcomes come
back in the order they finished. ``test_traces_round4_session.py`` has the rest of the round: odd
frames, many small events and a twenty-minute session.

The same robot (conftest's ``robot``: a simulated arm and face), voice builders (``traces``) and
readers (``helpers``) as the other trace modules.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from helpers import (
    HAPPY,
    calls,
    health,
    lights,
    messages,
    moves,
    ops,
    replies,
    session_config_messages,
    settle,
    wait_for,
)
from traces import Voice, aside, aside_done, ev, text_item, text_said, user_ga


def now() -> float:
    return asyncio.get_running_loop().time()


# --- 1. out-of-band responses ------------------------------------------------------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_an_out_of_band_mood_check_is_no_barge_in_target_and_none_of_its_words_are_the_conversation(
        robot, connect, http, ga):
    """The voice agent asks, out of band, for the robot's mood after each answer (text only, the
    ``emotion`` tool forced). The user starts talking while it is still being generated: turn
    detection does not cancel it (it is outside the conversation), the robot was not saying it, so
    its emotion is shown and nothing counts as interrupted. Its words ("positive") are no
    conversation message: not stored, not given to the conversation handlers, not in
    session_config (the voice agent would read them back as the robot's last answer); the
    ``response.done`` handlers still get the whole response with its metadata. The same in the
    beta spelling (``modalities``, ``response.text.*``)."""
    agent = await robot(memory={"history_rounds": 4, "session_config_quiet": 600})
    convo, done = [], []
    agent.on_conversation(lambda *a: convo.append(a))
    agent.on("response.done", lambda event: done.append(event["response"]))
    v = Voice(ga, "sess_mood")
    peer = await connect(agent)
    mood = '{"emotion_tag":"happy","intensity":0.8}'
    await peer.send(*v.session(), *v.user("item_U1", "I got the job!"), v.created("resp_1"),
                    *v.said("resp_1", "item_A1", ["Congratulations, ", "that is great!"]), v.done("resp_1"))
    await settle(agent)
    t0 = now()
    await peer.send(aside("resp_mood", ["text"], "mood", ga),
                    ev("input_audio_buffer.speech_started", audio_start_ms=4200, item_id="item_U2"),
                    *v.call("resp_mood", "item_F1", "call_mood", "emotion", mood, index=0),
                    *text_said("resp_mood", "item_T1", "positive", 1, ga),
                    aside_done("resp_mood", [v.call_item("item_F1", "call_mood", "emotion", mood),
                                             text_item("item_T1", "positive", ga=ga)], "mood"),
                    ev("input_audio_buffer.speech_stopped", audio_end_ms=5600, item_id="item_U2"))
    row = (await calls(agent, "call_mood"))["call_mood"]
    assert row["status"] == "done" and row["response_id"] == "resp_mood"
    assert lights(agent, t0) == [(HAPPY, 0.8)]
    assert agent.counters["interruptions"] == 0 and agent.turns.interrupted("resp_mood") is None
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "I got the job!", "completed", "item_U1"),
                                     ("assistant", "Congratulations, that is great!", "completed", "item_A1")]
    await wait_for(lambda: len(done) == 2)
    assert [d["id"] for d in done] == ["resp_1", "resp_mood"] and done[1]["metadata"] == {"purpose": "mood"}
    assert [c for c in convo if c[0] == "item_T1"] == []
    await peer.close()
    await wait_for(lambda: session_config_messages() == [
        {"role": "user", "content": "I got the job!"},
        {"role": "assistant", "content": "Congratulations, that is great!"}])
    h = await health(agent, http)
    assert h["status"] == "ok" and h["counters"]["errors"] == 0


async def test_an_out_of_band_announcement_the_robot_speaks_is_still_stopped_when_talked_over(robot, connect):
    """The other side of the rule: an out-of-band response with audio (a timer's announcement and
    a wave) is the robot speaking; the user talking over it stops its motion and drops its later
    call, as any barge-in does, though the server would go on with it."""
    agent = await robot()
    v = Voice(True, "sess_timer")
    peer = await connect(agent)
    sway = '{"motion_tag":"sway","repeat":20}'
    await peer.send(*v.session(), aside("resp_timer", ["audio"], "timer"),
                    *v.said("resp_timer", "item_A1", ["Your tea ", "is ready"], finish=False),
                    *v.call("resp_timer", "item_F1", "call_sway", "motion", sway, index=1))
    await wait_for(lambda: moves(agent))
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=300, item_id="item_U1"),
                    *v.call("resp_timer", "item_F2", "call_wave", "motion", '{"motion_tag":"wave"}', index=2))
    rows = await calls(agent, "call_sway", "call_wave")
    assert rows["call_sway"]["status"] == rows["call_wave"]["status"] == "dropped"
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")
    assert 30 not in moves(agent)
    assert agent.counters["interruptions"] == 1 and agent.turns.interrupted("resp_timer") == "barge-in"


async def test_an_out_of_band_announcement_the_robot_speaks_is_stored_and_heard_by_the_handlers(robot, connect):
    """What the robot says aloud is what the person heard, out of band or not: the announcement
    is stored and goes to the conversation handlers; a silent side task beside it is not."""
    agent = await robot()
    heard: list[tuple[str, str, str]] = []  # (item_id, role, text) as ticos-client's handlers get them
    agent.on_conversation(lambda item_id, role, text: heard.append((item_id, role, text)))
    v = Voice(True, "sess_announce")
    peer = await connect(agent)
    await peer.send(*v.session(), aside("resp_timer", ["audio"], "timer"),
                    *v.said("resp_timer", "item_A1", ["Your tea ", "is ready"]),
                    aside_done("resp_timer", [], "timer"),
                    aside("resp_mood", ["text"], "mood"), *text_said("resp_mood", "item_M1", "neutral", 0),
                    aside_done("resp_mood", [text_item("item_M1", "neutral")], "mood"))
    assert await replies(peer) == []
    assert await messages(agent) == [("assistant", "Your tea is ready", "completed", "item_A1")]
    await wait_for(lambda: len(heard) == 2)
    await asyncio.sleep(0.1)  # nothing of the mood check comes after
    assert heard == [("item_A1", "assistant", "Your tea "), ("item_A1", "assistant", "is ready")]


async def test_a_spoken_announcement_talked_over_is_stored_cancelled_though_the_server_completes_it(robot, connect):
    """Turn detection does not cancel an out-of-band response: the server's ``response.done``
    says ``completed``; the robot stopped saying it, and the row says so."""
    agent = await robot()
    v = Voice(True, "sess_timer2")
    peer = await connect(agent)
    await peer.send(*v.session(), aside("resp_t", ["audio"], "timer"),
                    *v.said("resp_t", "item_A1", ["Your tea ", "is ready"]),
                    ev("input_audio_buffer.speech_started", audio_start_ms=300, item_id="item_U1"),
                    aside_done("resp_t", [], "timer"))
    assert await replies(peer) == []
    assert await messages(agent) == [("assistant", "Your tea is ready", "cancelled", "item_A1")]
    assert agent.counters["interruptions"] == 1


async def test_a_side_tasks_id_reused_by_a_restarted_voice_agent_for_an_answer_is_that_answer(robot, connect):
    """Side tasks are told per session: a restarted voice agent that numbers its responses anew
    answers with ``resp_1``, which was a mood check of the earlier session (cut off by the
    restart); the answer is stored and shown as speaking."""
    agent = await robot()
    states: list[str] = []
    agent.on_state(lambda state, previous: states.append(state))
    first, second = Voice(True, "sess_before"), Voice(True, "sess_after")
    peer = await connect(agent)
    # the voice agent dies in the middle of a mood check: its response.done never comes
    await peer.send(*first.session(), aside("resp_1", ["text"], "mood"), *text_said("resp_1", "item_M1", "calm", 0))
    await settle(agent)
    await peer.close()
    peer = await connect(agent)
    await peer.send(*second.session(), second.created("resp_1"),
                    *second.said("resp_1", "item_A1", ["Hello ", "again"]), second.done("resp_1"))
    assert await replies(peer) == []
    assert await messages(agent) == [("assistant", "Hello again", "completed", "item_A1")]
    await wait_for(lambda: "speaking" in states)


async def test_a_side_task_carried_on_over_a_new_socket_is_still_a_side_task(robot, connect):
    """A voice agent that goes on over a new socket without a new ``session.created`` (its
    session not named there): the mood check it finishes there is still no answer."""
    agent = await robot()
    heard: list[str] = []
    agent.on_conversation(lambda item_id, role, text: heard.append(text))
    v = Voice(True, "sess_moved")
    peer = await connect(agent)
    words = text_said("resp_m", "item_M1", "quite calm", 0)
    await peer.send(*v.session(), aside("resp_m", ["text"], "mood"), *words[:2])
    await settle(agent)
    await peer.close()
    peer = await connect(agent)
    await peer.send(*words[2:], aside_done("resp_m", [text_item("item_M1", "quite calm")], "mood"),
                    *user_ga("item_U1", None, "Hello"))
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Hello", "completed", "item_U1")]
    assert "calm" not in " ".join(heard) and agent.turns.side_task("resp_m", None)


async def test_a_silent_out_of_band_response_never_makes_the_robot_look_like_it_speaks(robot, connect):
    """With audio off the robot "speaks" from an answer's first words to its ``response.done``.
    A mood check's text is not said: run while the robot is idle, it changes no state (no
    thinking, no speaking look for a robot saying nothing); run while an answer is being
    spoken, its ``response.done`` does not set the robot idle in the middle of that answer."""
    agent = await robot()
    states = []
    agent.on_state(lambda state, previous: states.append(state))
    v = Voice(True, "sess_look")
    peer = await connect(agent)
    await peer.send(*v.session(), *user_ga("item_U1", None, "Hi"), v.created("resp_1"),
                    *v.said("resp_1", "item_A1", ["Hello ", "there"]), v.done("resp_1"))
    await wait_for(lambda: states == ["listening", "thinking", "speaking", "idle"])
    check = [aside("resp_m1", ["text"], "mood"), *text_said("resp_m1", "item_T1", "calm and positive", 0),
             aside_done("resp_m1", [text_item("item_T1", "calm and positive")], "mood")]
    await peer.send(*check)
    await settle(agent)
    await asyncio.sleep(0.2)
    assert states == ["listening", "thinking", "speaking", "idle"]
    await peer.send(*user_ga("item_U2", None, "Tell me more"), v.created("resp_2"),
                    *v.said("resp_2", "item_A2", ["Well, "], finish=False),
                    aside("resp_m2", ["text"], "mood"), *text_said("resp_m2", "item_T2", "curious", 0),
                    aside_done("resp_m2", [text_item("item_T2", "curious")], "mood"))
    await settle(agent)
    await asyncio.sleep(0.2)
    assert states[4:] == ["listening", "thinking", "speaking"] and agent.life.state == "speaking"
    await peer.send(*v.said("resp_2", "item_A2", ["it is a long story."])[1:], v.done("resp_2"))
    await wait_for(lambda: states[4:] == ["listening", "thinking", "speaking", "idle"])
    await asyncio.sleep(0.2)
    assert states[4:] == ["listening", "thinking", "speaking", "idle"]

async def test_a_mood_check_done_before_the_answer_ends_no_memory_round(robot, connect):
    """A memory round is a user message and the answer to it. The out-of-band mood check on the
    user's words is done before the answer is: the round waits for the answer, so the summariser
    gets the question and its answer together (not the question alone, then the answer a round
    later)."""
    agent = await robot(memory={"every_rounds": 1, "session_config": False})
    summarised = []
    agent.set_summariser(lambda msgs, latest: summarised.append([(m["role"], m["content"]) for m in msgs]) or "s")
    v = Voice(True, "sess_round")
    peer = await connect(agent)
    await peer.send(*v.session(), *user_ga("item_U1", None, "I love dinosaurs"), v.created("resp_1"),
                    aside("resp_mood", ["text"], "mood"), *text_said("resp_mood", "item_T1", "positive", 0),
                    aside_done("resp_mood", [text_item("item_T1", "positive")], "mood"))
    await settle(agent)
    await asyncio.sleep(0.3)
    assert summarised == []
    await peer.send(*v.said("resp_1", "item_A1", ["Me too!"]), v.done("resp_1"))
    await wait_for(lambda: summarised)
    await asyncio.sleep(0.2)
    assert summarised == [[("user", "I love dinosaurs"), ("assistant", "Me too!")]]


# --- 2. a response that fails on the server ----------------------------------------------------------

async def test_a_response_that_fails_after_its_call_started_stops_it_and_spares_a_side_task(robot, connect, http):
    """resp_1's sway (streamed in many deltas, running) and its words; then the server fails the
    response (``status_details.error``) and says so in an ``error`` event. The sway stops and the
    arm rests; the call is stored dropped, naming the failure; the words are stored ``failed``; the
    voice agent's error is never answered. An out-of-band emotion running beside it is not
    resp_1's: it is shown. The next response's wave runs."""
    agent = await robot()
    v = Voice(True, "sess_fail")
    peer = await connect(agent)
    sway = '{"motion_tag":"sway","repeat":20,"speed":1.0,"wait":true}'
    await peer.send(*v.session(), *user_ga("item_U1", None, "Dance!"), v.created("resp_1"),
                    *v.said("resp_1", "item_A1", ["Here ", "we "], finish=False),
                    *v.call("resp_1", "item_F1", "call_sway", "motion", sway, index=1, pieces=len(sway)))
    await wait_for(lambda: moves(agent))
    t0 = now()
    glow = '{"emotion_tag":"happy","duration":30}'
    await peer.send(aside("resp_side", ["text"], "mood"),
                    *v.call("resp_side", "item_F9", "call_glow", "emotion", glow, index=0),
                    aside_done("resp_side", [v.call_item("item_F9", "call_glow", "emotion", glow)], "mood"))
    assert (await calls(agent, "call_glow"))["call_glow"]["status"] == "done"
    failure = {"type": "failed", "error": {"type": "server_error", "code": "internal_error",
                                           "message": "The server had an error while processing your request."}}
    await peer.send(ev("response.done", response={
                        "id": "resp_1", "object": "realtime.response", "status": "failed", "status_details": failure,
                        "output": [v.message("item_A1", "Here we ", "incomplete"),
                                   v.call_item("item_F1", "call_sway", "motion", sway)]}),
                    ev("error", error={"type": "server_error", "code": None, "param": None, "event_id": None,
                                       "message": "The server had an error while processing your request."}))
    row = (await calls(agent, "call_sway"))["call_sway"]
    assert row["status"] == "dropped"  # stopped while it ran, as a cancelled response's would be
    assert json.loads(row["result"])["reason"] == "response failed"  # the server's failure, named
    await wait_for(lambda: ops(agent, "arm")[-1][0] == "safe")
    rested = now()
    await asyncio.sleep(0.6)
    assert moves(agent, rested) == []
    assert lights(agent, t0) == [(HAPPY, 1.0)]  # the side task's emotion, and nothing ended it
    t1 = now()
    await peer.send(v.created("resp_2"), *v.call("resp_2", "item_F2", "call_wave", "motion", '{"motion_tag":"wave"}'),
                    v.done("resp_2"))
    assert (await calls(agent, "call_wave"))["call_wave"]["status"] == "done"
    assert moves(agent, t1) == [30, 0]
    assert await replies(peer) == []
    assert await messages(agent) == [("user", "Dance!", "completed", "item_U1"),
                                     ("assistant", "Here we ", "failed", "item_A1")]
    h = await health(agent, http)
    assert h["status"] == "ok" and h["counters"]["errors"] == 0 and h["counters"]["interruptions"] == 1


# --- 3. what the server runs or echoes itself ------------------------------------------------------

async def test_mcp_tool_calls_named_like_the_robots_tools_are_the_servers_not_the_robots(robot, connect, http):
    """A remote MCP server has a ``motion`` tool too. The realtime server lists its tools, asks for
    approval of one (``mcp_approval_request``) and runs another (``mcp_call`` items,
    ``response.mcp_call_arguments.*``, ``response.mcp_call.*``): the robot does not move, no
    handler is called, no call is stored, nothing is answered; every event is counted as one the
    agent does not act on, and reaches the event handlers."""
    agent = await robot()
    fns, every = [], []
    agent.on_function("*", lambda call: fns.append(call.name))
    agent.on("*", lambda event: every.append(event["type"]))
    v = Voice(True, "sess_mcp")
    peer = await connect(agent)
    args = '{"motion_tag":"wave"}'
    mcp = {"id": "item_M1", "type": "mcp_call", "server_label": "robotics", "name": "motion", "arguments": args,
           "approval_request_id": None, "output": "waved", "error": None}
    ask = {"id": "item_R1", "type": "mcp_approval_request", "server_label": "robotics", "name": "emotion",
           "arguments": '{"emotion_tag":"happy"}'}
    where = {"response_id": "resp_1", "item_id": "item_M1", "output_index": 1}
    trace = [*v.session(), ev("mcp_list_tools.in_progress", item_id="item_L1"),
             ev("mcp_list_tools.completed", item_id="item_L1"), v.created("resp_1"),
             ev("response.output_item.added", response_id="resp_1", output_index=0, item=ask),
             ev("response.output_item.done", response_id="resp_1", output_index=0, item=ask),
             ev("response.output_item.added", response_id="resp_1", output_index=1,
                item={**mcp, "arguments": "", "output": None}),
             ev("response.mcp_call_arguments.delta", **where, delta=args[:10]),
             ev("response.mcp_call_arguments.delta", **where, delta=args[10:]),
             ev("response.mcp_call_arguments.done", **where, arguments=args),
             ev("response.mcp_call.in_progress", item_id="item_M1", output_index=1),
             ev("response.mcp_call.completed", item_id="item_M1", output_index=1),
             ev("response.output_item.done", response_id="resp_1", output_index=1, item=mcp),
             v.done("resp_1", [ask, mcp])]
    await peer.send(*trace)
    assert await replies(peer) == []
    await settle(agent)
    await asyncio.sleep(0.3)
    assert moves(agent) == [] and lights(agent) == [] and fns == []
    assert await agent.store.calls(limit=10) == []
    assert await messages(agent) == []
    await wait_for(lambda: len(every) == len(trace))
    assert every == [e["type"] for e in trace]
    h = await health(agent, http)
    assert h["counters"]["ignored"] == 7 and h["counters"]["errors"] == 0 and h["counters"]["dispatches"] == 0


async def test_the_servers_echo_of_the_robots_output_and_of_the_call_item_changes_nothing(robot, connect, http):
    """GA: every item that enters the conversation is echoed (``conversation.item.added`` then
    ``conversation.item.done``): the function_call item of the response, and the
    ``function_call_output`` the robot sent back. None is a message, none runs the call again,
    none is an error; the call's row keeps its outcome."""
    agent = await robot(replies={"function_call_output": True})
    v = Voice(True, "sess_echo")
    peer = await connect(agent)
    wave = '{"motion_tag":"wave"}'
    await peer.send(*v.session(), *user_ga("item_U1", None, "Wave"), v.created("resp_1"),
                    *v.call("resp_1", "item_F1", "call_1", "motion", wave, index=0), v.done("resp_1"))
    first = await calls(agent, "call_1")
    out = await replies(peer)
    assert [(o["type"], o["item"]["type"], o["item"]["call_id"]) for o in out] == [
        ("conversation.item.create", "function_call_output", "call_1")]
    call_item = v.call_item("item_F1", "call_1", "motion", wave)
    echoed = {**out[0]["item"], "id": "item_O1", "object": "realtime.item", "status": "completed"}
    await peer.send(ev("conversation.item.added", previous_item_id="item_U1",
                       item={**call_item, "status": "in_progress"}),
                    ev("conversation.item.done", previous_item_id="item_U1", item=call_item),
                    ev("conversation.item.added", previous_item_id="item_F1", item=echoed),
                    ev("conversation.item.done", previous_item_id="item_F1", item=echoed))
    assert await replies(peer) == []
    await settle(agent)
    await asyncio.sleep(0.3)
    assert moves(agent) == [30, 0]
    assert await calls(agent, "call_1") == first
    assert await messages(agent) == [("user", "Wave", "completed", "item_U1")]
    h = await health(agent, http)
    assert h["counters"]["dispatches"] == 1 and h["counters"]["errors"] == 0


# --- 4. parallel calls: what the model hears back, and when -----------------------------------------

async def test_parallel_motion_and_emotion_show_together_and_answer_in_the_order_they_finish(robot, connect):
    """One response calls ``motion`` (a 1 s sway, ``wait=true``) and ``emotion`` (a happy face for
    0.3 s) in parallel. They are on different actuators: the face lights at once, not after the
    sway. With outputs on, each call is answered once, when it finished: the emotion (0.3 s)
    before the motion (1 s)."""
    agent = await robot(replies={"function_call_output": True})
    v = Voice(True, "sess_par")
    peer = await connect(agent)
    sway, glow = '{"motion_tag":"sway","repeat":2,"wait":true}', '{"emotion_tag":"happy","duration":0.3}'
    t0 = now()
    await peer.send(v.created("resp_1"), *v.call("resp_1", "item_F1", "call_m", "motion", sway, index=0),
                    *v.call("resp_1", "item_F2", "call_e", "emotion", glow, index=1),
                    v.done("resp_1", [v.call_item("item_F1", "call_m", "motion", sway),
                                      v.call_item("item_F2", "call_e", "emotion", glow)]))
    rows = await calls(agent, "call_m", "call_e")
    assert rows["call_m"]["status"] == rows["call_e"]["status"] == "done"
    out = await replies(peer)
    assert [o["item"]["call_id"] for o in out] == ["call_e", "call_m"]
    assert [json.loads(o["item"]["output"])["status"] for o in out] == ["done", "done"]
    assert moves(agent, t0) == [20, 0, 20, 0]
    face = [t for t, op, _ in agent.actuators.drivers["face"].history if op == "light" and t >= t0]
    arm = [t for t, op, _ in agent.actuators.drivers["arm"].history if op == "move" and t >= t0]
    assert len(face) == 2 and face[0] < arm[1]  # lit with the sway's first keyframe, not after the sway
    assert lights(agent, t0)[0] == (HAPPY, 1.0)


async def test_a_side_task_whose_response_created_was_missed_is_told_by_its_response_done(robot, connect):
    """A relay that dropped ``response.created``: the ``response.done`` still says out of band and
    text only, so its words are not stored and it ends no turn of the robot."""
    agent = await robot()
    v = Voice(True, "sess_missed")
    peer = await connect(agent)
    done = ev("response.done", response={"id": "resp_m", "object": "realtime.response", "status": "completed",
                                         "conversation_id": None, "output_modalities": ["text"],
                                         "output": [text_item("item_M1", "calm")]})
    await peer.send(*v.session(), *text_said("resp_m", "item_M1", "calm", 0), done)
    assert await replies(peer) == []
    assert await messages(agent) == []
    assert agent.turns.side_task("resp_m", "sess_missed")
