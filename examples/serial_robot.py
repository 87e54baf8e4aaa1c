"""A robot on one serial microcontroller, configured without code (serial_robot.toml).

    python examples/serial_robot.py                       # loop:// virtual MCU, waits for the voice agent
    python examples/serial_robot.py --demo                # plays every motion and emotion once
    python examples/serial_robot.py --port /dev/serial/by-id/usb-Arduino...-if00 --demo

With ``--demo`` the agent listens on a free port and the commands go straight to the actuator
system, exactly as a voice agent's ``motion``/``emotion`` calls would.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tomllib
from pathlib import Path

from ticos_agent import Agent
from ticos_agent.events import EmotionArgs, MotionArgs


async def main(port: str | None, demo: bool) -> None:
    doc = tomllib.loads((Path(__file__).with_name("serial_robot.toml")).read_text())
    if port:
        doc["actuators"]["body"]["port"] = port
    if demo:
        doc["server"] = {"port": 0}
    async with Agent(doc) as agent:
        robot = agent.actuators
        print("health:", robot.health())
        if not demo:
            await asyncio.Event().wait()  # serve until Ctrl-C
        for tag in robot.known_motions():
            print(f"motion {tag:<8}", (await robot.motion(MotionArgs(tag, speed=4.0))).status)
        for tag in robot.known_emotions():
            print(f"emotion {tag:<9}", (await robot.emotion(EmotionArgs(tag, intensity=0.8))).status)
        print("unknown:", (await robot.motion(MotionArgs("moonwalk"))).reason)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="ticos-agent robot on one serial MCU")
    ap.add_argument("--port", help="serial port (default: the TOML's, loop://)")
    ap.add_argument("--demo", action="store_true", help="play every tag once and exit")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(main(args.port, args.demo))
    except KeyboardInterrupt:
        pass
