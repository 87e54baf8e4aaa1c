"""A long session and many sessions keep the agent's per-peer, per-session, per-response and
per-call state bounded, without losing or wrongly dropping anything at those bounds.

Through the real server over a real socket: thousands of voice turns with function calls on
one socket, then hundreds of short sessions (a voice agent restarted over and over, numbering
its responses and calls anew), some responses never done. The sizes are read from the
consumers' own structures (they report no count of their own).
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from helpers import call_intake, messages_all, settle, sizes, stored_call, wait_for
from traces import Voice, ev

from ticos_agent import calls as calls_mod
from ticos_agent import conversation as conversation_mod
from ticos_agent import turns as turns_mod
from ticos_agent.life.states import DRAIN_POLL

HAPPY = json.dumps({"emotion_tag": "happy"})
LIGHT = json.dumps({"on": True})


def turn(v: Voice, n: int, *, done: bool = True, cut: bool = False) -> list[dict]:
    """User turn ``n`` and the assistant's answer with one call (its arguments streamed), the
    copy of the call inside ``response.done``; ``done=False``: no ``response.done`` ever;
    ``cut``: the call is cut off (status ``incomplete``, as after a barge-in)."""
    rid, call_id = f"resp_{n}", f"call_{n}"
    name, args = ("emotion", HAPPY) if n % 2 else ("set_light", LIGHT)
    frames = v.user(f"item_U{n}", f"turn {n}") + [v.created(rid)]
    frames += v.said(rid, f"item_A{n}", ["Sure, ", f"number {n}."], audio=False)
    frames += v.call(rid, f"item_F{n}", call_id, name, args, pieces=2)
    if cut:
        frames[-1]["item"]["status"] = "incomplete"
    if done:
        frames.append(v.done(rid, [v.message(f"item_A{n}", f"Sure, number {n}."),
                                   v.call_item(f"item_F{n}", call_id, name, args)]))
    return frames


async def test_three_thousand_turns_on_one_socket_stay_bounded_and_each_call_runs_once(robot, connect,
                                                                                       monkeypatch):
    monkeypatch.setattr(calls_mod, "MAX_TRACKED_CALLS", 1000)  # reached by 3,000 calls: its bound is tried
    agent = await robot()
    lights: list[dict] = []
    agent.on_function("set_light", lambda call: lights.append(call.arguments))
    v = Voice(ga=False, session_id="sess_long")
    peer = await connect(agent)
    await peer.send(*v.session())
    turns_total, never_done, cut = 3000, set(range(9, 3000, 10)), set(range(5, 3000, 50))
    for start in range(0, turns_total, 250):
        batch: list[dict] = []
        for n in range(start, start + 250):
            batch += turn(v, n, done=n not in never_done, cut=n in cut)
        await peer.send(*batch)
        await settle(agent, rounds=1)
        got = sizes(agent)
        assert got["turns.active"] <= turns_mod.MAX_OPEN
        assert got["turns.interrupted"] <= turns_mod.MAX_INTERRUPTED
        assert got["calls.seen"] <= calls_mod.MAX_TRACKED_CALLS
        assert got["calls.streamed"] <= 2, got  # each call takes its streamed arguments, cut ones too
        assert got["conversation.open"] <= conversation_mod.MAX_OPEN_PER_PEER, got  # never-done ones stored
        assert got["conversation.users"] <= conversation_mod.MAX_TRACKED
        assert got["conversation.stored"] <= conversation_mod.MAX_TRACKED
    ran = turns_total - len(cut)
    await wait_for(lambda: agent.counters["dispatches"] == ran and call_intake(agent)._in_flight == 0, timeout=20)
    # every call ran once: the copy in response.done, each done one's, was refused
    assert agent.counters["duplicate_calls"] == turns_total - len(never_done)
    assert len(lights) == len([n for n in range(turns_total) if n % 2 == 0 and n not in cut])
    # a repeat of the last calls (within the window: far fewer than MAX_TRACKED_CALLS ago) is refused
    before = agent.counters["dispatches"]
    await peer.send(*[ev("response.output_item.done", response_id=f"resp_{n}", output_index=1,
                         item=v.call_item(f"item_F{n}", f"call_{n}", "set_light", LIGHT))
                      for n in range(turns_total - 100, turns_total)])
    await settle(agent)
    assert agent.counters["dispatches"] == before
    assert agent.counters["duplicate_calls"] == turns_total - len(never_done) + 100
    last = await stored_call(agent, f"call_{turns_total - 1}", session="sess_long")
    assert last["status"] == "done"
    await peer.close()
    await wait_for(lambda: agent.conversations.open_items() == 0 and not agent.conversations._waiting)
    said = [m for m in await messages_all(agent) if m[0] == "assistant"]
    assert len(said) == turns_total  # one row each: nothing lost, nothing twice
    assert {m[3] for m in said if m[2] == "incomplete"} == {f"item_A{n}" for n in never_done}
    assert all(m[1] == f"Sure, number {m[3][6:]}." for m in said)


async def test_two_hundred_restarted_sessions_stay_bounded_and_the_latest_keep_their_guarantees(robot, connect):
    """A voice agent restarted 200 times, numbering anew each time: its ``resp_2`` is barged
    in on (its late call dropped), its ``call_1`` runs once per session, its ``resp_3`` is never
    done and its socket closes under it."""
    agent = await robot()
    lights: list[str] = []
    agent.on_function("set_light", lambda call: lights.append(call.call_id))
    sessions = 200

    def session(k: int, v: Voice) -> list[dict]:
        # (its user item's id unique, as a realtime server's are: the conversation keeps its row,
        # and its owner, the peer, for a late transcript)
        frames = v.session() + v.user(f"item_U1_{k}", f"hello {k}") + [v.created("resp_1")]
        frames += v.said("resp_1", "item_A1", ["Hi ", f"{k}."], audio=False)
        frames += v.call("resp_1", "item_F1", "call_1", "set_light", LIGHT)
        frames += [v.done("resp_1", [v.call_item("item_F1", "call_1", "set_light", LIGHT)]), v.created("resp_2")]
        frames += v.said("resp_2", "item_A2", ["I was "], audio=False, finish=False)
        frames += [ev("input_audio_buffer.speech_started", audio_start_ms=10, item_id="item_U2")]
        frames += v.call("resp_2", "item_F2", "call_2", "set_light", LIGHT)  # too late: dropped
        frames += [v.done("resp_2", status="cancelled"), v.created("resp_3")]
        return frames + v.said("resp_3", "item_A3", ["Never ", "done"], audio=False, finish=False)

    for k in range(sessions):
        peer = await connect(agent)
        await peer.send(*session(k, Voice(ga=k % 2 == 1, session_id=f"sess_{k}")))
        await settle(agent, rounds=1)
        await peer.close()
        await peer.session.close()
        got = sizes(agent)
        assert got["turns.interrupted_sessions"] <= turns_mod.MAX_SESSIONS_PER_RESPONSE, got
        assert got["calls.seen_sessions"] <= calls_mod.MAX_SESSIONS_PER_CALL, got
        assert got["turns.orphans"] <= turns_mod.MAX_ORPHANS and got["calls.streamed"] == 0, got
    await wait_for(lambda: len(agent.peers) == 0 and not agent.conversations._waiting, timeout=5)
    await wait_for(lambda: agent.counters["dispatches"] == sessions and call_intake(agent)._in_flight == 0)
    got = sizes(agent)
    assert got["turns.active_peers"] == 0 and got["life.peers"] == 0 and got["conversation.open"] == 0, got
    # resp_2, and resp_3 (left with its socket: the next session's first speech_started stopped
    # it); call_1 and call_2
    assert got["turns.interrupted"] == 2 and got["calls.seen"] == 2, got
    assert lights == ["call_1"] * sessions  # once per session; no call_2 ran
    owners = [row.owner for row in agent.conversations._users.values()]
    assert len(owners) == sessions  # kept as owners of those rows, they let their sockets go
    assert not [p for p in owners if isinstance(p.ws, web.WebSocketResponse) or p._abort is not None]
    for k in (0, sessions - 1):
        assert (await stored_call(agent, "call_2", session=f"sess_{k}"))["status"] == "dropped"
    # the latest sessions keep their guarantees: on a new socket of sess_199, a repeated call_1
    # is refused and a late call of its interrupted resp_2 is dropped
    latest = Voice(ga=False, session_id=f"sess_{sessions - 1}")
    peer = await connect(agent)
    duplicates = agent.counters["duplicate_calls"]
    await peer.send(*latest.session(), ev("response.output_item.done", response_id="resp_1", output_index=1,
                                         item=latest.call_item("item_F1", "call_1", "set_light", LIGHT)),
                    ev("response.output_item.done", response_id="resp_2", output_index=1,
                       item=latest.call_item("item_F9", "call_9", "set_light", LIGHT)))
    await settle(agent)
    assert agent.counters["duplicate_calls"] == duplicates + 1
    assert (await stored_call(agent, "call_9", session=f"sess_{sessions - 1}"))["status"] == "dropped"
    assert lights == ["call_1"] * sessions
    messages = await messages_all(agent)
    assert len(messages) == 4 * sessions  # a user turn and three assistant items each, stored once
    assert sum(m[2] == "incomplete" for m in messages) == sessions  # resp_3's, stored when its socket went


class _Speaker:
    """The speaker's clock as robot life reads it (``playing``). PortAudio cannot be pointed at
    ALSA's file plugin inside this process once loaded (test_audio_agent runs a subprocess for
    that); only the clock matters here."""

    playing = True


async def test_a_socket_closed_while_its_answer_still_plays_leaves_no_state_behind(robot, connect):
    agent = await robot()
    speaker = _Speaker()
    agent.life._audio = speaker
    for k in range(20):  # each closes while the speaker still plays its response
        speaker.playing = True
        peer = await connect(agent)
        v = Voice(ga=False, session_id=f"sess_{k}")
        await peer.send(*v.session(), v.created("resp_1"), v.done("resp_1"))
        await settle(agent, rounds=1)
        await peer.close()
        await wait_for(lambda: len(agent.peers) == 0)
        speaker.playing = False
        await asyncio.sleep(2 * DRAIN_POLL)
    await wait_for(lambda: not [name for name in agent.life._timers if name.startswith("drain:")])
    assert sizes(agent)["life.peers"] == 0 and agent.health()["robot"]["connections"] == {}
    assert not [name for name in agent.life._timers if name.startswith("drain:")]
