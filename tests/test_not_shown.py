"""An emotion that reaches nothing is not "done": it says not_shown, in the outcome, the log and
/health; the shipped serial example really sends its emotions to the MCU (issue 10)."""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path

from devices import PtyDevice, line_decode
from helpers import agent_config, stored_call
from traces import function_call_done

from ticos_agent import Agent

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "serial_robot.toml"


async def test_the_serial_example_sends_its_emotions_to_the_mcu(tmp_path, connect):
    dev = PtyDevice(line_decode)
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["actuators"]["body"]["port"] = dev.port
    doc["server"] = {"port": 0}
    agent = Agent(doc)
    await agent.start()
    try:
        peer = await connect(agent)
        await peer.send(function_call_done("r1", "c1", "emotion", {"emotion_tag": "happy", "intensity": 0.5}))
        frames = await asyncio.to_thread(dev.wait_frames, 3)
        assert "EMOTION happy 0.5 smile" in frames, frames
    finally:
        await agent.stop()
        dev.close()


async def test_an_emotion_no_actuator_can_show_is_not_shown(tmp_path, connect, caplog):
    caplog.set_level(logging.WARNING, logger="ticos_agent")
    robot = {"actuators": {"mouth": {"driver": "mock", "kind": "light"}}, "robot": {"mouth": "mouth"}}
    agent = Agent(agent_config(tmp_path, **robot))
    await agent.start()
    try:
        assert "emotions no actuator can show" in caplog.text and "happy" in caplog.text
        peer = await connect(agent)
        await peer.send(function_call_done("r1", "c1", "emotion", {"emotion_tag": "happy"}))
        row = await stored_call(agent, "c1")
        assert row["status"] == "not_shown" and "reaches no actuator" in row["result"]
        h = agent.health()["actuators"]
        assert h["not_shown"] == 1 and "happy" in h["unshown_emotions"]
        assert "motions no actuator can play" in caplog.text and "wave" in h["unplayable_motions"]
    finally:
        await agent.stop()
