"""An emotion robot: an RGB LED face on GPIO 17/27/22 and a PWM LED mouth on GPIO 18.

    python examples/rgb_emotion_robot.py              # simulated pins (gpiozero MockFactory)
    python examples/rgb_emotion_robot.py --hardware   # real pins (on the Pi; lgpio on a Pi 5)

Wiring: common-cathode RGB LED, each leg through 220-330 ohm to GPIO 17 (red), 27 (green),
22 (blue), cathode to GND; an LED + 330 ohm from GPIO 18 to GND for the mouth.
"""

from __future__ import annotations

import argparse
import asyncio
import math

from ticos_agent import Agent
from ticos_agent.events import EmotionArgs


def config(hardware: bool) -> dict:
    factory = "default" if hardware else "mock"
    return {
        "server": {"port": 0},
        "storage": {"enabled": False},
        "audio": {"enabled": False},
        "robot": {"mouth": "mouth"},
        "actuators": {
            "face": {"driver": "gpio-rgbled", "red": 17, "green": 27, "blue": 22, "pin_factory": factory},
            "mouth": {"driver": "gpio-pwmled", "pin": 18, "pin_factory": factory},
        },
        "emotions": {"love": {"color": "#FF1493", "pattern": "pulse", "period": 1.2}},  # adds a tag
    }


async def main(hardware: bool) -> None:
    async with Agent(config(hardware)) as agent:
        robot = agent.actuators
        face = robot.drivers["face"].device
        for tag in robot.known_emotions():
            call = asyncio.create_task(robot.emotion(EmotionArgs(tag, intensity=0.8, fade_in=0.3, duration=0.7)))
            await asyncio.sleep(0.35)  # after the fade-in
            shown = tuple(round(c, 2) for c in face.color)
            status = (await call).status
            await asyncio.sleep(0.01)  # the LED is set from gpiozero's thread
            print(f"{tag:<10} {shown} -> {status}, back to neutral {tuple(round(c, 2) for c in face.color)}")
        for i in range(50):  # a second of "speech": the mouth follows the loudness
            robot.mouth_level(abs(math.sin(i / 4)))
            await asyncio.sleep(0.02)
        print("health:", robot.health())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="RGB LED emotion robot")
    ap.add_argument("--hardware", action="store_true", help="drive the real GPIO pins")
    asyncio.run(main(ap.parse_args().hardware))
