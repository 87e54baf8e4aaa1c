"""Realtime traces, fifth round: the robot as watched. What the earlier rounds checked on
simulated ``mock`` actuators or on the actuator system alone, here over the real server on
loopback, a real WebSocket client and real parts: a Hiwonder LX-16A bus servo on a
pseudo-terminal (its frames carry the move time in milliseconds, so speed is on the wire) and
a PWM LED (``gpio-pwmled``) on gpiozero's ``MockFactory``.

A whole voice turn whose nod (``repeat=3``) is talked over in its second repetition; speed 2 on
the wire; ``wait=false`` against a running and a queued motion and ``wait=true`` behind it; an
emotion at intensity 0.3 fading in, held and back to neutral, pin value by pin value.
``test_traces_round5_faults.py`` goes on with what goes wrong. Timing is asserted only as order
or as bounds that tell the right behaviour from the wrong one.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from devices import lx16a_decode
from helpers import frames_settle, messages, timeline, wait_for
from traces import Voice, speech_started
from watched_robot import FLICK, HOME, LOOK, config, lx, nod, robot


async def test_a_nod_x3_talked_over_in_its_second_repetition_rests_the_head_at_once(tmp_path, connect, pty_device):
    """The user asks, the model calls ``motion`` (nod, ``repeat=3``, ``wait=true``) and then
    speaks; the user talks over it during the second nod. The bus saw the first nod whole, the
    second one's first two frames, then the home frame at once, and nothing more: not the
    second nod's end, not a third nod."""
    dev = pty_device(lx16a_decode)
    agent, peer, out = await robot(config(tmp_path, dev.port), connect, dev)
    try:
        v = Voice(True, "sess_nod")
        args = json.dumps({"motion_tag": "nod", "repeat": 3, "wait": True})
        await peer.send(*v.session(), *v.user("item_U1", "Nod three times for me."), v.created("resp_1"),
                        *v.call("resp_1", "item_F1", "call_nod", "motion", args, index=0),
                        *v.said("resp_1", "item_A1", ["Sure, ", "nodding ", "three times "], index=1, finish=False))
        await wait_for(lambda: len(dev.frames) == 1 + 5)  # the second nod's second frame is out
        t5 = dev.frames[-1][0]
        t_barge = time.monotonic()
        await peer.send(speech_started("item_U2"))
        result = await out.one("call_nod")
        assert result["status"] == "dropped" and "barge-in" in result["reason"], result
        said = v.message("item_A1", "Sure, nodding three times ", "incomplete")
        await peer.send(v.done("resp_1", [v.call_item("item_F1", "call_nod", "motion", args), said], "cancelled"))
        got = await frames_settle(dev, quiet=0.6)  # beyond when the next keyframe was due (t5 + 0.4 s)
        assert [lx(f) for _, f in got[1:]] == nod() + nod()[:2] + [HOME]
        t_home = got[-1][0]
        assert t_barge < t_home < t5 + 0.3  # at once, not at the next keyframe's time
        assert dev.errors == []
        assert await messages(agent) == [("user", "Nod three times for me.", "completed", "item_U1"),
                                          ("assistant", "Sure, nodding three times ", "cancelled", "item_A1")]
        await peer.no_reply(0.3)  # one answer for the call, nothing more
    finally:
        await agent.stop()


async def test_speed_two_halves_every_move_time_on_the_wire(tmp_path, connect, pty_device):
    """The same nod at speed 1 and at speed 2: the same positions, each frame's move time
    halved (400 ms -> 200 ms), and the frames go out twice as often."""
    dev = pty_device(lx16a_decode)
    agent, peer, out = await robot(config(tmp_path, dev.port), connect, dev)
    try:
        v = Voice(False, "sess_speed")
        gaps = {}
        for call_id, speed in (("c1", 1), ("c2", 2)):
            n0 = len(dev.frames)
            await peer.send(*v.call("resp_1", f"item_{call_id}", call_id, "motion",
                                    json.dumps({"motion_tag": "nod", "speed": speed})))
            result = await out.one(call_id)
            assert result["status"] == "done" and result["motion"]["detail"]["planned_s"] == 1.2 / speed
            got = (await frames_settle(dev, quiet=0.15))[n0:]
            assert [lx(f) for _, f in got] == nod(speed)
            gaps[speed] = got[-1][0] - got[0][0]  # 0.8 s planned at speed 1
        assert 0.6 < gaps[1] < 1.2 and 1.5 < gaps[1] / gaps[2] < 2.7
        assert dev.errors == []
    finally:
        await agent.stop()


async def test_wait_false_takes_the_head_from_a_running_and_a_queued_motion_and_wait_true_queues_behind_it(
        tmp_path, connect, pty_device):
    """A nod x3 runs and a look waits behind it (``wait=true``). The model then calls a flick
    with ``wait=false``: the nod stops, the look never plays (both answered ``dropped``, naming
    the preemption) and the flick goes out at once, with no trip home in between; a look called
    after it (``wait=true``) plays once the flick is over."""
    dev = pty_device(lx16a_decode)
    agent, peer, out = await robot(config(tmp_path, dev.port), connect, dev)
    try:
        v = Voice(True, "sess_wait")

        def call(call_id: str, **args):
            return v.call("resp_1", f"item_{call_id}", call_id, "motion", json.dumps(args))

        await peer.send(v.created("resp_1"), *call("c1", motion_tag="nod", repeat=3),
                        *call("c2", motion_tag="look", wait=True))
        await wait_for(lambda: len(dev.frames) == 1 + 2)
        t_send = time.monotonic()
        await peer.send(*call("c3", motion_tag="flick", wait=False), *call("c4", motion_tag="look"))
        res = await out.wait("c1", "c2", "c3", "c4")
        assert [res[c]["status"] for c in ("c1", "c2", "c3", "c4")] == ["dropped", "dropped", "done", "done"]
        assert "preempted by motion 'flick'" in res["c1"]["reason"] and res["c2"]["reason"] == res["c1"]["reason"]
        assert out.at["c1"] < out.at["c3"] < out.at["c4"]
        got = (await frames_settle(dev, quiet=0.3))[1:]
        assert [lx(f) for _, f in got] == nod()[:2] + [FLICK, LOOK]
        t_flick, t_look = got[2][0], got[3][0]
        assert t_flick - t_send < 0.3  # at once: the nod had 3 s to go
        assert 0.08 < t_look - t_flick < 0.6  # after the flick's 0.1 s, not beside it
        assert dev.errors == []
    finally:
        await agent.stop()


async def test_an_emotion_at_intensity_0_3_fades_in_holds_and_returns_to_neutral_on_a_pwm_led(
        tmp_path, connect, pins):
    """``intensity`` 0.3, ``fade_in`` 0.3 s, ``duration`` 0.5 s on one PWM LED: the pin climbs
    in 20 ms steps to 0.3 (not to 1: intensity scales the look), stays there for the duration
    (counted from the end of the fade), then shows neutral (0.1) and stays so."""
    agent, peer, out = await robot(config(tmp_path, face={"driver": "gpio-pwmled", "pin": 18}), connect)
    try:
        led = pins.pin(18)
        n0 = len(led.states)
        v = Voice(True, "sess_glow")
        args = {"emotion_tag": "glad", "intensity": 0.3, "fade_in": 0.3, "duration": 0.5}
        await peer.send(v.created("resp_1"), *v.call("resp_1", "item_F1", "call_glad", "emotion", json.dumps(args)))
        result = await out.one("call_glad")
        assert result["status"] == "done" and result["emotion"]["detail"]["actuators"] == ["face"]
        await wait_for(lambda: led.state == pytest.approx(0.1), timeout=3)
        await asyncio.sleep(0.3)  # and stays so
        tl = timeline(led)[n0:]
        values = [v for _, v in tl]
        assert values == pytest.approx([0.3 * k / 15 for k in range(1, 16)] + [0.1])  # 15 steps up, then neutral
        ramp, hold = tl[14][0] - tl[0][0], tl[15][0] - tl[14][0]
        assert 0.2 < ramp < 0.45  # 0.28 s planned (steps at 0.02 .. 0.3 s): a ramp, not a jump
        assert 0.4 < hold < 0.9  # the duration (0.5 s), not the fade's end, not at once
    finally:
        await agent.stop()
