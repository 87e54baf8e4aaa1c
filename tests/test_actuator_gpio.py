"""GPIO drivers on gpiozero's MockFactory with PWM pins: pin value timelines for colour,
fade-in ramps, hold-then-neutral, patterns, the mouth, servo interpolation, clamping and rest."""

from __future__ import annotations

import asyncio
import time

import pytest

from ticos_agent.actuators import ActuatorSystem, parse_actuators_config
from ticos_agent.arguments import EmotionArgs, MotionArgs

FACE = {"driver": "gpio-rgbled", "red": 17, "green": 27, "blue": 22}
NEUTRAL = {"color": "#FFFFFF", "brightness": 0.2}


def timeline(pin) -> list[tuple[float, float]]:
    """(seconds since the pin was made, value) from MockPin.states (stored as deltas)."""
    t, out = 0.0, []
    for s in pin.states:
        t += s.timestamp
        out.append((t, float(s.state)))
    return out


async def settle(pred, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return pred()


async def system_for(doc) -> ActuatorSystem:
    s = ActuatorSystem(parse_actuators_config({"robot": {"default_library": False}, **doc}))
    await s.start()
    return s


async def test_emotion_colour_fade_hold_and_return_to_neutral(pins):
    doc = {"actuators": {"face": FACE}, "emotions": {"happy": {"color": "#FF8000"}, "neutral": NEUTRAL}}
    s = await system_for(doc)
    try:
        red, green, blue = (pins.pin(n) for n in (17, 27, 22))
        n0 = len(red.states)
        out = await asyncio.wait_for(s.emotion(EmotionArgs("happy", intensity=0.5, fade_in=0.2, duration=0.3)), 3)
        assert out.status == "done" and out.detail["actuators"] == ["face"]
        assert await settle(lambda: red.state == pytest.approx(0.2))
        tl = timeline(red)[n0:]
        values = [v for _, v in tl]
        peak = values.index(0.5)
        ramp = values[:peak + 1]
        assert ramp == sorted(ramp) and len(set(ramp)) >= 6  # a ramp of many steps up to 0.5
        ramp_time = tl[peak][0] - tl[0][0]
        hold_time = tl[peak + 1][0] - tl[peak][0]
        assert 0.12 < ramp_time < 0.35 and 0.2 < hold_time < 0.5
        assert values[-1] == pytest.approx(0.2)  # neutral: white at 0.2
        assert max(v for _, v in timeline(green)) == pytest.approx(0.5 * 128 / 255)
        assert blue.state == pytest.approx(0.2) and green.state == pytest.approx(0.2)
    finally:
        await s.stop()
    assert red.state == 0 and green.state == 0  # safe state at stop: off


async def test_without_neutral_the_light_goes_off_after_duration(pins):
    s = await system_for({"actuators": {"face": FACE}, "emotions": {"angry": {"color": "#FF0000"}}})
    try:
        red = pins.pin(17)
        out = await asyncio.wait_for(s.emotion(EmotionArgs("angry", duration=0.1)), 3)
        assert out.status == "done"
        assert await settle(lambda: 1.0 in [v for _, v in timeline(red)])
        assert await settle(lambda: red.state == 0)
    finally:
        await s.stop()


async def test_pulse_pattern_keeps_changing_the_pin(pins):
    doc = {"actuators": {"face": FACE}, "emotions": {"sad": {"color": "#0000FF", "pattern": "pulse", "period": 0.4}}}
    s = await system_for(doc)
    try:
        blue = pins.pin(22)
        n0 = len(blue.states)
        assert (await s.emotion(EmotionArgs("sad", intensity=0.5))).status == "done"
        await asyncio.sleep(0.5)
        values = [v for _, v in timeline(blue)[n0:]]
        assert len(values) > 10 and max(values) <= 0.5 + 1e-9 and min(values) < 0.1
    finally:
        await s.stop()


async def test_mouth_follows_loudness_without_queueing(pins):
    doc = {"actuators": {"face": FACE, "mouth": {"driver": "gpio-pwmled", "pin": 18}},
           "robot": {"mouth": "mouth", "default_library": False}}
    s = ActuatorSystem(parse_actuators_config(doc))
    await s.start()
    try:
        mouth = pins.pin(18)
        for level in (0.25, 0.5, 3.0, -1.0, 0.75):
            s.mouth_level(level)
        assert await settle(lambda: mouth.state == pytest.approx(0.75))
        assert [v for _, v in timeline(mouth)][-5:] == [0.25, 0.5, 1.0, 0.0, 0.75]  # clamped to 0..1
        assert s.health()["actuators"]["mouth"]["queued"] == 0
    finally:
        await s.stop()


SERVO = {"driver": "gpio-servo", "pin": 12, "min": -30, "max": 60, "home": 0}


def duty(angle: float) -> float:
    return (1.5 + angle / 90 * 0.5) / 20


async def test_servo_keyframes_are_interpolated_and_clamped(pins):
    s = await system_for({"actuators": {"arm": SERVO}, "motions": {"raise": {"arm": [[0.2, 120]]}}})
    try:
        pin = pins.pin(12)
        assert await settle(lambda: pin.state == pytest.approx(duty(0)))
        n0 = len(pin.states)
        out = await asyncio.wait_for(s.motion(MotionArgs("raise")), 3)
        assert out.status == "done"
        assert await settle(lambda: pin.state == pytest.approx(duty(60)))  # 120 clamped to max 60
        values = [v for _, v in timeline(pin)[n0:]]
        assert values == sorted(values) and len(values) >= 8  # 0.2 s in 20 ms steps
        assert max(values) == pytest.approx(duty(60))
    finally:
        await s.stop()


async def test_interrupt_rests_a_moving_servo(pins):
    s = await system_for({"actuators": {"arm": SERVO}, "motions": {"slow": {"arm": [[2.0, 60]]}}})
    try:
        pin = pins.pin(12)
        task = asyncio.create_task(s.motion(MotionArgs("slow"), response_id="resp_1"))
        await asyncio.sleep(0.3)
        assert pin.state > duty(0)
        assert s.interrupt("resp_2") == 0
        assert s.interrupt("resp_1") == 1
        out = await asyncio.wait_for(task, 1)
        assert out.status == "dropped" and "interrupted" in out.reason
        assert await settle(lambda: pin.state == pytest.approx(duty(0)))  # home
    finally:
        await s.stop()


async def test_detach_when_safe_waits_for_the_servo_to_get_home(pins):
    arm = {**SERVO, "detach_when_safe": True, "safe_seconds": 0.3}
    s = await system_for({"actuators": {"arm": arm}, "motions": {"slow": {"arm": [[2.0, 60]]}}})
    try:
        pin = pins.pin(12)
        assert await settle(lambda: pin.state == 0)  # homed at start, then detached
        task = asyncio.create_task(s.motion(MotionArgs("slow"), response_id="r1"))
        await asyncio.sleep(0.3)
        assert pin.state > duty(0)
        s.interrupt("r1")
        assert (await asyncio.wait_for(task, 1)).status == "dropped"
        assert await settle(lambda: pin.state == pytest.approx(duty(0)))  # home first ...
        assert await settle(lambda: pin.state == 0)  # ... then limp, after safe_seconds
        tl = timeline(pin)  # the pin's own timestamps, not when this test happened to look
        assert tl[-1][1] == 0 and tl[-2][1] == pytest.approx(duty(0)) and tl[-1][0] - tl[-2][0] >= 0.28

        # work arriving while it waits keeps the servo attached
        s.interrupt()  # nothing to drop: no safe state
        s.scheduler.safe("arm")
        await asyncio.sleep(0.05)
        out = await asyncio.wait_for(s.motion(MotionArgs("slow", speed=10.0)), 2)
        assert out.status == "done"
        await asyncio.sleep(0.4)
        assert pin.state == pytest.approx(duty(60))
    finally:
        await s.stop()
