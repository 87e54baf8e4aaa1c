"""The tools the voice agent can use: `ticos-agent tools`, GET /v1/tools, tools.announce, and
the allowed tags sent back for a tag the library does not know.

jsonschema is not installed, so `valid` below checks the few JSON Schema keywords the tools
use, and refuses a schema with any other (it could not skip one unnoticed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import aiohttp
import pytest
from helpers import agent_config, settle, wait_for
from traces import function_call_done, session_created

from ticos_agent import Agent
from ticos_agent.arguments import emotion_args, motion_args
from ticos_agent.config import from_dict, load
from ticos_agent.errors import BadArguments
from ticos_agent.tools import function_tool, robot_tools, session_update

ARM_ONLY_TOML = """\
[actuators.arm]
driver = "maestro"
port = "loop://"
channels = [0]
min = -10
max = 90
home = 0

[motions.salute]
description = "a salute: at your service"
arm = [[0.5, 80], [1.5, 0]]

[emotions.proud]
description = "proud of it"
pose = { arm = 30 }

[storage]
enabled = false
"""

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "description": "a city name"}},
           "required": ["city"]}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ticos_agent.cli", *args], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ))


# --- a checker for the JSON Schema the tools use ---------------------------------------------

KEYWORDS = {"type", "enum", "minimum", "maximum", "default", "description", "properties", "required"}
TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    # JSON Schema: an integer is a number with no fraction (2.0 is one)
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
}


def valid(schema: dict, value) -> bool:
    assert set(schema) <= KEYWORDS, f"keywords this checker does not know: {set(schema) - KEYWORDS}"
    if not TYPES[schema["type"]](value):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "minimum" in schema and value < schema["minimum"]:
        return False
    if "maximum" in schema and value > schema["maximum"]:
        return False
    if schema["type"] == "object":
        if any(key not in value for key in schema.get("required", [])):
            return False
        return all(valid(schema["properties"][k], v) for k, v in value.items() if k in schema["properties"])
    return True


def test_the_checker_itself():
    s = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 3}}, "required": ["n"]}
    assert valid(s, {"n": 2}) and valid(s, {"n": 2.0}) and valid(s, {"n": 3, "other": "x"})
    assert not valid(s, {}) and not valid(s, {"n": 4}) and not valid(s, {"n": 1.5}) and not valid(s, {"n": True})
    assert not valid(s, [])
    with pytest.raises(AssertionError):
        valid({"type": "string", "pattern": "x"}, "x")


# --- the robot's tools -------------------------------------------------------------------------


def _tools(out: str) -> dict[str, dict]:
    doc = json.loads(out)
    assert set(doc) == {"tools"}
    tools = {t["name"]: t for t in doc["tools"]}
    for t in tools.values():
        assert set(t) == {"type", "name", "description", "parameters"} and t["type"] == "function"
        assert t["description"] and t["parameters"]["type"] == "object"
    return tools


def test_cli_prints_the_simulated_robots_tools_with_the_configured_tags():
    out = cli("tools")
    assert out.returncode == 0, out.stderr
    tools = _tools(out.stdout)
    # storage is on by default: the memory tools follow the robot's (tests/test_memory_tools.py)
    assert list(tools) == ["motion", "emotion", "motion_and_emotion", "remember", "recall", "forget"]
    robot = load().actuators
    motion, emotion, both = (tools[n]["parameters"] for n in ("motion", "emotion", "motion_and_emotion"))
    assert motion["properties"]["motion_tag"]["enum"] == sorted(robot.motions)
    assert emotion["properties"]["emotion_tag"]["enum"] == sorted(robot.emotions)
    assert both["properties"]["motion_tag"]["enum"] == sorted(robot.motions)
    assert both["properties"]["emotion_tag"]["enum"] == sorted(robot.emotions)
    assert motion["required"] == ["motion_tag"] and emotion["required"] == ["emotion_tag"]
    assert both["required"] == ["motion_tag", "emotion_tag"]
    # the library's descriptions go with the tags
    assert "wave: hello or goodbye" in motion["properties"]["motion_tag"]["description"]
    assert "happy: pleased, amused" in emotion["properties"]["emotion_tag"]["description"]
    assert out.stderr == ""


def test_cli_offers_only_tags_that_reach_an_actuator_and_says_what_it_left_out(tmp_path):
    cfg = tmp_path / "arm.toml"
    cfg.write_text(ARM_ONLY_TOML)
    out = cli("tools", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    tools = _tools(out.stdout)
    robot = load(cfg).actuators
    motion_tags = tools["motion"]["parameters"]["properties"]["motion_tag"]
    # nod and shake move only the head, which this robot has not: the effective library leaves them out
    assert motion_tags["enum"] == sorted(robot.motions) == ["bow", "dance", "salute", "wave"]
    assert "salute: a salute: at your service" in motion_tags["description"]
    # the shipped emotions pose the head and there is no light: only `proud` (a pose of the arm) shows
    assert tools["emotion"]["parameters"]["properties"]["emotion_tag"]["enum"] == ["proud"]
    assert "motion(s) nod, shake of the library not offered" in out.stderr
    assert "emotion(s) angry, happy, neutral, sad, surprised, thinking not offered" in out.stderr
    # a broken config is refused as by every command
    bad = tmp_path / "bad.toml"
    bad.write_text('[motions.x]\ndescription = "two\\nlines"\nhead = [[1, [0, 0]]]\n')
    out = cli("tools", "--config", str(bad))
    assert out.returncode == 2 and "motions.x.description" in out.stderr


def test_a_robot_whose_emotions_reach_nothing_gets_no_emotion_tools():
    # an MCU that plays `spin` and moves the mouth, with no emotion line: no emotion reaches anything
    cfg = from_dict({"actuators": {"body": {"driver": "serial-line", "port": "loop://", "motions": {"spin": 3.0},
                                            "emotion": ""}},
                     "robot": {"mouth": "body"}, "motions": {"spin": {"description": "turn around once"}}})
    tools, notes = robot_tools(cfg.actuators)
    assert [t["name"] for t in tools] == ["motion"]
    assert "spin: turn around once" in tools[0]["parameters"]["properties"]["motion_tag"]["description"]
    assert any("emotion tool is not offered" in n for n in notes)
    assert robot_tools(None) == ([], ["no robot is configured: motion and emotion tools are not offered"])
    # with an emotion line, the same MCU shows every emotion (and the mouth is still its own)
    cfg = from_dict({"actuators": {"body": {"driver": "serial-line", "port": "loop://", "motions": {"spin": 3.0},
                                            "emotion": "EMOTION {tag}"}}, "robot": {"mouth": "body"}})
    tools, notes = robot_tools(cfg.actuators)
    assert [t["name"] for t in tools] == ["motion", "emotion", "motion_and_emotion"]
    assert tools[1]["parameters"]["properties"]["emotion_tag"]["enum"] == sorted(cfg.actuators.emotions)


def test_descriptions_load_dump_and_load_back():
    from ticos_agent.config import ConfigErrors

    doc = {"actuators": {"body": {"driver": "serial-line", "port": "loop://", "motions": {"spin": 3.0}},
                         "face": {"driver": "gpio-rgbled", "red": 17, "green": 27, "blue": 22, "pin_factory": "mock"}},
           "motions": {"spin": {"description": "turn around once"}},
           "emotions": {"calm": {"description": "  at peace  ", "color": "#00FF00"}, "sad": {"color": "#0000FF"}}}
    robot = from_dict(doc).actuators
    assert robot.motions["spin"].description == "turn around once" and robot.motions["spin"].played == {"body": 3.0}
    assert robot.emotions["calm"].description == "at peace"
    assert robot.emotions["sad"].description is None  # [emotions.sad] replaces the shipped entry, description too
    assert robot.emotions["happy"].description == "pleased, amused, glad to help"
    again = from_dict(from_dict(doc).as_dict(mask_secrets=False)).actuators
    assert {t: m.description for t, m in again.motions.items()} == {t: m.description for t, m in robot.motions.items()}
    assert {t: e.description for t, e in again.emotions.items()} == \
        {t: e.description for t, e in robot.emotions.items()}
    # a description alone is for a tag a device plays itself: a shipped motion is replaced, not annotated
    with pytest.raises(ConfigErrors) as info:
        from_dict({"motions": {"wave": {"description": "hello"}}})
    assert info.value.key == "motions.wave" and "a description alone" in str(info.value)
    with pytest.raises(ConfigErrors) as info:
        from_dict({"emotions": {"happy": {"description": "x" * 201}}})
    assert info.value.key == "emotions.happy.description"


# what arguments.py is given, per argument: values it takes as they are, values it clamps, values it refuses
# (null is left out: arguments.py reads it as "not given", the schema does not offer it)
CASES = {
    "speed": [0.1, 0.5, 1, 5, 5.0, 0.05, 9, 0, -1, "fast", True, [1]],
    "repeat": [1, 2, 2.0, 20, 21, 500, 0, -3, 1.5, "2", True],
    "wait": [True, False, "yes", 1, 0],
    "intensity": [0, 0.3, 1, 1.0, -0.5, 1.5, "high", False],
    "duration": [0, 2.5, 300, 301, -1, "long", True],
    "fade_in": [0, 0.5, 300, 1000, -0.1, "slow", True],
}
PARSERS = {"motion": [motion_args], "emotion": [emotion_args], "motion_and_emotion": [motion_args, emotion_args]}


def _events_take(name: str, args: dict) -> tuple[bool, list[str]]:
    notes: list[str] = []
    try:
        for parse in PARSERS[name]:
            notes += parse(args).notes
    except BadArguments:
        return False, notes
    return True, notes


def test_each_schema_takes_exactly_what_events_takes_unclamped():
    tools = {t["name"]: t["parameters"] for t in robot_tools(load().actuators)[0]}
    tags = {"motion_tag": "nod", "emotion_tag": "happy"}
    checked = 0
    for name, schema in tools.items():
        base = {k: v for k, v in tags.items() if k in schema["properties"]}
        assert valid(schema, base) and _events_take(name, base) == (True, [])
        for arg, values in CASES.items():
            if arg not in schema["properties"]:
                continue
            for value in values:
                args = {**base, arg: value}
                taken, notes = _events_take(name, args)
                assert valid(schema, args) == (taken and not notes), (name, arg, value, taken, notes)
                checked += 1
        for tag_key in base:  # the tag is required, a string, and one of the library's
            assert not valid(schema, {k: v for k, v in base.items() if k != tag_key})
            assert not _events_take(name, {k: v for k, v in base.items() if k != tag_key})[0]
            assert not valid(schema, {**base, tag_key: 5}) and not _events_take(name, {**base, tag_key: 5})[0]
            assert not valid(schema, {**base, tag_key: "backflip"})  # the actuators answer it: see below
    assert checked >= 100
    # the defaults are arguments.py's
    props = tools["motion_and_emotion"]["properties"]
    parsed = {**motion_args({"motion_tag": "nod"}).as_dict(), **emotion_args({"emotion_tag": "happy"}).as_dict()}
    for arg in ("speed", "repeat", "wait", "intensity", "fade_in"):
        assert props[arg]["default"] == parsed[arg], arg
    assert "default" not in props["duration"] and parsed["duration"] is None


# --- the integrator's functions ------------------------------------------------------------------


def test_function_tool_checks_the_schema_and_names_the_problem():
    tool = function_tool("get_weather", WEATHER, "the weather in a city")
    assert tool == {"type": "function", "name": "get_weather", "description": "the weather in a city",
                    "parameters": WEATHER}
    assert function_tool("ping")["parameters"] == {"type": "object", "properties": {}}
    for name, schema, words in [
        ("get_weather", ["city"], "must be a dict"),
        ("get_weather", {"type": "array"}, "\"type\": \"object\""),
        ("get_weather", {"properties": {}}, "\"type\": \"object\""),
        ("get_weather", {"type": "object", "properties": []}, "\"properties\" must be a dict"),
        ("get_weather", {"type": "object", "required": "city"}, "\"required\" must be a list"),
        ("get_weather", {"type": "object", "properties": {}, "required": ["city"]}, "'city'"),
        ("get_weather", {"type": "object", "default": float("nan")}, "not plain JSON"),
        ("get_weather", {"type": "object", "default": object()}, "not plain JSON"),
        ("*", WEATHER, "'*'"),
        ("motion", WEATHER, "robot's own tools"),
        ("get weather", WEATHER, "1 to 64 letters"),
    ]:
        with pytest.raises(ValueError) as info:
            function_tool(name, schema)
        assert words in str(info.value), (name, schema, str(info.value))
    with pytest.raises(ValueError, match="description must be a string"):
        function_tool("x", WEATHER, description=42)  # type: ignore[arg-type]


async def test_get_v1_tools_serves_the_robots_and_the_integrators_tools(tmp_path, http):
    agent = Agent(agent_config(tmp_path))

    @agent.on_function("get_weather", description="the weather in a city", schema=WEATHER)
    def weather(call):
        return {"sky": "clear"}

    unsubscribe = agent.on_function("get_battery", lambda call: {"percent": 80}, description="battery level")
    agent.on_function("untold", lambda call: None)  # no schema, no description: handled, not offered
    with pytest.raises(ValueError, match="get_time: schema must have \"type\": \"object\""):
        agent.on_function("get_time", lambda call: None, schema={"type": "string"})
    assert not agent.dispatcher.has("function:get_time")  # nothing was registered
    async with agent:
        url = f"http://127.0.0.1:{agent.port}/v1/tools"
        async with http.get(url) as resp:
            assert resp.status == 200
            body = await resp.json()
        names = [t["name"] for t in body["tools"]]
        assert names == ["motion", "emotion", "motion_and_emotion", "remember", "recall", "forget", "get_weather",
                         "get_battery"]
        assert body["tools"][6]["parameters"] == WEATHER
        assert body["tools"][7]["parameters"] == {"type": "object", "properties": {}}
        assert body["tools"][:3] == robot_tools(agent.config.actuators)[0]
        assert body == {"tools": agent.toolbox.tools()}
        unsubscribe()  # no handler for get_battery any more: it is not offered
        async with http.get(url) as resp:
            assert [t["name"] for t in (await resp.json())["tools"]][6:] == ["get_weather"]
        # behind the same guard as every route
        async with http.get(url, headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
        async with http.get(url.replace("127.0.0.1", "localhost"), headers={"Host": "rebind.example"}) as resp:
            assert resp.status == 421


async def test_get_v1_tools_needs_the_token_when_one_is_set(tmp_path, http):
    async with Agent(agent_config(tmp_path, server={"token": "s3cret"})) as agent:
        url = f"http://127.0.0.1:{agent.port}/v1/tools"
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.get(url, headers={"Authorization": "Bearer s3cret"}) as resp:
            assert resp.status == 200 and (await resp.json())["tools"]


# --- tools.announce ------------------------------------------------------------------------------


def _ga_session_created(session_id: str) -> dict:
    return {"type": "session.created", "event_id": "event_ga",
            "session": {"type": "realtime", "object": "realtime.session", "id": session_id}}


async def test_announce_sends_every_tool_on_connect_and_after_session_created(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, tools={"announce": True}))
    agent.on_function("get_weather", lambda call: None, description="the weather in a city", schema=WEATHER)
    async with agent:
        peer = await connect(agent)
        first = await peer.receive_json()
        assert first["type"] == "session.update" and first["event_id"].startswith("event_ticos_")
        assert first["session"] == {"tools": agent.toolbox.tools()}  # beta shape: only the tools
        assert [t["name"] for t in first["session"]["tools"]] == ["motion", "emotion", "motion_and_emotion",
                                                                  "remember", "recall", "forget", "get_weather"]
        # a GA session: the same tools, with the session type the GA API requires
        await peer.send(_ga_session_created("sess_ga"))
        again = await peer.receive_json()
        assert again["type"] == "session.update"
        assert again["session"] == {"type": "realtime", "tools": first["session"]["tools"]}
        # auto: a voice agent that connects next gets the shape the last session.created showed
        other = await connect(agent)
        assert (await other.receive_json())["session"]["type"] == "realtime"
        # a beta session.created: the beta shape again
        await peer.send(session_created("sess_beta"))
        assert (await peer.receive_json())["session"] == {"tools": first["session"]["tools"]}
        # a transcription session gets no tools; other events are not answered
        await peer.send({"type": "session.created", "session": {"type": "transcription", "id": "t1"}})
        await peer.no_reply(0.3)
        await other.no_reply(0.1)


async def test_announce_ga_shape_from_the_first_frame(tmp_path, connect):
    async with Agent(agent_config(tmp_path, tools={"announce": True, "api": "ga"})) as agent:
        peer = await connect(agent)
        update = await peer.receive_json()
        assert update["session"]["type"] == "realtime" and len(update["session"]["tools"]) == 6
        await peer.send(session_created("sess_beta"))  # a fixed api is kept
        assert (await peer.receive_json())["session"]["type"] == "realtime"


async def test_no_announce_by_default(agent, connect):
    assert agent.config.tools.announce is False
    peer = await connect(agent)
    await peer.no_reply(0.3)
    await peer.send(session_created("sess_1"))
    await peer.no_reply(0.3)


def test_session_update_shapes():
    tools = [function_tool("ping")]
    assert session_update(tools) == {"type": "session.update", "session": {"tools": tools}}
    assert session_update(tools, "ga", "e1") == {"type": "session.update", "event_id": "e1",
                                                 "session": {"type": "realtime", "tools": tools}}
    with pytest.raises(ValueError, match="api"):
        session_update(tools, "v2")


# --- a tag the library does not know -------------------------------------------------------------


async def test_an_unknown_tag_is_answered_with_the_allowed_tags(agent, connect):
    assert agent.config.replies.function_call_output is False  # sent back anyway
    robot = agent.config.actuators
    peer = await connect(agent)
    await peer.send(function_call_done("resp_1", "call_1", "motion", {"motion_tag": "backflip"}))
    reply = await peer.receive_json(timeout=5)
    assert reply["type"] == "conversation.item.create" and reply["item"]["type"] == "function_call_output"
    assert reply["item"]["call_id"] == "call_1"
    out = json.loads(reply["item"]["output"])
    assert out["status"] == "failed" and "unknown motion tag 'backflip'" in out["reason"]
    assert out["allowed"] == {"motion_tag": sorted(robot.motions)}

    await peer.send(function_call_done("resp_2", "call_2", "motion_and_emotion",
                                       {"motion_tag": "nod", "emotion_tag": "ecstatic"}))
    out = json.loads((await peer.receive_json(timeout=5))["item"]["output"])
    assert out["status"] == "failed" and out["allowed"] == {"emotion_tag": sorted(robot.emotions)}

    await peer.send(function_call_done("resp_3", "call_3", "motion_and_emotion",
                                       {"motion_tag": "moonwalk", "emotion_tag": "ecstatic"}))
    out = json.loads((await peer.receive_json(timeout=5))["item"]["output"])
    assert out["allowed"] == {"motion_tag": sorted(robot.motions), "emotion_tag": sorted(robot.emotions)}

    # a known tag is not answered (replies.function_call_output is off)
    await peer.send(function_call_done("resp_4", "call_4", "emotion", {"emotion_tag": "happy"}))
    await peer.no_reply(0.5)


async def test_the_tools_and_the_allowed_tags_agree(agent, connect):
    """What the model is offered is what it is told to pick from when it strays."""
    offered = {t["name"]: t for t in agent.toolbox.tools()}
    peer = await connect(agent)
    await peer.send(function_call_done("resp_1", "call_1", "motion", {"motion_tag": "backflip"}))
    out = json.loads((await peer.receive_json(timeout=5))["item"]["output"])
    assert out["allowed"]["motion_tag"] == offered["motion"]["parameters"]["properties"]["motion_tag"]["enum"]


async def test_session_update_reaches_a_real_client_before_its_first_frame(tmp_path):
    """The hook runs before the first frame is read: a client that only listens gets it."""
    async with Agent(agent_config(tmp_path, tools={"announce": True})) as agent, aiohttp.ClientSession() as http, \
            http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime") as ws:
        msg = await ws.receive(timeout=2)
        assert json.loads(msg.data)["type"] == "session.update"


async def test_peer_opened_reaches_each_greeter_once_and_a_broken_one_costs_nothing(agent, connect, caplog):
    opened = []

    class Greeter:
        def __init__(self, broken: bool):
            self.broken = broken

        def routes(self):
            return {}

        def peer_opened(self, peer):
            if self.broken:
                raise RuntimeError("bug")
            opened.append(peer.name)

    agent.intake.add(Greeter(True), name="broken")
    remove = agent.intake.add(Greeter(False))
    await connect(agent)
    await wait_for(lambda: opened)
    assert len(opened) == 1 and opened[0].startswith("ws#")
    assert "failed greeting" in caplog.text
    remove()
    await connect(agent)
    await settle(agent)
    assert len(opened) == 1


def test_docs_show_the_tools_as_they_are():
    """docs/tools.md shows the simulated robot's three tools: exactly what `ticos-agent tools` prints."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "tools.md").read_text()
    shown = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)
             if block.lstrip().startswith('{\n  "type": "function"')]
    assert shown == robot_tools(load().actuators)[0]
