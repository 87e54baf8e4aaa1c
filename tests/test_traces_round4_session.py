"""Realtime traces, fourth round (continued from ``test_traces_round4.py``): odd frames, many
small events, and a long session.

A relay that batches a voice turn into one JSON array (and sends a bare number, a string);
1,000 ``rate_limits.updated`` in the middle of a turn; and a twenty-minute GA session compressed
into sixty turns (calls, barge-ins, failed transcriptions, out-of-band mood checks, the voice
agent's error events, rate limits), checked row by row, call by call, in the counters, in what
per-response state is left and in ``session_config``.

The same robot (conftest's ``robot``: a simulated arm and face), voice builders (``traces``) and
readers (``helpers``) as the other trace modules.
"""

from __future__ import annotations

import json

from helpers import (
    HAPPY,
    calls,
    db_rows,
    health,
    lights,
    messages,
    moves,
    replies,
    session_config_messages,
    settle,
    wait_for,
)
from traces import Voice, aside, aside_done, ev, text_item, text_said, user_ga

# --- 1. odd frames and many small events --------------------------------------------------------------

async def test_a_relay_batching_events_into_one_array_gets_one_error_and_nothing_of_it_runs(robot, connect, http):
    """A relay that sends a whole voice turn as one JSON array (and a bare number, and a string)
    instead of one event per frame: each such frame is one ``invalid_event`` error naming what it
    got; none of the array's events is taken (no row, no motion); the same events sent one per
    frame afterwards are stored and run."""
    agent = await robot()
    v = Voice(True, "sess_batch")
    peer = await connect(agent)
    turn = [*user_ga("item_U1", None, "Wave please"), v.created("resp_1"),
            *v.call("resp_1", "item_F1", "call_1", "motion", '{"motion_tag":"wave"}', index=0),
            *v.said("resp_1", "item_A1", ["Waving!"], index=1), v.done("resp_1")]
    await peer.send(json.dumps(turn), "7", json.dumps("response.done"))
    errors = await replies(peer)
    assert [(e["type"], e["error"]["code"], e["error"]["message"]) for e in errors] == [
        ("error", "invalid_event", "event must be a JSON object, got an array"),
        ("error", "invalid_event", "event must be a JSON object, got a number"),
        ("error", "invalid_event", "event must be a JSON object, got a string")]
    await settle(agent)
    assert moves(agent) == [] and await messages(agent) == []
    await peer.send(*turn)
    assert (await calls(agent, "call_1"))["call_1"]["status"] == "done"
    assert moves(agent) == [30, 0]
    assert await messages(agent) == [("user", "Wave please", "completed", "item_U1"),
                                     ("assistant", "Waving!", "completed", "item_A1")]
    assert await replies(peer) == []
    h = await health(agent, http)
    assert h["status"] == "ok" and h["counters"]["errors"] == 3


async def test_a_thousand_rate_limit_updates_inside_a_turn(robot, connect, http):
    """GA sends ``rate_limits.updated`` after responses; a relay replaying a backlog sends 1,000 of
    them in the middle of a voice turn. Each reaches the handlers, in order; each is counted as
    ignored and is one event-log line (ids only); nothing is answered; the turn around them is
    stored whole and its wave runs once."""
    agent = await robot()
    seen = []
    agent.on("rate_limits.updated", lambda event: seen.append(event["rate_limits"][0]["remaining"]))
    v = Voice(True, "sess_rl")
    peer = await connect(agent)
    limits = [ev("rate_limits.updated", rate_limits=[
        {"name": "requests", "limit": 5000, "remaining": 4999 - i, "reset_seconds": 0.012},
        {"name": "tokens", "limit": 40000, "remaining": 39000 - 7 * i, "reset_seconds": 1.5}]) for i in range(1000)]
    head = [*v.session(), *user_ga("item_U1", None, "Wave"), v.created("resp_1"),
            *v.said("resp_1", "item_A1", ["On ", "it"], finish=False)]
    tail = [*v.call("resp_1", "item_F1", "call_1", "motion", '{"motion_tag":"wave"}', index=1),
            ev(v.t("response.audio_transcript.done"), response_id="resp_1", item_id="item_A1", output_index=0,
               content_index=0, transcript="On it"), v.done("resp_1")]
    await peer.send(*head, *limits[:500], *tail[:3], *limits[500:], *tail[3:])
    assert (await calls(agent, "call_1"))["call_1"]["status"] == "done"
    assert await replies(peer) == []
    await wait_for(lambda: len(seen) == 1000)
    assert seen == [4999 - i for i in range(1000)]
    assert moves(agent) == [30, 0]
    assert await messages(agent) == [("user", "Wave", "completed", "item_U1"),
                                     ("assistant", "On it", "completed", "item_A1")]
    await agent.store.flush()
    h = await health(agent, http)
    logged = db_rows(h["storage"]["path"], "SELECT COUNT(*) FROM events WHERE type = 'rate_limits.updated'")
    assert logged == [(1000,)]
    assert h["status"] == "ok" and h["counters"]["ignored"] == 1000 and h["counters"]["errors"] == 0


# --- 2. twenty minutes of talk, compressed -----------------------------------------------------------

TURNS = 60  # one every 20 s: twenty minutes


def long_turn(v: Voice, n: int) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Turn ``n`` of the long session: (frames up to the answer's end, frames after it, the calls
    it makes and the status each must end with). Every 3rd turn waves with its words, every 4th is
    followed by an out-of-band mood check, every 7th is cut by the user talking (its late wave is
    dropped), every 13th has a failed transcription, every 10th carries a voice agent's error, and
    every response is followed by ``rate_limits.updated``."""
    rid, uid, aid = f"resp_{n}", f"item_U{n}", f"item_A{n}"
    cut_before = n > 1 and (n - 1) % 7 == 0  # this turn's speech began as the barge-in of the last one
    user = user_ga(uid, ["question ", f"{n}"], None if n % 13 == 0 else f"question {n}")
    if n % 13 == 0:
        user.append(ev("conversation.item.input_audio_transcription.failed", item_id=uid, content_index=0,
                       error={"type": "transcription_error", "code": "audio_unintelligible",
                              "message": "Audio unintelligible", "param": None}))
    frames = (user[1:] if cut_before else user) + [v.created(rid)]
    expect: dict[str, str] = {}
    wave = '{"motion_tag":"wave"}'
    if n % 7 == 0:  # the user talks over it; the wave comes late and is dropped
        frames += v.said(rid, aid, [f"answer {n}, "], finish=False)
        frames += [ev("input_audio_buffer.speech_started", audio_start_ms=300, item_id=f"item_U{n + 1}")]
        if n % 3 == 0:
            frames += v.call(rid, f"item_F{n}", f"call_w{n}", "motion", wave, index=1)
            expect[f"call_w{n}"] = "dropped"
        frames += [v.done(rid, [v.message(aid, f"answer {n}, ", "incomplete")], status="cancelled")]
    else:
        frames += v.said(rid, aid, [f"answer {n}, ", "okay."])
        if n % 3 == 0:
            frames += v.call(rid, f"item_F{n}", f"call_w{n}", "motion", wave, index=1)
            expect[f"call_w{n}"] = "done"
        frames += [v.done(rid)]
    after = [ev("rate_limits.updated", rate_limits=[{"name": "requests", "limit": 5000, "remaining": 5000 - n,
                                                     "reset_seconds": 0.01}])]
    if n % 10 == 0:
        after.append(ev("error", error={"type": "invalid_request_error", "code": "response_cancel_not_active",
                                        "message": "no active response", "param": None, "event_id": None}))
    if n % 4 == 0:
        mood, args = f"resp_mood{n}", '{"emotion_tag":"happy","intensity":0.5}'
        after += [aside(mood, ["text"], "mood"), *v.call(mood, f"item_M{n}", f"call_m{n}", "emotion", args, index=0),
                  *text_said(mood, f"item_T{n}", "positive", 1),
                  aside_done(mood, [v.call_item(f"item_M{n}", f"call_m{n}", "emotion", args),
                                    text_item(f"item_T{n}", "positive")], "mood")]
        expect[f"call_m{n}"] = "done"
    return frames, after, expect


def long_rows(n: int) -> list[tuple]:
    user = ("user", "", "transcription_failed", f"item_U{n}") if n % 13 == 0 else \
        ("user", f"question {n}", "completed", f"item_U{n}")
    answer = ("assistant", f"answer {n}, ", "cancelled", f"item_A{n}") if n % 7 == 0 else \
        ("assistant", f"answer {n}, okay.", "completed", f"item_A{n}")
    return [user, answer]


async def test_twenty_minutes_of_ga_talk_compressed_leave_exact_rows_and_no_state_behind(robot, connect, http):
    """Sixty GA voice turns (see ``long_turn``), each sent when the last one's calls have their
    outcome, as a voice agent paced by speech would. Every message row is what was said, in order,
    with its status; every call ends as it must (late waves of interrupted answers dropped, mood
    checks shown); the arm waved exactly for the waves that ran; the counters are exact; no
    per-response state is left; session_config holds the last three rounds."""
    from helpers import sizes

    agent = await robot(memory={"history_rounds": 6, "session_config_quiet": 600})
    shown = []
    agent.on_emotion(lambda args: shown.append((args["emotion_tag"], args["intensity"])))
    v = Voice(True, "sess_20min")
    peer = await connect(agent)
    await peer.send(*v.session())
    expected: dict[str, str] = {}
    for n in range(1, TURNS + 1):
        frames, after, expect = long_turn(v, n)
        await peer.send(*frames, *after)
        if expect:
            got = await calls(agent, *expect)
            assert {c: r["status"] for c, r in got.items()} == expect, n
        expected |= expect
    await settle(agent)
    assert await replies(peer, first=0.3) == []
    assert await messages(agent) == [row for n in range(1, TURNS + 1) for row in long_rows(n)]
    done_waves = [c for c, s in expected.items() if c.startswith("call_w") and s == "done"]
    assert len(done_waves) == 18 and len(expected) == 20 + 15
    assert moves(agent) == [30, 0] * 18
    await wait_for(lambda: len(shown) == 15)
    assert shown == [("happy", 0.5)] * 15
    # the face showed each mood check at its intensity; between them, only the idle look in the
    # mood's colour, its level fading from there
    assert [b for c, b in lights(agent) if b == 0.5] == [0.5] * 15
    assert {c for c, b in lights(agent)} == {HAPPY} and all(b <= 0.5 for c, b in lights(agent))
    h = await health(agent, http)
    assert h["status"] == "ok"
    assert {k: h["counters"][k] for k in ("errors", "ignored", "interruptions", "dispatches")} == {
        "errors": 0, "ignored": TURNS, "interruptions": 8, "dispatches": 18 + 15}
    left = sizes(agent)
    assert {k: left[k] for k in ("turns.active", "turns.orphans", "calls.streamed", "calls.in_flight",
                                 "conversation.open")} == {
        "turns.active": 0, "turns.orphans": 0, "calls.streamed": 0, "calls.in_flight": 0, "conversation.open": 0}
    # the 15 mood checks stay known as side tasks (bounded: the latest turns.MAX_ASIDE)
    assert len(agent.turns._aside) == 15 and all(list(v.values()) == [True] for v in agent.turns._aside.values())
    await peer.close()
    await wait_for(lambda: session_config_messages() == [
        m for n in (58, 59, 60) for m in ({"role": "user", "content": f"question {n}"},
                                          {"role": "assistant", "content": f"answer {n}, okay."})])
