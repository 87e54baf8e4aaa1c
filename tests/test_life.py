"""A robot that looks alive (issue 10): turn states and their looks, idle life, a lasting mood,
noisy actuators still while the user speaks. Through the real socket, reading what the
simulated actuators were told and when."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from helpers import settle, wait_for
from traces import ev, function_call_done, response_done, speech_started

from ticos_agent import Agent
from ticos_agent.life.mood import Mood

LISTENING_BLUE = "#0000FF"


def robot(**life) -> dict:
    return {
        "actuators": {"face": {"driver": "mock", "kind": "light"},
                      "head": {"driver": "mock", "kind": "position", "channels": 2, "noisy": True}},
        "robot": {"default_library": True},
        "motions": {"breathe": {"head": [[0.3, [0, 3]], [0.6, [0, 0]]]},
                    "look": {"head": [[0.5, [20, 0]], [1.0, [20, 0]], [1.5, [0, 0]]]}},
        "emotions": {"attentive": {"color": LISTENING_BLUE}},
        "states": {"listening": {"emotion": "attentive", "actuators": ["face"], "hold": 0.0},
                   "thinking": {"emotion": "thinking", "actuators": ["face"], "hold": 0.0}},
        "life": {"idle_motions": ["breathe"], "idle_every": [0.2, 0.3], **life},
    }


@pytest.fixture
def alive(start_agent):
    return lambda **life: start_agent(**robot(**life))


def history(agent: Agent, name: str) -> list[tuple[float, str, tuple]]:
    return list(agent.actuators.drivers[name].history)  # the mock driver's record of what it was told


def stopped() -> dict:
    return ev("input_audio_buffer.speech_stopped", audio_end_ms=900, item_id="u1")


async def test_states_follow_a_voice_turn_and_reach_handlers_health_and_the_event_log(alive, connect):
    agent = await alive(sleep_after=0)
    seen: list[tuple[str, str]] = []
    agent.on_state(lambda state, previous: seen.append((previous, state)))
    peer = await connect(agent)
    await peer.send(speech_started("u1"), stopped(),
                    ev("response.created", response={"id": "r1", "status": "in_progress", "output": []}),
                    ev("response.audio_transcript.delta", response_id="r1", item_id="a1", delta="Hi"),
                    response_done("r1"))
    await wait_for(lambda: len(seen) == 4)
    assert seen == [("idle", "listening"), ("listening", "thinking"), ("thinking", "speaking"), ("speaking", "idle")]
    assert agent.health()["robot"]["state"] == "idle" and agent.health()["robot"]["changes"] == 4
    await settle(agent)
    types = [e["type"] for e in await agent.store.events(limit=50)]
    assert [t for t in types if t.startswith("robot.state")] == [
        "robot.state.idle", "robot.state.speaking", "robot.state.thinking", "robot.state.listening"]  # newest first


async def test_the_listening_look_shows_at_once_and_the_users_speech_stops_idle_life(alive, connect):
    agent = await alive(sleep_after=0)
    await wait_for(lambda: any(op == "move" for _, op, _ in history(agent, "head")), timeout=3)  # idle life runs
    peer = await connect(agent)
    sent = time.monotonic()
    await peer.send(speech_started("u1"))
    await wait_for(lambda: agent.health()["robot"]["state"] == "listening")
    lights = [(t, args) for t, op, args in history(agent, "face") if op == "light" and t >= sent]
    assert lights and lights[0][1][0] == (0.0, 0.0, 1.0)  # the listening blue, before anything else
    await asyncio.sleep(1.0)  # idle motions would come every 0.2-0.3 s
    moves = [t for t, op, _ in history(agent, "head") if op == "move" and t > lights[0][0] + 0.05]
    assert moves == []  # no idle motion while the user speaks, and the one running was cut
    await peer.send(stopped(), ev("response.created", response={"id": "r1", "status": "in_progress", "output": []}),
                    ev("response.audio_transcript.delta", response_id="r1", item_id="a1", delta="Hm"))
    await wait_for(lambda: agent.health()["robot"]["state"] == "speaking")
    speaking_from = time.monotonic()
    await asyncio.sleep(0.8)
    assert [t for t, op, _ in history(agent, "head") if op == "move" and t > speaking_from] == []  # nor while speaking
    await peer.send(response_done("r1"))
    await wait_for(lambda: any(op == "move" and t > speaking_from for t, op, _ in history(agent, "head")), timeout=3)


async def test_a_call_preempts_idle_motion_at_once(alive, connect):
    agent = await alive(sleep_after=0, idle_every=[0.05, 0.06])
    await wait_for(lambda: any(op == "move" for _, op, _ in history(agent, "head")), timeout=3)
    peer = await connect(agent)
    await peer.send(function_call_done("r1", "c1", "motion", {"motion_tag": "look"}))
    await wait_for(lambda: any(op == "move" and args[0] == [20.0, 0.0] for _, op, args in history(agent, "head")))
    first_look = next(t for t, op, args in history(agent, "head") if op == "move" and args[0] == [20.0, 0.0])
    # while the call's motion runs (1.5 s), no idle "breathe" target reaches the head
    await asyncio.sleep(1.2)
    during = [args[0] for t, op, args in history(agent, "head") if op == "move" and first_look < t < first_look + 1.2]
    assert all(target[0] in (20.0, 0.0) and target[1] == 0.0 for target in during), during


async def test_noisy_actuators_are_held_still_while_the_user_speaks(alive, connect):
    agent = await alive(sleep_after=0, idle_motions=[])
    peer = await connect(agent)
    await peer.send(function_call_done("r1", "c1", "motion", {"motion_tag": "look"}))
    await wait_for(lambda: any(op == "move" for _, op, _ in history(agent, "head")))
    await peer.send(speech_started("u9"))
    await wait_for(lambda: agent.health()["robot"]["state"] == "listening")
    held_at = time.monotonic()
    assert agent.health()["robot"]["held"] == ["head"]
    await asyncio.sleep(0.8)
    assert [t for t, op, _ in history(agent, "head") if op == "move" and t > held_at + 0.01] == []
    await peer.send(stopped())
    released = time.monotonic()
    await wait_for(lambda: [t for t, op, _ in history(agent, "head") if op == "move" and t > released], timeout=3)
    await settle(agent)
    call = next(c for c in await agent.store.calls(limit=5) if c["call_id"] == "c1")
    assert call["status"] in ("received", "done")  # held, not dropped: it goes on where it stopped


def test_the_mood_halves_every_half_life_and_survives_a_restart(tmp_path):
    path = tmp_path / "mood.json"
    mood = Mood(half_life=100.0, path=path)
    mood.feel("happy", 0.8, now=1000.0)
    assert mood.level(now=1000.0) == pytest.approx(0.8)
    assert mood.level(now=1100.0) == pytest.approx(0.4, rel=0.05)
    assert mood.level(now=1300.0) == pytest.approx(0.1, rel=0.05)
    again = Mood(half_life=100.0, path=path)
    again.load()
    assert again.tag == "happy" and again.level(now=1100.0) == pytest.approx(0.4, rel=0.05)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("{not json")
    broken = Mood(half_life=100.0, path=path)
    broken.load()
    assert broken.tag is None and broken.level() == 0.0


async def test_an_emotion_call_sets_the_mood_that_colours_the_idle_look(alive, connect, tmp_path):
    agent = await alive(sleep_after=0, idle_motions=["breathe"], mood_half_life=3600.0)
    peer = await connect(agent)
    await peer.send(function_call_done("r1", "c1", "emotion", {"emotion_tag": "sad", "intensity": 0.8}))
    await wait_for(lambda: agent.health()["robot"]["mood"]["tag"] == "sad")
    assert agent.health()["robot"]["mood"]["level"] == pytest.approx(0.8, abs=0.01)
    called = time.monotonic()
    # the next idle round shows the mood: sad's blue at the mood's level
    sad = (30 / 255, 60 / 255, 1.0)
    await wait_for(lambda: [a for t, op, a in history(agent, "face") if op == "light" and t > called + 0.1
                            and a[0] == pytest.approx(sad, abs=0.01)], timeout=3)
    from pathlib import Path

    assert json.loads((Path(agent.config.storage.dir) / "mood.json").read_text())["tag"] == "sad"


async def test_sleeping_after_idle_time_slows_idle_life(alive, connect):
    agent = await alive(sleep_after=0.3, idle_every=[0.2, 0.2], sleeping="stop")
    await wait_for(lambda: agent.health()["robot"]["state"] == "sleeping", timeout=3)
    asleep = time.monotonic()
    await asyncio.sleep(0.8)
    assert [t for t, op, _ in history(agent, "head") if op == "move" and t > asleep + 0.7] == []  # stopped
    peer = await connect(agent)
    await peer.send(speech_started("u1"))
    await wait_for(lambda: agent.health()["robot"]["state"] == "listening")


def test_the_readmes_life_example_is_a_config_that_loads():
    import tomllib
    from pathlib import Path

    from ticos_agent.config import from_dict

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## A robot that looks alive"):]
    start = section.index("```toml") + len("```toml")
    doc = tomllib.loads(section[start:section.index("```", start)])
    doc["actuators"]["head"]["port"] = "loop://"  # the example names a real adapter
    doc["actuators"]["face"]["pin_factory"] = "mock"
    config = from_dict(doc)
    assert config.states.look("listening").emotion == "attentive"
    assert config.actuators.actuators["head"].noisy and config.life.idle_motions == ["breathe"]
