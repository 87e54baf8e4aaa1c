"""Scheduling semantics on mock actuators: queueing (wait), preemption, multi-actuator starts,
barge-in by response, disabled drivers, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from ticos_agent.actuators import ActuatorSystem, parse_actuators_config
from ticos_agent.arguments import EmotionArgs, MotionArgs

DOC = {
    "robot": {"default_library": False},
    "actuators": {"a": {"driver": "mock"}, "b": {"driver": "mock"}, "lamp": {"driver": "mock", "kind": "light"}},
    "motions": {
        "left": {"a": [[0.2, 10], [0.3, 0]]},
        "right": {"b": [[0.2, 10], [0.3, 0]]},
        "both": {"a": [[0.1, 5]], "b": [[0.1, 5]]},
        "far": {"a": [[0.1, 500]]},
        "slowboth": {"a": [[1.0, 30]], "b": [[1.0, 30]]},
    },
    "emotions": {"happy": {"color": "#FF0000", "pose": {"a": 20}}, "calm": {"color": "#0000FF"}},
}


@pytest.fixture
async def system():
    s = ActuatorSystem(parse_actuators_config(DOC))
    await s.start()
    yield s
    await s.stop()


def moves(s, name):
    return [(t, args) for t, op, args in s.drivers[name].history if op == "move"]


async def test_wait_true_queues_and_wait_false_preempts(system):
    first = asyncio.create_task(system.motion(MotionArgs("left")))
    second = asyncio.create_task(system.motion(MotionArgs("left")))
    await asyncio.sleep(0.05)
    assert system.health()["actuators"]["a"]["queued"] == 2
    o1, o2 = await asyncio.wait_for(asyncio.gather(first, second), 3)
    assert o1.status == o2.status == "done"
    starts = [t for t, args in moves(system, "a") if args[0] == [10.0]]
    assert starts[1] - starts[0] >= 0.28  # the second began after the first ended (0.3 s)

    running = asyncio.create_task(system.motion(MotionArgs("left")))
    queued = asyncio.create_task(system.motion(MotionArgs("left")))
    await asyncio.sleep(0.05)
    now = await asyncio.wait_for(system.motion(MotionArgs("left", wait=False)), 3)
    assert now.status == "done"
    assert (await running).status == "dropped" and "preempted" in (await running).reason
    assert (await queued).status == "dropped"


async def test_other_actuators_run_in_parallel_and_shared_commands_start_together(system):
    la = asyncio.create_task(system.motion(MotionArgs("left")))
    rb = asyncio.create_task(system.motion(MotionArgs("right")))
    await asyncio.sleep(0.01)
    assert moves(system, "a") and moves(system, "b")  # independent actuators: both already moving
    await asyncio.gather(la, rb)

    la = asyncio.create_task(system.motion(MotionArgs("left")))
    await asyncio.sleep(0.01)
    both = await asyncio.wait_for(system.motion(MotionArgs("both")), 3)
    assert both.status == "done"
    ta = next(t for t, args in moves(system, "a") if args[0] == [5.0])
    tb = next(t for t, args in moves(system, "b") if args[0] == [5.0])
    assert abs(ta - tb) < 0.05  # b waited for a to be free, then both started together
    assert (await la).status == "done"


async def test_targets_are_clamped_to_limits(system):
    assert (await system.motion(MotionArgs("far"))).status == "done"
    assert moves(system, "a")[-1][1][0] == [90.0]  # mock default limits -90..90


async def test_unknown_tags_name_the_known_ones(system):
    out = await system.motion(MotionArgs("moonwalk"))
    assert out.status == "failed" and "'moonwalk'" in out.reason and "both, far, left, right" in out.reason
    out = await system.emotion(EmotionArgs("bored"))
    assert out.status == "failed" and "calm, happy" in out.reason
    assert system.known_emotions() == ["calm", "happy"]


async def test_interrupt_by_response_drops_only_that_response(system):
    mine = asyncio.create_task(system.motion(MotionArgs("left"), response_id="r1"))
    mine_queued = asyncio.create_task(system.motion(MotionArgs("left"), response_id="r1"))
    other = asyncio.create_task(system.motion(MotionArgs("right"), response_id="r2"))
    await asyncio.sleep(0.05)
    assert system.interrupt("r1") == 2
    assert (await mine).status == "dropped" and (await mine_queued).status == "dropped"
    assert (await other).status == "done"
    assert system.drivers["a"].history[-1][1] == "safe"  # brought to rest
    assert system.interrupt() == 0


async def test_emotion_light_and_pose(system):
    out = await asyncio.wait_for(system.emotion(EmotionArgs("happy", intensity=0.5, duration=0.05)), 3)
    assert out.status == "done" and sorted(out.detail["actuators"]) == ["a", "lamp"]
    lights = [args for _, op, args in system.drivers["lamp"].history if op == "light"]
    assert lights[0][:3] == ((1.0, 0.0, 0.0), 0.5, "solid")
    assert moves(system, "a")[0][1][0] == [10.0]  # pose 20 at intensity 0.5 from home 0
    await asyncio.sleep(0.5)
    assert system.drivers["lamp"].history[-1][1] == "safe"  # no neutral emotion: back to the safe state (off)
    assert moves(system, "a")[-1][1] == ([0.0], 0.3)  # and the pose back home
    # a new emotion replaces one that is still holding: the first one's return is cancelled
    held = await asyncio.wait_for(system.emotion(EmotionArgs("calm", duration=0.2)), 1)
    assert held.status == "done"
    assert (await asyncio.wait_for(system.emotion(EmotionArgs("calm")), 2)).status == "done"
    await asyncio.sleep(0.4)
    assert system.drivers["lamp"].history[-1][1] == "light"


async def test_a_motion_runs_while_an_emotion_holds(system):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    emo = asyncio.create_task(system.emotion(EmotionArgs("happy", duration=0.6)))
    await asyncio.sleep(0.05)
    out = await asyncio.wait_for(system.motion(MotionArgs("left")), 1.5)  # queues behind the 0.3 s pose move-in only
    assert out.status == "done" and loop.time() - t0 < 0.8
    assert (await asyncio.wait_for(emo, 1)).status == "done"
    await asyncio.sleep(0.6)
    # the lamp went back (safe: no neutral here); the head's return was replaced by the motion
    assert system.drivers["lamp"].history[-1][1] == "safe"
    assert moves(system, "a")[-1][1] == ([0.0], pytest.approx(0.1))  # the last keyframe of "left"
    assert system.health()["actuators"]["a"]["queued"] == 0


async def test_preemption_rests_the_victims_other_actuators(system):
    victim = asyncio.create_task(system.motion(MotionArgs("slowboth")))
    await asyncio.sleep(0.1)
    n_b = len(system.drivers["b"].history)
    out = await asyncio.wait_for(system.motion(MotionArgs("left", wait=False)), 2)
    assert out.status == "done" and (await victim).status == "dropped"
    b_ops = [op for _, op, _ in list(system.drivers["b"].history)[n_b:]]
    assert b_ops == ["safe"]  # b, which "left" does not use, is not frozen mid-move
    a_ops = [op for _, op, _ in list(system.drivers["a"].history)]
    assert "safe" not in a_ops[1:]  # a goes straight on with the new motion (only the start's safe)


async def test_serial_line_emotion_goes_out_at_once_with_its_fade_in():
    doc = {"robot": {"default_library": False},
           "actuators": {"mcu": {"driver": "mock", "kind": "line"}, "lamp": {"driver": "mock", "kind": "light"}},
           "emotions": {"happy": {"color": "#FF0000"}}}
    s = ActuatorSystem(parse_actuators_config(doc))
    await s.start()
    try:
        t0 = time.monotonic()
        out = await asyncio.wait_for(s.emotion(EmotionArgs("happy", fade_in=0.3)), 2)
        assert out.status == "done"
        lines = [(t, args) for t, op, args in s.drivers["mcu"].history if op == "line"]
        assert len(lines) == 1 and lines[0][0] - t0 < 0.2 and lines[0][1][1]["fade_in"] == 0.3
        lamp = [t for t, op, args in s.drivers["lamp"].history if op == "light"]
        assert lamp[-1] - t0 > 0.25  # the light is faded in by the agent
    finally:
        await s.stop()


async def test_barge_in_returns_lights_to_neutral():
    doc = {**DOC, "emotions": {**DOC["emotions"], "neutral": {"color": "#00FF00", "brightness": 0.2}}}
    s = ActuatorSystem(parse_actuators_config(doc))
    await s.start()
    try:
        lamp = s.drivers["lamp"]
        fading = asyncio.create_task(s.emotion(EmotionArgs("happy", fade_in=1.0), response_id="r1"))
        await asyncio.sleep(0.2)
        assert s.interrupt("r1") == 2  # the light and the pose
        assert (await fading).status == "dropped"
        assert lamp.history[-1][1:] == ("light", ((0.0, 1.0, 0.0), 0.2, "solid", 1.0))  # neutral, not off
        assert s.drivers["a"].history[-1][1] == "safe"  # a servo rests in its safe state
        # an expression that holds goes back to neutral at a barge-in too
        held = await asyncio.wait_for(s.emotion(EmotionArgs("calm", duration=30), response_id="r2"), 1)
        assert held.status == "done" and lamp.history[-1][2][0] == (0.0, 0.0, 1.0)
        s.interrupt("r2")
        await asyncio.sleep(0.05)
        assert lamp.history[-1][2][0] == (0.0, 1.0, 0.0)
    finally:
        await s.stop()


async def test_cancelled_call_drops_its_command(system):
    task = asyncio.create_task(system.motion(MotionArgs("left")))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert system.health()["actuators"]["a"]["queued"] == 0


async def test_a_driver_that_cannot_open_is_disabled_not_fatal():
    doc = {"robot": {"default_library": False}, "actuators": {"x": {"driver": "mock", "fail_open": True}},
           "motions": {"go": {"x": [[0.1, 1]]}}}
    s = ActuatorSystem(parse_actuators_config(doc))
    await s.start()
    try:
        h = s.health()["actuators"]["x"]
        assert h["state"] == "disabled" and "fail_open" in h["error"]
        out = await asyncio.wait_for(s.motion(MotionArgs("go")), 1)
        assert out.status == "failed" and "disabled" in out.reason
        s.mouth_level(0.5)  # no mouth configured: no-op
    finally:
        await s.stop()


async def test_a_driver_bug_fails_the_call_instead_of_hanging():
    from ticos_agent.actuators import DRIVERS, Driver, register_driver

    @register_driver("test-broken")
    class Broken(Driver):
        def move(self, targets, seconds):
            raise TypeError("bug in the driver")

    try:
        doc = {"robot": {"default_library": False}, "actuators": {"x": {"driver": "test-broken"}},
               "motions": {"go": {"x": [[0.1, 1]]}}}
        s = ActuatorSystem(parse_actuators_config(doc))
        await s.start()
        out = await asyncio.wait_for(s.motion(MotionArgs("go")), 2)
        await s.stop()
        assert out.status == "failed" and "bug in the driver" in out.reason
    finally:
        DRIVERS.pop("test-broken")
