"""The tools the voice agent can use: OpenAI Realtime function definitions, built from the config.

Pure: a config in, JSON-ready dicts out; nothing here touches a socket or the hardware.
``ticos-agent tools`` prints them, ``GET /v1/tools`` serves them and, with
``[tools] announce = true``, :mod:`ticos_agent.announce` sends them to each voice agent that
connects as a ``session.update`` (:func:`session_update`).

The robot's own three tools come from the effective library (:func:`robot_tools`): ``motion``,
``emotion`` and ``motion_and_emotion``, the tags as ``enum`` values with the library's one-line
descriptions, and every other argument with the type, range and default that
:mod:`ticos_agent.events` takes. A value in the schema's range is taken as it is; one outside
it that ``events`` still takes (``speed`` 9, ``intensity`` -1) is clamped there, and every value
``events`` refuses (``speed`` 0, ``repeat`` 1.5, ``wait`` "yes") is outside the schema. The
``motion`` tool of the simulated robot::

    {
      "type": "function",
      "name": "motion",
      "description": "Move the robot's body: play one of its motions ...",
      "parameters": {
        "type": "object",
        "properties": {
          "motion_tag": {"type": "string", "enum": ["bow", "dance", "nod", "shake", "wave"],
                         "description": "Which motion. bow: thanks, respect, an apology; dance: ..."},
          "speed": {"type": "number", "minimum": 0.1, "maximum": 5, "default": 1, "description": "..."},
          "repeat": {"type": "integer", "minimum": 1, "maximum": 20, "default": 1, "description": "..."},
          "wait": {"type": "boolean", "default": true, "description": "..."}
        },
        "required": ["motion_tag"]
      }
    }

A tag that reaches no actuator is not offered (a motion with no tracks that no device plays,
an emotion on a robot with no light, no emotion line and no pose for it), nor is a tool
left with no tag; each one left out is named in the notes :func:`robot_tools` returns.

With storage on, the memory tools follow them (``remember``, ``recall``, ``forget``:
:func:`ticos_agent.memory.tools.memory_tools`); an integrator who registers its own handler
and schema for one of those names offers its own instead.

The integrator's own functions join them when registered with a schema or a description
(``agent.on_function("get_weather", fn, description=..., schema={...})``, checked by
:func:`function_tool`), and are offered while a handler for that name is registered
(:class:`Toolbox`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .arguments import MAX_DURATION, MAX_REPEAT, SPEED_RANGE

if TYPE_CHECKING:  # the actuator modules load only for a robot (TicosClient without hardware never does)
    from .actuators.config import ActuatorsConfig

Tool = dict[str, Any]

#: The robot's own tools: their schemas come from the library, never from an integrator.
ROBOT_TOOLS = ("motion", "emotion", "motion_and_emotion")
#: What the realtime API takes as a function name.
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The ``session.update`` shapes: ``beta`` (no ``session.type``) and ``ga`` (``session.type``
#: ``"realtime"``, which the GA API requires and the beta API does not know).
APIS = ("beta", "ga")

MOTION = ("Move the robot's body: play one of its motions. Use it as you speak, to show what you say "
          "(nod to agree, wave to greet). It runs while you talk; you need not wait for it.")
EMOTION = ("Show a feeling with the robot's face, lights and posture, matching what you say. "
           "It holds until the next emotion, or for `duration` seconds.")
MOTION_AND_EMOTION = "Play a motion and show an emotion together, both starting at once (see motion and emotion)."


def _num(x: float) -> int | float:
    """``5`` rather than ``5.0`` in the JSON."""
    return int(x) if float(x).is_integer() else x


def _tag_text(intro: str, tags: Mapping[str, str | None]) -> str:
    described = [f"{tag}: {text}" for tag, text in tags.items() if text]
    return intro + (" " + "; ".join(described) + "." if described else "")


def motion_properties(tags: Mapping[str, str | None]) -> dict[str, Any]:
    """The ``motion`` arguments as ``arguments.motion_args`` takes them; ``tags``: tag -> description."""
    lo, hi = SPEED_RANGE
    return {
        "motion_tag": {"type": "string", "enum": list(tags), "description": _tag_text("Which motion.", tags)},
        "speed": {"type": "number", "minimum": _num(lo), "maximum": _num(hi), "default": 1,
                  "description": "Playback speed: 1 as designed, 2 twice as fast, 0.5 half as fast."},
        "repeat": {"type": "integer", "minimum": 1, "maximum": MAX_REPEAT, "default": 1,
                   "description": "How many times to play it in a row."},
        "wait": {"type": "boolean", "default": True,
                 "description": "true: start after the motions already playing; false: stop them and start now."},
    }


def emotion_properties(tags: Mapping[str, str | None]) -> dict[str, Any]:
    """The ``emotion`` arguments as ``arguments.emotion_args`` takes them; ``tags``: tag -> description."""
    most = _num(MAX_DURATION)
    return {
        "emotion_tag": {"type": "string", "enum": list(tags), "description": _tag_text("Which emotion.", tags)},
        "intensity": {"type": "number", "minimum": 0, "maximum": 1, "default": 1,
                      "description": "How strongly to show it: 0 barely, 1 fully."},
        "duration": {"type": "number", "minimum": 0, "maximum": most,
                     "description": "Seconds to hold it before going back to neutral; leave it out to hold it "
                                    "until the next emotion."},
        "fade_in": {"type": "number", "minimum": 0, "maximum": most, "default": 0,
                    "description": "Seconds to fade it in."},
    }


def function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> Tool:
    """One realtime function tool."""
    return {"type": "function", "name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}}


def offered_motions(actuators: ActuatorsConfig, notes: list[str] | None = None) -> dict[str, str | None]:
    """Tag -> description of the motions that reach an actuator (tracks, or a device plays it),
    sorted; why any other is left out goes into ``notes``."""
    out: dict[str, str | None] = {}
    for tag, m in sorted(actuators.motions.items()):
        if m.tracks or m.played:
            out[tag] = m.description
        elif notes is not None:
            notes.append(f"motion {tag!r} is not offered: it has no tracks and no actuator plays it")
    if notes is not None and actuators.unplayable:
        notes.append(f"motion(s) {', '.join(actuators.unplayable)} of the library not offered: no actuator of this "
                     "robot can play them")
    return out


def offered_emotions(actuators: ActuatorsConfig, notes: list[str] | None = None) -> dict[str, str | None]:
    """Tag -> description of the emotions that reach an actuator (a light that is not the mouth,
    an MCU's emotion line, or a pose: as the actuators show them), sorted; why any other is left
    out goes into ``notes``."""
    from .actuators.plan import expression_actuators

    shown = bool(expression_actuators(actuators))
    out: dict[str, str | None] = {}
    left: list[str] = []
    for tag, e in sorted(actuators.emotions.items()):
        if shown or e.pose:
            out[tag] = e.description
        else:
            left.append(tag)
    if left and notes is not None:
        notes.append(f"emotion(s) {', '.join(left)} not offered: this robot has no light (but the mouth) and no "
                     "emotion line, and they have no pose on its servos")
    return out


def robot_tools(actuators: ActuatorsConfig | None) -> tuple[list[Tool], list[str]]:
    """The robot's tools for this config, and one note per tag or tool left out."""
    notes: list[str] = []
    if actuators is None:
        return [], ["no robot is configured: motion and emotion tools are not offered"]
    motions = offered_motions(actuators, notes)
    emotions = offered_emotions(actuators, notes)
    tools: list[Tool] = []
    if motions:
        tools.append(function("motion", MOTION, motion_properties(motions), ["motion_tag"]))
    else:
        notes.append("the motion tool is not offered: no motion reaches an actuator")
    if emotions:
        tools.append(function("emotion", EMOTION, emotion_properties(emotions), ["emotion_tag"]))
    else:
        notes.append("the emotion tool is not offered: no emotion reaches an actuator")
    if motions and emotions:
        tools.append(function("motion_and_emotion", MOTION_AND_EMOTION,
                              {**motion_properties(motions), **emotion_properties(emotions)},
                              ["motion_tag", "emotion_tag"]))
    return tools, notes


def function_tool(name: str, schema: Mapping[str, Any] | None = None, description: str | None = None) -> Tool:
    """The tool of an integrator's function; raises ``ValueError`` naming what is wrong.

    ``schema`` is the JSON Schema of its arguments (an object: ``{"type": "object",
    "properties": {...}, "required": [...]}``); none means a function without arguments."""
    if name == "*":
        raise ValueError("a schema or description belongs to one function name, not to '*'")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"function name {name!r}: a tool's name is 1 to 64 letters, digits, '_' or '-'")
    if name in ROBOT_TOOLS:
        raise ValueError(f"{name!r} is one of the robot's own tools: its schema comes from the motion/emotion "
                         "library (ticos-agent tools shows it)")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"{name}: description must be a string, got {type(description).__name__}")
    if schema is None:
        schema = {"type": "object", "properties": {}}
    if not isinstance(schema, Mapping):
        raise ValueError(f"{name}: schema must be a dict (the JSON Schema of the arguments), "
                         f"got {type(schema).__name__}")
    if schema.get("type") != "object":
        raise ValueError(f"{name}: schema must have \"type\": \"object\" (a call's arguments are one JSON object), "
                         f"got {schema.get('type')!r}")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise ValueError(f"{name}: schema \"properties\" must be a dict of argument name -> schema, "
                         f"got {type(properties).__name__}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{name}: schema \"required\" must be a list of argument names, got {required!r}")
    missing = [r for r in required if r not in properties]
    if missing:
        raise ValueError(f"{name}: schema \"required\" names {', '.join(map(repr, missing))}, which "
                         "\"properties\" does not have")
    try:
        parameters = json.loads(json.dumps(schema, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: schema is not plain JSON: {exc}") from None
    return {"type": "function", "name": name, "description": description or "", "parameters": parameters}


def session_update(tools: list[Tool], api: str = "beta", event_id: str | None = None) -> dict[str, Any]:
    """The ``session.update`` that gives the voice agent's session ``tools`` (and changes nothing
    else): ``{"type": "session.update", "session": {"tools": [...]}}``, with ``"type": "realtime"``
    in the session for the GA API, which requires it (the beta API does not know it)."""
    if api not in APIS:
        raise ValueError(f"api must be one of {', '.join(APIS)}, got {api!r}")
    session: dict[str, Any] = {"type": "realtime", "tools": tools} if api == "ga" else {"tools": tools}
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return event


class Toolbox:
    """Every tool the agent offers: the robot's (from the config, once), the memory tools
    (``memory``: storage is on), and the integrator's functions registered with a schema, each
    while a handler for its name is registered (``has_handler("function:<name>")``). A later
    registration of a name replaces its tool; an integrator's tool of a memory tool's name
    replaces the built-in one while its handler is registered."""

    def __init__(self, actuators: ActuatorsConfig | None, has_handler: Callable[[str], bool], *,
                 memory: bool = False):
        self.robot, self.notes = robot_tools(actuators)
        self._memory = memory
        if not memory:
            self.notes.append("storage is off: the memory tools (remember, recall, forget) are not offered")
        self._has_handler = has_handler
        self._functions: dict[str, Tool] = {}

    @cached_property
    def memory(self) -> list[Tool]:
        """The memory tools (none with storage off); :mod:`ticos_agent.memory.tools` loads when
        they are first listed."""
        if not self._memory:
            return []
        from .memory.tools import memory_tools

        return memory_tools()

    def add(self, name: str, schema: Mapping[str, Any] | None = None, description: str | None = None) -> None:
        """Offer the function ``name`` (see :func:`function_tool`; raises ``ValueError``)."""
        self._functions[name] = function_tool(name, schema, description)

    def tools(self) -> list[Tool]:
        """The tools, robot's first; fresh copies (the caller may change them)."""
        functions = {name: t for name, t in self._functions.items() if self._has_handler(f"function:{name}")}
        memory = [functions.pop(t["name"], t) for t in self.memory]
        return copy.deepcopy([*self.robot, *memory, *functions.values()])
