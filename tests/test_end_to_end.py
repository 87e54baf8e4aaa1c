"""A motion call on the WebSocket becomes frames on a serial device; barge-in stops them."""

from __future__ import annotations

import asyncio
import json

from devices import feetech_decode
from helpers import agent_config, settle, stored_call, wait_for
from traces import ev, function_call_done, response_done, speech_started

from ticos_agent import Agent

SWAY = {"sway": {"head": [[0.15, [20, 0]], [0.3, [-20, 0]]]}}


def robot(tmp_path, port: str) -> dict:
    cfg = agent_config(tmp_path, replies={"function_call_output": True})
    cfg.update({
        "robot": {"default_library": False},
        "actuators": {"head": {"driver": "feetech-sts", "port": port, "ids": [1, 2]}},
        "motions": SWAY,
    })
    return cfg


async def test_motion_call_on_socket_drives_servo_frames(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    async with Agent(robot(tmp_path, dev.port)) as agent:
        assert dev.wait_frames(1)  # home at start
        assert agent.health()["simulated"] is False
        peer = await connect(agent)
        await peer.send(function_call_done("resp_1", "call_1", "motion", {"motion_tag": "sway", "repeat": 2}))
        reply = await peer.receive_json(timeout=5)
        assert reply["type"] == "conversation.item.create" and reply["item"]["call_id"] == "call_1"
        assert json.loads(reply["item"]["output"])["status"] == "done"
        frames = [f for _, f in dev.frames[1:]]
        assert len(frames) == 4  # two keyframes, twice
        positions = [int.from_bytes(f[8:10], "little") for f in frames]
        assert positions == [2048 + round(20 * 4096 / 360), 2048 - round(20 * 4096 / 360)] * 2
        assert dev.errors == []
        assert (await stored_call(agent, "call_1"))["status"] == "done"


async def test_barge_in_mid_motion_stops_frames_and_drops_the_queue(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    async with Agent(robot(tmp_path, dev.port)) as agent:
        dev.wait_frames(1)
        peer = await connect(agent)
        await peer.send(ev("response.created", response={"id": "resp_1", "status": "in_progress", "output": []}),
                        function_call_done("resp_1", "call_1", "motion", {"motion_tag": "sway", "repeat": 20}),
                        function_call_done("resp_1", "call_2", "motion", {"motion_tag": "sway"}))
        await wait_for(lambda: len(dev.frames) >= 3)
        await peer.send(speech_started(), response_done("resp_1", "cancelled"))
        outcomes = {}
        for _ in range(2):
            reply = await peer.receive_json(timeout=5)
            outcomes[reply["item"]["call_id"]] = json.loads(reply["item"]["output"])["status"]
        assert outcomes == {"call_1": "dropped", "call_2": "dropped"}
        await asyncio.sleep(0.5)
        count = len(dev.frames)
        await asyncio.sleep(0.5)
        assert len(dev.frames) == count  # nothing moves any more
        assert count < 1 + 40  # far fewer than 20 repeats of two keyframes
        await settle(agent)
        assert (await stored_call(agent, "call_2"))["status"] == "dropped"
        # the robot takes the next response normally
        await peer.send(function_call_done("resp_2", "call_3", "motion", {"motion_tag": "sway"}))
        reply = await peer.receive_json(timeout=5)
        assert json.loads(reply["item"]["output"])["status"] == "done"


async def test_unknown_tag_gives_failed_outcome_naming_known_tags(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    async with Agent(robot(tmp_path, dev.port)) as agent:
        peer = await connect(agent)
        await peer.send(function_call_done("resp_1", "call_1", "motion", {"motion_tag": "moonwalk"}))
        reply = await peer.receive_json(timeout=5)
        out = json.loads(reply["item"]["output"])
        assert out["status"] == "failed"
        assert "moonwalk" in out["reason"] and "sway" in out["reason"]


async def test_default_config_is_a_simulated_robot_and_says_so(tmp_path, connect, http, caplog):
    async with Agent(agent_config(tmp_path)) as agent:
        async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
            body = await resp.json()
        assert body["simulated"] is True and "SIMULATED" in body["notice"]
        assert any("SIMULATED" in r.getMessage() for r in caplog.records)
        peer = await connect(agent)
        await peer.send(function_call_done("resp_1", "call_1", "motion_and_emotion",
                                           {"motion_tag": "nod", "emotion_tag": "happy", "speed": 4}))
        row = await stored_call(agent, "call_1")
        assert row["status"] == "done", row


async def test_calls_of_an_interrupted_response_are_not_run(tmp_path, connect, pty_device):
    dev = pty_device(feetech_decode)
    async with Agent(robot(tmp_path, dev.port)) as agent:
        dev.wait_frames(1)
        peer = await connect(agent)
        await peer.send(ev("response.created", response={"id": "resp_1", "status": "in_progress", "output": []}),
                        speech_started(),
                        function_call_done("resp_1", "late_1", "motion", {"motion_tag": "sway"}))
        item = function_call_done("resp_1", "late_2", "motion", {"motion_tag": "sway"})["item"]
        await peer.send(response_done("resp_1", "cancelled", output=[item]))
        await settle(agent)
        assert (await stored_call(agent, "late_1"))["status"] == "dropped"
        assert (await stored_call(agent, "late_2"))["status"] == "dropped"
        await asyncio.sleep(0.3)
        assert len(dev.frames) == 1  # only the home frame from start: nothing moved
