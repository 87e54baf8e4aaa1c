"""What a person watching the robot expects, end to end: function calls arrive on the WebSocket
of a real Agent, servos are Feetech STS buses on pseudo-terminals (a device emulator decodes
and checksums every frame) and lights are RGB LEDs on gpiozero's MockFactory PWM pins. The
outcome of each call comes back on the socket (``replies.function_call_output = true``).

Timing is checked by counting and ordering frames, and by ratios or bounds with wide margins,
never by tight absolute times.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from devices import feetech_decode
from helpers import Outputs, agent_config, frames_settle, timeline, wait_for
from traces import ev, function_call_done, response_done, speech_started

from ticos_agent import Agent

DEG = 4096 / 360


def raw(deg: float) -> int:
    return 2048 + round(deg * DEG)


def pos(frame: bytes, servo: int = 0) -> int:
    """Goal_Position of the ``servo``-th servo of a STS SYNC_WRITE frame."""
    at = 8 + 7 * servo
    return int.from_bytes(frame[at:at + 2], "little")


# 3 keyframes of 0.2 s each: frames at 0, 0.2, 0.4 s; the motion ends at 0.6 s
SWEEP = [[0.2, [10]], [0.4, [-10]], [0.6, [0]]]
SWEEP_RAW = [raw(10), raw(-10), raw(0)]
LOOK = [[0.1, [30]]]  # one frame
MOTIONS = {
    "sweep": {"head": SWEEP},
    "look": {"head": LOOK},
    "wag": {"tail": [[0.2, [25]], [0.4, [-25]], [0.6, [0]]]},
    "reach": {"head": [[0.1, [80]], [0.2, [-80]], [0.3, [15]]]},
}
EMOTIONS = {
    "angry": {"color": "#FF0000"},
    "joy": {"color": "#FF0000", "pose": {"head": [20]}},
    "neutral": {"color": "#FFFFFF", "brightness": 0.2},
}


def robot(tmp_path, actuators: dict, motions=None, emotions=None) -> dict:
    cfg = agent_config(tmp_path, replies={"function_call_output": True})
    cfg.update({"robot": {"default_library": False}, "actuators": actuators,
                "motions": {t: m for t, m in (MOTIONS if motions is None else motions).items()
                            if set(m) <= set(actuators)},
                "emotions": {t: e for t, e in (EMOTIONS if emotions is None else emotions).items()
                             if set(e.get("pose", {})) <= set(actuators)}})
    return cfg


def head(port: str, **kw) -> dict:
    return {"driver": "feetech-sts", "port": port, "ids": [1], "min": -45, "max": 45, **kw}


FACE = {"driver": "gpio-rgbled", "red": 17, "green": 27, "blue": 22}


def created(rid: str) -> dict:
    return ev("response.created", response={"id": rid, "status": "in_progress", "output": []})


async def started(tmp_path, connect, cfg, *devs):
    agent = Agent(cfg)
    await agent.start()
    for d in devs:
        await wait_for(lambda d=d: len(d.frames) >= 1)  # the home frame at start
    peer = await connect(agent)
    return agent, peer, Outputs(peer)


# --- speed and repeat --------------------------------------------------------------------


async def test_speed_two_plays_the_same_frames_in_half_the_time_and_repeat_counts(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port)}), dev)
    try:
        async def play(call_id, **args):
            n0 = len(dev.frames)
            await peer.send(function_call_done("resp_1", call_id, "motion", {"motion_tag": "sweep", **args}))
            result = await out.one(call_id)
            assert result["status"] == "done", result
            got = (await frames_settle(dev, quiet=0.15))[n0:]
            return [t for t, _ in got], [pos(f) for _, f in got], result

        t1, p1, r1 = await play("c1")
        t2, p2, r2 = await play("c2", speed=2.0)
        t3, p3, r3 = await play("c3", repeat=3)
        assert p1 == SWEEP_RAW and p2 == SWEEP_RAW  # the same frames ...
        span1, span2 = t1[-1] - t1[0], t2[-1] - t2[0]
        assert 0.3 < span1 < 0.8  # 0.4 s planned
        assert 1.5 < span1 / span2 < 2.7  # ... in about half the time
        assert p3 == SWEEP_RAW * 3  # repeat 3: the sequence three times, exactly
        assert r1["motion"]["detail"]["planned_s"] == 0.6
        assert r2["motion"]["detail"]["planned_s"] == 0.3
        assert r3["motion"]["detail"]["planned_s"] == pytest.approx(1.8)
        assert t3[-1] - t3[0] > 1.2  # 1.6 s planned: repeats are played, not squeezed
        assert dev.errors == []
    finally:
        await agent.stop()


# --- wait / preempt / parallel -----------------------------------------------------------


async def test_wait_true_queues_the_second_motion_behind_the_first(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port)}), dev)
    try:
        n0 = len(dev.frames)
        await peer.send(function_call_done("resp_1", "c1", "motion", {"motion_tag": "sweep"}),
                        function_call_done("resp_1", "c2", "motion", {"motion_tag": "look", "wait": True}))
        res = await out.wait("c1", "c2")
        assert res["c1"]["status"] == "done" and res["c2"]["status"] == "done"
        assert out.at["c1"] <= out.at["c2"]
        got = (await frames_settle(dev, quiet=0.15))[n0:]
        assert [pos(f) for _, f in got] == SWEEP_RAW + [raw(30)]  # all of the first, then the second
        times = [t for t, _ in got]
        # the second starts after the first has finished (its last keyframe lasts 0.2 s)
        assert times[3] - times[2] > 0.1 and times[3] - times[0] > 0.5
    finally:
        await agent.stop()


async def test_wait_false_preempts_the_running_motion(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port)}), dev)
    try:
        n0 = len(dev.frames)
        await peer.send(function_call_done("resp_1", "c1", "motion", {"motion_tag": "sweep", "repeat": 10}))
        await wait_for(lambda: len(dev.frames) >= n0 + 2)
        t_send = time.monotonic()
        await peer.send(function_call_done("resp_1", "c2", "motion", {"motion_tag": "look", "wait": False}))
        res = await out.wait("c1", "c2")
        assert res["c1"]["status"] == "dropped" and "preempt" in res["c1"]["reason"], res["c1"]
        assert res["c2"]["status"] == "done"
        assert out.at["c2"] - t_send < 1.5  # at once: the first had ~5 s left
        got = (await frames_settle(dev, quiet=0.2))[n0:]
        positions = [pos(f) for _, f in got]
        i = positions.index(raw(30))
        assert got[i][0] - t_send < 0.5  # the second's frame went out at once
        assert positions[i:] == [raw(30)]  # nothing of the first after it
        assert set(positions[:i]) <= set(SWEEP_RAW) and len(positions[:i]) < 10
    finally:
        await agent.stop()


async def test_motions_on_different_actuators_run_in_parallel(tmp_path, connect, pty_device):
    dh, dt = pty_device(feetech_decode), pty_device(feetech_decode)
    acts = {"head": head(dh.port), "tail": {**head(dt.port), "ids": [2]}}
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, acts), dh, dt)
    try:
        nh, nt = len(dh.frames), len(dt.frames)
        await peer.send(function_call_done("resp_1", "c1", "motion", {"motion_tag": "sweep"}),
                        function_call_done("resp_1", "c2", "motion", {"motion_tag": "wag", "wait": True}))
        res = await out.wait("c1", "c2")
        assert res["c1"]["status"] == res["c2"]["status"] == "done"
        fh = (await frames_settle(dh, quiet=0.15))[nh:]
        ft = (await frames_settle(dt, quiet=0.15))[nt:]
        assert [pos(f) for _, f in fh] == SWEEP_RAW
        assert [pos(f) for _, f in ft] == [raw(25), raw(-25), raw(0)]
        # wait=true only queues on the same actuator: the tail starts before the head's 2nd frame
        assert ft[0][0] < fh[1][0] and fh[0][0] < ft[1][0]
        assert abs(out.at["c1"] - out.at["c2"]) < 0.4  # both end together (0.6 s each)
    finally:
        await agent.stop()


# --- emotions ----------------------------------------------------------------------------


async def test_motion_and_emotion_start_together(tmp_path, connect, pty_device, pins):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port), "face": FACE}), dev)
    try:
        red = pins.pin(17)
        n0 = len(dev.frames)
        await peer.send(function_call_done("resp_1", "c1", "motion_and_emotion",
                                           {"motion_tag": "sweep", "emotion_tag": "angry"}))
        res = await out.one("c1")
        assert res["status"] == "done", res
        assert res["motion"]["status"] == "done" and res["emotion"]["status"] == "done"
        got = (await frames_settle(dev, quiet=0.15))[n0:]
        assert [pos(f) for _, f in got] == SWEEP_RAW
        t_lit = next(t for t, v in timeline(red) if v == pytest.approx(1.0))
        # the light comes on with the first keyframe, not after the motion
        assert t_lit < got[1][0] and got[0][0] < t_lit + 0.15
    finally:
        await agent.stop()


async def test_intensity_scales_led_brightness(tmp_path, connect, pins):
    angry = robot(tmp_path, {"face": FACE}, emotions={"angry": EMOTIONS["angry"]})
    agent, peer, out = await started(tmp_path, connect, angry)
    try:
        red, green = pins.pin(17), pins.pin(27)
        for cid, intensity in (("c1", 0.5), ("c2", 1.0), ("c3", 0.25)):
            args = {"emotion_tag": "angry", "intensity": intensity}
            await peer.send(function_call_done("resp_1", cid, "emotion", args))
            assert (await out.one(cid))["status"] == "done"
            await wait_for(lambda i=intensity: red.state == pytest.approx(i))
            assert green.state == 0
    finally:
        await agent.stop()


async def test_fade_in_ramps_up_then_duration_holds_and_returns_to_neutral(tmp_path, connect, pins):
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"face": FACE}))
    try:
        red, blue = pins.pin(17), pins.pin(22)
        n0 = len(red.states)
        t_send = time.monotonic()
        await peer.send(function_call_done("resp_1", "c1", "emotion",
                                           {"emotion_tag": "angry", "fade_in": 0.3, "duration": 0.4}))
        res = await out.one("c1")
        assert res["status"] == "done", res
        await wait_for(lambda: red.state == pytest.approx(0.2) and blue.state == pytest.approx(0.2), timeout=4)
        tl = timeline(red)[n0:]
        values = [v for _, v in tl]
        peak = values.index(1.0)
        ramp = values[:peak + 1]
        assert ramp == sorted(ramp) and len(set(ramp)) >= 6  # rises over many steps
        assert tl[peak][0] - tl[0][0] > 0.2  # over about 0.3 s, not at once
        hold = tl[peak + 1][0] - tl[peak][0]
        assert 0.3 < hold < 1.0  # held for the duration (0.4 s) ...
        assert values[peak + 1:] == [pytest.approx(0.2)]  # ... then neutral (white at 0.2)
        assert tl[peak][0] - t_send < 1.0
    finally:
        await agent.stop()


async def test_duration_without_neutral_turns_the_light_off(tmp_path, connect, pins):
    angry = robot(tmp_path, {"face": FACE}, emotions={"angry": EMOTIONS["angry"]})
    agent, peer, out = await started(tmp_path, connect, angry)
    try:
        red = pins.pin(17)
        await peer.send(function_call_done("resp_1", "c1", "emotion", {"emotion_tag": "angry", "duration": 0.3}))
        assert (await out.one("c1"))["status"] == "done"
        await wait_for(lambda: 1.0 in [v for _, v in timeline(red)])
        await wait_for(lambda: red.state == 0, timeout=3)
    finally:
        await agent.stop()


async def test_a_motion_runs_while_an_emotion_holds(tmp_path, connect, pty_device, pins):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port), "face": FACE}), dev)
    try:
        red = pins.pin(17)
        n0 = len(dev.frames)
        # "joy" also poses the head (20 degrees in 0.3 s); it holds for 3 s
        await peer.send(function_call_done("resp_1", "c1", "emotion", {"emotion_tag": "joy", "duration": 3.0}))
        assert (await out.one("c1"))["status"] == "done"
        t_shown = time.monotonic()
        await peer.send(function_call_done("resp_1", "c2", "motion", {"motion_tag": "sweep"}))
        res = await out.one("c2")
        assert res["status"] == "done"
        assert time.monotonic() - t_shown < 2.0  # not held up by the emotion's 3 s
        assert red.state == pytest.approx(1.0)  # the face still shows joy
        got = (await frames_settle(dev, quiet=0.15))[n0:]
        assert [pos(f) for _, f in got] == [raw(20)] + SWEEP_RAW
        # the face returns to neutral when the duration is over
        await wait_for(lambda: red.state == pytest.approx(0.2), timeout=5)
    finally:
        await agent.stop()


# --- limits ------------------------------------------------------------------------------


async def test_targets_outside_limits_are_clamped(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    cfg = robot(tmp_path, {"head": head(dev.port, min=-20, max=20)})
    agent, peer, out = await started(tmp_path, connect, cfg, dev)
    try:
        n0 = len(dev.frames)
        await peer.send(function_call_done("resp_1", "c1", "motion", {"motion_tag": "reach"}))
        assert (await out.one("c1"))["status"] == "done"
        got = (await frames_settle(dev, quiet=0.15))[n0:]
        assert [pos(f) for _, f in got] == [raw(20), raw(-20), raw(15)] == [2276, 1820, 2219]
        assert dev.errors == []
    finally:
        await agent.stop()


# --- barge-in and cancelled responses ----------------------------------------------------


async def test_barge_in_drops_only_the_interrupted_responses_commands(tmp_path, connect, pty_device):
    dh, dt = pty_device(feetech_decode), pty_device(feetech_decode)
    acts = {"head": head(dh.port), "tail": {**head(dt.port), "ids": [2]}}
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, acts), dh, dt)
    try:
        nt = len(dt.frames)
        # an earlier, finished response left the tail wagging for 1.8 s
        await peer.send(created("resp_0"),
                        function_call_done("resp_0", "c0", "motion", {"motion_tag": "wag", "repeat": 3}),
                        response_done("resp_0"))
        # the current response moves the head for ~6 s and queues another head motion
        await peer.send(created("resp_1"),
                        function_call_done("resp_1", "c1", "motion", {"motion_tag": "sweep", "repeat": 10}),
                        function_call_done("resp_1", "c2", "motion", {"motion_tag": "look"}))
        await wait_for(lambda: len(dh.frames) >= 3)
        t_barge = time.monotonic()
        await peer.send(speech_started())
        res = await out.wait("c1", "c2")
        assert res["c1"]["status"] == "dropped" and res["c2"]["status"] == "dropped"
        # the user's next turn: a later response's command runs
        await peer.send(response_done("resp_1", "cancelled"), created("resp_2"),
                        function_call_done("resp_2", "c3", "motion", {"motion_tag": "look"}))
        res = await out.wait("c0", "c3")
        assert res["c3"]["status"] == "done", res["c3"]
        assert res["c0"]["status"] == "done", res["c0"]  # not the interrupted response's
        tail = [pos(f) for _, f in (await frames_settle(dt, quiet=0.2))[nt:]]
        assert tail == [raw(25), raw(-25), raw(0)] * 3
        head_frames = [pos(f) for _, f in dh.frames]
        assert head_frames[-1] == raw(30) and head_frames.count(raw(30)) == 1  # c3 only, c2 never ran
        after = [pos(f) for t, f in dh.frames if t > t_barge]
        assert after == [raw(0), raw(30)]  # brought to rest (home) at once, then the next response
    finally:
        await agent.stop()


async def test_cancelled_response_drops_its_commands_and_the_next_one_runs(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port)}), dev)
    try:
        n0 = len(dev.frames)
        # two responses in flight: resp_2's motion waits behind resp_1's long one on the head
        await peer.send(created("resp_1"),
                        function_call_done("resp_1", "c1", "motion", {"motion_tag": "sweep", "repeat": 10}),
                        created("resp_2"),
                        function_call_done("resp_2", "c2", "motion", {"motion_tag": "look", "wait": True}))
        await wait_for(lambda: len(dev.frames) >= n0 + 2)
        t_cancel = time.monotonic()
        await peer.send(response_done("resp_1", "cancelled"))
        res = await out.wait("c1", "c2")
        assert res["c1"]["status"] == "dropped", res["c1"]
        assert res["c2"]["status"] == "done", res["c2"]
        assert out.at["c2"] - t_cancel < 2.0  # it did not wait for c1's remaining ~5 s
        positions = [pos(f) for _, f in (await frames_settle(dev, quiet=0.2))[n0:]]
        assert positions[-1] == raw(30) and positions.count(raw(30)) == 1
    finally:
        await agent.stop()


# --- unknown tags ------------------------------------------------------------------------


async def test_unknown_tags_fail_naming_the_tag_and_the_robot_keeps_working(tmp_path, connect, pty_device, pins):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port), "face": FACE}), dev)
    try:
        await peer.send(function_call_done("resp_1", "c1", "motion", {"motion_tag": "moonwalk"}),
                        function_call_done("resp_1", "c2", "emotion", {"emotion_tag": "smug"}))
        res = await out.wait("c1", "c2")
        m, e = res["c1"], res["c2"]
        assert m["status"] == "failed" and "moonwalk" in m["reason"]
        assert all(t in m["reason"] for t in ("sweep", "look", "reach"))
        assert e["status"] == "failed" and "smug" in e["reason"]
        assert all(t in e["reason"] for t in ("angry", "joy", "neutral"))
        n0 = len(dev.frames)
        await peer.send(function_call_done("resp_1", "c3", "motion_and_emotion",
                                           {"motion_tag": "look", "emotion_tag": "angry"}))
        assert (await out.one("c3"))["status"] == "done"
        await wait_for(lambda: [pos(f) for _, f in dev.frames[n0:]] == [raw(30)])
        await wait_for(lambda: pins.pin(17).state == pytest.approx(1.0))
    finally:
        await agent.stop()


# --- a serial port that vanishes ---------------------------------------------------------


async def test_port_vanishes_mid_session_and_comes_back(tmp_path, connect, pty_device, http):
    link = str(tmp_path / "usb-1a86_USB_Single_Serial-if00")
    dev = pty_device(feetech_decode, link=link)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(link)}), dev)
    url = f"http://127.0.0.1:{agent.port}/health"

    async def health():
        async with http.get(url) as resp:
            return await resp.json()

    try:
        await peer.send(function_call_done("resp_1", "c1", "motion", {"motion_tag": "look"}))
        assert (await out.one("c1"))["status"] == "done"
        assert (await health())["status"] == "ok"
        dev.unplug()
        deadline = time.monotonic() + 5
        while (h := await health())["actuators"]["actuators"]["head"]["state"] != "reconnecting":
            assert time.monotonic() < deadline, h
            await asyncio.sleep(0.05)
        assert h["status"] == "degraded" and any("head" in p for p in h["problems"]), h
        t0 = time.monotonic()
        await peer.send(function_call_done("resp_1", "c2", "motion", {"motion_tag": "sweep"}))
        res = await out.one("c2", timeout=3)
        assert time.monotonic() - t0 < 1.0  # fails fast, no hang
        assert res["status"] == "failed"
        assert "head" in res["reason"] and "reconnecting" in res["reason"], res["reason"]
        # plugged back in: a new device behind the same by-id path
        dev2 = pty_device(feetech_decode, link=link)
        deadline = time.monotonic() + 10
        while (h := await health())["actuators"]["actuators"]["head"]["state"] != "ok":
            assert time.monotonic() < deadline, h
            await asyncio.sleep(0.05)
        assert h["status"] == "ok", h
        await wait_for(lambda: len(dev2.frames) >= 1)
        await peer.send(function_call_done("resp_1", "c3", "motion", {"motion_tag": "look"}))
        assert (await out.one("c3"))["status"] == "done"
        got = [pos(f) for _, f in (await frames_settle(dev2, quiet=0.15))]
        assert got == [raw(0), raw(30)]  # the safe (home) frame first, then the call
        assert dev2.errors == []
    finally:
        await agent.stop()


# --- /health: simulated or not -----------------------------------------------------------


async def test_health_says_not_simulated_when_every_actuator_is_real(tmp_path, connect, pty_device, http):
    dev = pty_device(feetech_decode)
    agent, _peer, _out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port)}), dev)
    try:
        async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
            h = await resp.json()
        assert h["simulated"] is False and h["notice"] is None
        assert h["actuators"]["actuators"]["head"]["simulated"] is False
    finally:
        await agent.stop()


async def test_health_counts_mock_pins_as_simulated(tmp_path, connect, pty_device, http):
    """A robot maker who configures ``pin_factory = "mock"`` drives no real LED: the robot is
    (partly) simulated and /health must say so, naming which actuator."""
    dev = pty_device(feetech_decode)
    acts = {"head": head(dev.port), "face": {**FACE, "pin_factory": "mock"}}
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, acts), dev)
    try:
        async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
            h = await resp.json()
        assert h["simulated"] is True and "SIMULATED" in h["notice"]
        assert h["actuators"]["actuators"]["face"]["simulated"] is True
        assert h["actuators"]["actuators"]["head"]["simulated"] is False
        await peer.send(function_call_done("resp_1", "c1", "emotion", {"emotion_tag": "angry"}))
        assert (await out.one("c1"))["status"] == "done"
    finally:
        await agent.stop()



async def test_barge_in_ends_a_held_emotion_and_rests_its_pose(tmp_path, connect, pty_device, pins):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port), "face": FACE}), dev)
    try:
        red = pins.pin(17)
        n0 = len(dev.frames)
        await peer.send(created("resp_1"), function_call_done("resp_1", "c1", "emotion",
                                                              {"emotion_tag": "joy", "duration": 30, "intensity": 0.5}))
        assert (await out.one("c1"))["status"] == "done"
        await wait_for(lambda: red.state == pytest.approx(0.5))  # intensity scales the light ...
        assert [pos(f) for _, f in dev.frames[n0:]] == [raw(10)]  # ... and the pose (20 deg * 0.5)
        n1 = len(dev.frames)
        await peer.send(speech_started())
        await wait_for(lambda: red.state == pytest.approx(0.2), timeout=2)  # neutral now, not in 30 s
        await wait_for(lambda: [pos(f) for _, f in dev.frames[n1:]] == [raw(0)], timeout=2)  # pose back home
    finally:
        await agent.stop()


async def test_argument_clamps_are_reported_in_the_outcome(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    agent, peer, out = await started(tmp_path, connect, robot(tmp_path, {"head": head(dev.port)}), dev)
    try:
        n0 = len(dev.frames)
        await peer.send(function_call_done("resp_1", "c1", "motion", {"motion_tag": "sweep", "speed": 10, "repeat": 2}))
        res = await out.one("c1")
        assert res["status"] == "done"
        assert any("speed" in n and "5" in n for n in res["notes"]), res
        assert res["motion"]["detail"]["planned_s"] == pytest.approx(0.24)  # 0.6 * 2 / 5
        got = (await frames_settle(dev, quiet=0.15))[n0:]
        assert [pos(f) for _, f in got] == SWEEP_RAW * 2
    finally:
        await agent.stop()
