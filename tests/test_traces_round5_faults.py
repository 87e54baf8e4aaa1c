"""Realtime traces, fifth round (continued from ``test_traces_round5.py``; the robot of both is
in ``watched_robot.py``: an LX-16A bus servo on a pseudo-terminal, LEDs and a hobby servo on
gpiozero's MockFactory): what goes wrong while a person watches.

The head's cable pulled in the middle of a ``motion_and_emotion`` with another motion queued
behind it, and plugged back in; arguments out of range or of the wrong type; two voice agents
calling at once; the agent stopped in the middle of a motion, an emotion and a servo move.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from devices import lx16a_decode
from helpers import Outputs, db_rows, frames_settle, health, timeline, wait_for
from traces import Voice
from watched_robot import HOME, LOOK, config, lx, nod, robot, sent

from ticos_agent.inspect.outcome import dropped_reason

LED = {"driver": "gpio-pwmled", "pin": 18}


def call(v: Voice, call_id: str, name: str, **args) -> list[dict]:
    return v.call("resp_1", f"item_{call_id}", call_id, name, json.dumps(args))


async def test_the_heads_cable_pulled_mid_motion_and_emotion_fails_the_motion_and_the_face_stays(
        tmp_path, connect, pty_device, pins, http):
    """The nod of a ``motion_and_emotion`` is under way, a look waits behind it, and the head's
    USB cable is pulled. The call fails naming the head (its emotion half done: the LED still
    glows), the look fails at once instead of waiting, the service and the socket stay up and
    /health names the head. Plugged back in, the head goes home and nothing stale plays."""
    link = str(tmp_path / "usb-1a86_USB_Serial-if00-port0")
    dev = pty_device(lx16a_decode, link=link)
    agent, peer, out = await robot(config(tmp_path, link, face=LED), connect, dev)
    try:
        led = pins.pin(18)
        v = Voice(True, "sess_cable")
        await peer.send(v.created("resp_1"), *call(v, "c1", "motion_and_emotion", motion_tag="nod", repeat=3,
                                                   emotion_tag="glad", intensity=0.5),
                        *call(v, "c2", "motion", motion_tag="look"))
        await wait_for(lambda: len(dev.frames) == 1 + 2)
        dev.unplug()
        t_pulled = time.monotonic()
        res = await out.wait("c1", "c2")
        assert time.monotonic() - t_pulled < 1.5  # not after the nod's remaining 2.8 s
        both, look = res["c1"], res["c2"]
        assert both["status"] == "failed" and both["motion"]["status"] == "failed"
        assert "'head'" in both["reason"] and both["reason"] == both["motion"]["reason"]
        assert both["emotion"]["status"] == "done"
        assert look["status"] == "failed" and "'head'" in look["reason"]
        assert led.state == pytest.approx(0.5)  # the face still shows glad
        assert sent(dev) == nod()[:2]
        h = await health(agent, http)
        assert h["status"] == "degraded" and any("head" in p for p in h["problems"]), h
        assert {n: a["state"] for n, a in h["actuators"]["actuators"].items()} == {"head": "reconnecting",
                                                                                  "face": "ok"}
        await peer.send(*call(v, "c3", "emotion", emotion_tag="glad"))  # the robot goes on without its head
        assert (await out.one("c3"))["status"] == "done"
        await wait_for(lambda: led.state == pytest.approx(1.0))
        dev2 = pty_device(lx16a_decode, link=link)
        await wait_for(lambda: agent.health()["actuators"]["actuators"]["head"]["state"] == "ok", timeout=10)
        assert [lx(f) for _, f in (await frames_settle(dev2, quiet=0.6))] == [HOME]  # home, no stale nod or look
        await peer.send(*call(v, "c4", "motion", motion_tag="look"))
        assert (await out.one("c4"))["status"] == "done"
        assert [lx(f) for _, f in (await frames_settle(dev2, quiet=0.3))] == [HOME, LOOK]
        assert (await health(agent, http))["status"] == "ok"
        assert dev.errors == dev2.errors == []
    finally:
        await agent.stop()


BAD = {  # call -> the field its failed output names
    "c1": ("motion", {"motion_tag": "nod", "speed": -1}, "speed"),
    "c2": ("motion", {"motion_tag": "nod", "repeat": "3"}, "repeat"),
    "c3": ("motion_and_emotion", {"motion_tag": "nod", "emotion_tag": "glad", "speed": -1}, "speed"),
    "c4": ("emotion", {"emotion_tag": "glad", "intensity": "7"}, "intensity"),
}


async def test_unusable_arguments_move_nothing_and_an_intensity_of_seven_is_full(tmp_path, connect, pty_device,
                                                                                pins):
    """``speed=-1``, ``repeat="3"``, a ``motion_and_emotion`` with a bad half, ``intensity="7"``:
    each answered with a failed output naming the field, and neither the bus nor the LED sees
    anything. ``intensity=7`` (a number) is clamped to 1 as the README says, and says so."""
    dev = pty_device(lx16a_decode)
    agent, peer, out = await robot(config(tmp_path, dev.port, face=LED), connect, dev)
    try:
        led = pins.pin(18)
        n0 = len(led.states)
        v = Voice(False, "sess_bad")
        await peer.send(v.created("resp_1"))
        for call_id, (name, args, _) in BAD.items():
            await peer.send(*call(v, call_id, name, **args))
        res = await out.wait(*BAD)
        assert {c: (r["status"], r["field"]) for c, r in res.items()} == \
            {c: ("failed", field) for c, (*_, field) in BAD.items()}
        await asyncio.sleep(0.3)
        assert sent(dev) == [] and timeline(led)[n0:] == []
        await peer.send(*call(v, "c5", "emotion", emotion_tag="glad", intensity=7))
        result = await out.one("c5")
        assert result["status"] == "done" and result["emotion"]["detail"]["args"]["intensity"] == 1.0
        assert any("intensity" in note for note in result["notes"]), result
        await wait_for(lambda: led.state == 1.0)
        assert [v for _, v in timeline(led)[n0:]] == [1.0]
    finally:
        await agent.stop()


async def test_two_voice_agents_calling_at_once_get_whole_motions_one_after_the_other(tmp_path, connect,
                                                                                      pty_device):
    """Two sockets send a motion for the head in the same instant (``wait=true`` both): the bus
    plays one whole, then the other whole, never a mix; each socket hears only its own call's
    output."""
    dev = pty_device(lx16a_decode)
    agent, a, out_a = await robot(config(tmp_path, dev.port), connect, dev)
    try:
        b = await connect(agent)
        out_b = Outputs(b)
        va, vb = Voice(True, "sess_a"), Voice(False, "sess_b")
        await asyncio.gather(a.send(*va.session(), *call(va, "call_a", "motion", motion_tag="nod")),
                             b.send(*vb.session(), *call(vb, "call_b", "motion", motion_tag="look")))
        ra, rb = await asyncio.gather(out_a.one("call_a"), out_b.one("call_b"))
        assert ra["status"] == rb["status"] == "done"
        got = (await frames_settle(dev, quiet=0.3))[1:]
        order = [lx(f) for _, f in got]
        assert order in (nod() + [LOOK], [LOOK] + nod()), order
        first = 3 if order[0] != LOOK else 1  # index of the second motion's first frame
        assert got[first][0] - got[first - 1][0] > (0.3 if first == 3 else 0.15)  # after the first's last move
        await a.no_reply(0.3)
        await b.no_reply(0.01)
        assert set(out_a.got) == {"call_a"} and set(out_b.got) == {"call_b"}
    finally:
        await agent.stop()


async def test_stopping_the_agent_mid_motion_leaves_every_actuator_in_its_safe_state(tmp_path, connect,
                                                                                    pty_device, pins):
    """The head nods (a look queued behind), the LED glows at 0.5 for 30 s and the hobby servo is
    half-way through a slow move when the service is stopped (SIGTERM): the head gets its home
    frame and no keyframe after it, the look never plays, the servo is sent home before its
    pulses stop, the LED goes off. The running calls are stored as dropped."""
    dev = pty_device(lx16a_decode)
    arm = {"driver": "gpio-servo", "pin": 12}
    cfg = config(tmp_path, dev.port, face=LED, arm=arm)
    cfg["motions"]["raise"] = {"arm": [[2.0, 80]]}
    agent, peer, out = await robot(cfg, connect, dev)
    led, servo = pins.pin(18), pins.pin(12)
    home_duty = 1.5 / 20  # 0 degrees: a 1.5 ms pulse every 20 ms
    n0_led = len(led.states)
    v = Voice(True, "sess_stop")
    try:
        await peer.send(v.created("resp_1"), *call(v, "c1", "motion", motion_tag="nod", repeat=3),
                        *call(v, "c2", "motion", motion_tag="look"),
                        *call(v, "c3", "emotion", emotion_tag="glad", intensity=0.5, duration=30),
                        *call(v, "c4", "motion", motion_tag="raise"))
        assert (await out.one("c3"))["status"] == "done"
        await wait_for(lambda: len(dev.frames) == 1 + 2 and servo.state > home_duty + 0.002)
        n0 = len(dev.frames)
    finally:
        await agent.stop()
    t_stopped = time.monotonic()
    got = await frames_settle(dev, quiet=0.6)
    assert [lx(f) for _, f in got[n0:]] == [HOME]  # home once; not the nod's third frame, not the look
    assert got[-1][0] < t_stopped
    assert [v for _, v in timeline(led)[n0_led:]] == [0.5, 0.0]  # glad, then off: no flash of neutral
    assert [v for _, v in timeline(servo)][-2:] == [pytest.approx(home_duty), 0.0]  # home, then released
    rows = db_rows(tmp_path / "internal" / "ticos.db", "SELECT call_id, status, result FROM function_calls")
    why = {c: (st, dropped_reason(json.loads(r)["reason"]) if st == "dropped" else None) for c, st, r in rows}
    # what `ticos-agent inspect` tells of them: the service stopped, nobody talked over the robot
    assert why == {"c1": ("dropped", "agent stopping"), "c2": ("dropped", "agent stopping"),
                   "c3": ("done", None), "c4": ("dropped", "agent stopping")}


async def test_a_head_plugged_back_in_while_the_agent_stops_is_sent_home_once(tmp_path, connect, pty_device):
    """The head's cable is out when the service begins to stop (its safe state reaches nothing)
    and is plugged back in before the stop ends: it gets its home frame, once, like a head that
    was there all along."""
    link = str(tmp_path / "usb-1a86_USB_Serial-if00-port0")
    dev = pty_device(lx16a_decode, link=link)
    agent, _peer, _out = await robot(config(tmp_path, link), connect, dev)
    try:
        dev.unplug()
        await wait_for(lambda: agent.health()["actuators"]["actuators"]["head"]["state"] != "ok", timeout=5)
        agent.actuators.halt()  # what Agent.stop() does first (then it drains calls, stops life, audio ...)
        dev2 = pty_device(lx16a_decode, link=link)
        await wait_for(lambda: agent.health()["actuators"]["actuators"]["head"]["state"] == "ok", timeout=10)
        assert [lx(f) for _, f in (await frames_settle(dev2, quiet=0.6))] == [HOME]
    finally:
        await agent.stop()
    assert [lx(f) for _, f in (await frames_settle(dev2, quiet=0.6))] == [HOME]  # and not again at close
