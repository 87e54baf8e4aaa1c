"""The robot of the fifth trace round (``test_traces_round5*.py``): an LX-16A bus servo
(``head``, id 3) on a pseudo-terminal, whose frames carry the move time, and the library its
calls name; readers of what the bus was sent.
"""

from __future__ import annotations

from helpers import Outputs, agent_config, wait_for

from ticos_agent import Agent

NOD = [[0.4, 24], [0.8, -24], [1.2, 12]]  # three 0.4 s keyframes: frames at 0, 0.4, 0.8 s
MOTIONS = {"nod": {"head": NOD}, "look": {"head": [[0.2, -36]]}, "flick": {"head": [[0.1, 48]]}}
EMOTIONS = {"glad": {"color": "#FFFFFF"}, "neutral": {"brightness": 0.1}}


def raw(deg: float) -> int:
    """LX-16A position: 500 at 0 degrees, 1000 steps over 240 degrees."""
    return round(500 + deg * 1000 / 240)


def lx(frame: bytes) -> tuple[int, int, int]:
    """(servo id, position, move time in ms) of a SERVO_MOVE_TIME_WRITE frame."""
    assert frame[4] == 1, frame
    return frame[2], int.from_bytes(frame[5:7], "little"), int.from_bytes(frame[7:9], "little")


HOME = (3, raw(0), 500)  # the safe state: home in safe_seconds (0.5 s)


def nod(speed: float = 1.0) -> list[tuple[int, int, int]]:
    ms = round(400 / speed)
    return [(3, raw(24), ms), (3, raw(-24), ms), (3, raw(12), ms)]


LOOK, FLICK = (3, raw(-36), 200), (3, raw(48), 100)


def config(tmp_path, port: str | None = None, **actuators) -> dict:
    cfg = agent_config(tmp_path, replies={"function_call_output": True})
    if port is not None:
        actuators["head"] = {"driver": "lx16a", "port": port, "ids": [3], "min": -60, "max": 60}
    cfg.update({"robot": {"default_library": False}, "actuators": actuators,
                "motions": {t: m for t, m in MOTIONS.items() if set(m) <= set(actuators)}, "emotions": EMOTIONS})
    return cfg


async def robot(cfg: dict, connect, dev=None):
    agent = Agent(cfg)
    await agent.start()
    if dev is not None:
        await wait_for(lambda: len(dev.frames) == 1)  # the safe state at start
        assert [lx(f) for _, f in dev.frames] == [HOME]
    peer = await connect(agent)
    return agent, peer, Outputs(peer)


def sent(dev, since: int = 1) -> list[tuple[int, int, int]]:
    return [lx(f) for _, f in dev.frames[since:]]
