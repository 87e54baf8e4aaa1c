"""Config: the simulated default robot, the library, overrides, and errors that name the key,
the bad value and what is allowed."""

from __future__ import annotations

import json

import pytest

from ticos_agent.actuators import DRIVERS, ActuatorSystem, Driver, parse_actuators_config, register_driver
from ticos_agent.arguments import EmotionArgs, MotionArgs
from ticos_agent.errors import ConfigError, ConfigErrors
from ticos_agent.options import Integer

DEFAULT_MOTIONS = ["bow", "dance", "nod", "shake", "wave"]
DEFAULT_EMOTIONS = ["angry", "happy", "neutral", "sad", "surprised", "thinking"]


def test_no_file_gives_a_simulated_robot_that_knows_every_default_tag():
    cfg = parse_actuators_config({"server": {"port": 1}, "audio": {"enabled": False}})  # others' keys ignored
    assert cfg.default_robot and cfg.simulated and cfg.mouth == "mouth"
    assert sorted(cfg.motions) == DEFAULT_MOTIONS and sorted(cfg.emotions) == DEFAULT_EMOTIONS
    as_dict = cfg.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict  # plain data
    assert as_dict["actuators"]["head"]["driver"] == "feetech-sts"


async def test_default_robot_runs_every_default_tag_quickly():
    s = ActuatorSystem(parse_actuators_config({}))
    await s.start()
    try:
        assert s.simulated and s.health()["simulated"]
        assert all(a["state"] == "ok" and a["simulated"] for a in s.health()["actuators"].values())
        for tag in DEFAULT_MOTIONS:
            out = await s.motion(MotionArgs(tag, speed=5.0))
            assert out.status == "done", (tag, out)
        for tag in DEFAULT_EMOTIONS:
            out = await s.emotion(EmotionArgs(tag, fade_in=0.02, duration=0.0))
            assert out.status == "done", (tag, out)
    finally:
        await s.stop()


def test_config_extends_and_overrides_the_library():
    doc = {
        "actuators": {"neck": {"driver": "mock", "role": "head", "channels": 2},
                      "light": {"driver": "mock", "kind": "light"}},
        "motions": {"nod": {"neck": [[0.1, [0, 5]]]}, "spin": {"head": [{"t": 0.5, "target": [90, 0]}]}},
        "emotions": {"happy": {"color": [0, 255, 0], "pattern": "blink"}, "sleepy": {"brightness": 0.1}},
    }
    cfg = parse_actuators_config(doc)
    assert cfg.motions["nod"].tracks == {"neck": cfg.motions["nod"].tracks["neck"]}
    assert len(cfg.motions["nod"].tracks["neck"]) == 1  # replaced, not merged
    assert cfg.motions["spin"].tracks["neck"][0].target == (90.0, 0.0)  # role head -> neck, clamped later
    assert "shake" in cfg.motions  # default through the role
    assert list(cfg.motions["wave"].tracks) == ["neck"]  # the arm track is skipped: no arm here
    assert cfg.emotions["happy"].color == (0.0, 1.0, 0.0) and "sleepy" in cfg.emotions
    assert not parse_actuators_config({**doc, "robot": {"default_library": False}}).emotions.get("sad")


def test_serial_line_motions_become_tags():
    doc = {"actuators": {"mcu": {"driver": "serial-line", "port": "loop://", "motions": {"moonwalk": 3.0}}}}
    cfg = parse_actuators_config(doc)
    assert cfg.motions["moonwalk"].played == {"mcu": 3.0}
    assert cfg.actuators["mcu"].simulated


@pytest.mark.parametrize(
    "doc, key, value, allowed",
    [
        ({"actuators": {"head": {"driver": "feetech-sts", "port": "loop://", "ids": [1], "baud": "fast"}}},
         "actuators.head.baud", "fast", "whole number"),
        ({"actuators": {"head": {"driver": "feetech-sts", "port": "loop://", "ids": [1], "baud": 1}}},
         "actuators.head.baud", 1, "from 300"),
        ({"actuators": {"head": {"driver": "stepper"}}}, "actuators.head.driver", "stepper", "feetech-sts"),
        ({"actuators": {"head": {"driver": "feetech-sts", "port": "loop://"}}}, "actuators.head.ids", None, "required"),
        ({"actuators": {"head": {"driver": "maestro", "port": "loop://", "channels": [0], "colour": 1}}},
         "actuators.head.colour", 1, "allowed: driver"),
        ({"actuators": {"a": {"driver": "mock", "min": 10, "max": 20}}}, "actuators.a.home", 0.0, "10..20"),
        ({"actuators": {"a": {"driver": "mock"}}, "motions": {"hop": {"leg": [[0.1, 1]]}}},
         "motions.hop.leg", "leg", "actuator name or role"),
        ({"actuators": {"a": {"driver": "mock"}}, "motions": {"hop": {"a": [[0.5, 1], [0.2, 0]]}}},
         "motions.hop.a[1].t", 0.2, "time order"),
        ({"actuators": {"a": {"driver": "mock", "channels": 2}}, "motions": {"hop": {"a": [[0.5, 1]]}}},
         "motions.hop.a", [[1.0]], "2 value"),
        ({"emotions": {"glad": {"color": "#12"}}}, "emotions.glad.color", "#12", "#RRGGBB"),
        ({"emotions": {"glad": {"pattern": "strobe"}}}, "emotions.glad.pattern", "strobe", "'solid', 'pulse', 'blink'"),
        ({"emotions": {"glad": {"smell": 1}}}, "emotions.glad.smell", 1, "allowed: color"),
        ({"robot": {"mouth": "lips"}}, "robot.mouth", "lips", "head, arm, face, mouth"),
        ({"actuators": {"m": {"driver": "serial-line", "port": "loop://", "motion": "GO {where}"}}},
         "actuators.m.motion", "GO {where}", "{tag} {speed} {repeat}"),
        ({"actuators": {"f": {"driver": "gpio-rgbled", "red": 1, "green": 2, "blue": 3, "min": 0}}},
         "actuators.f.min", 0, "not to a light"),
        ({"actuators": {"f": {"driver": "gpio-pwmled", "pin": 1, "pin_factory": "fake"}}},
         "actuators.f.pin_factory", "fake", "'mock'"),
        ({"actuators": {"a": {"driver": "lx16a", "port": "/dev/ttyX", "ids": [1]},
                        "b": {"driver": "lx16a", "port": "/dev/ttyX", "ids": [2], "baud": 9600}}},
         "actuators.b.baud", 9600, "same port"),
        ({"actuators": []}, "actuators", [], "a table"),
        # limits must be finite numbers (TOML has inf and nan)
        ({"actuators": {"a": {"driver": "maestro", "port": "loop://", "channels": [0], "max": float("inf")}}},
         "actuators.a.max", float("inf"), "finite"),
        ({"actuators": {"a": {"driver": "mock", "channels": 2, "min": [-10, float("-inf")]}}},
         "actuators.a.min", [-10, float("-inf")], "finite"),
        ({"actuators": {"a": {"driver": "mock", "home": float("-inf")}}}, "actuators.a.home", float("-inf"), "finite"),
        # serial-line templates: plain field names only, specs that suit the run-time values
        ({"actuators": {"m": {"driver": "serial-line", "port": "loop://", "motion": "M {tag.nope}"}}},
         "actuators.m.motion", "M {tag.nope}", "no . or [ ]"),
        ({"actuators": {"m": {"driver": "serial-line", "port": "loop://", "motion": "M {speed[0]}"}}},
         "actuators.m.motion", "M {speed[0]}", "no . or [ ]"),
        ({"actuators": {"m": {"driver": "serial-line", "port": "loop://", "move": "MOVE {target:.1f} {ms}"}}},
         "actuators.m.move", "MOVE {target:.1f} {ms}", "{target} {targets} {ms}"),
        ({"actuators": {"m": {"driver": "serial-line", "port": "loop://", "emotion": "E {0}"}}},
         "actuators.m.emotion", "E {0}", "{tag}"),
        ({"actuators": {"m": {"driver": "serial-line", "port": "loop://", "mouth": "M {level:{tag}}"}}},
         "actuators.m.mouth", "M {level:{tag}}", "{level}"),
        ({"actuators": {"m": {"driver": "serial-line", "port": "loop://", "stop": "STOP {"}}},
         "actuators.m.stop", "STOP {", "no fields"),
        # keyframe times are capped
        ({"actuators": {"a": {"driver": "mock"}}, "motions": {"hop": {"a": [[0.5, 1], [1500, 0]]}}},
         "motions.hop.a[1].t", 1500, "0 to 60"),
    ],
)
def test_errors_name_key_value_and_what_is_allowed(doc, key, value, allowed):
    with pytest.raises(ConfigErrors) as info:
        parse_actuators_config(doc)
    assert len(info.value.errors) == 1, str(info.value)  # one mistake, one error: no follow-on noise
    err = info.value.errors[0]
    assert isinstance(info.value, ConfigError) and info.value.key == err.key  # `except ConfigError` still works
    assert err.key == key and err.value == value, str(err)
    assert allowed in err.expected, str(err)
    assert key in str(err) and "\n" not in str(err)


async def test_a_new_driver_needs_no_change_elsewhere():
    seen = []

    @register_driver("test-buzzer")
    class Buzzer(Driver):
        """A buzzer that 'moves' by beeping (test only)."""

        options = {"pin": Integer(doc="GPIO")}

        def move(self, targets, seconds):
            seen.append((targets, seconds))

    try:
        doc = {"actuators": {"bz": {"driver": "test-buzzer", "pin": 4}},
               "motions": {"beep": {"bz": [[0.05, 1], [0.1, 0]]}},
               "robot": {"default_library": False}}
        s = ActuatorSystem(parse_actuators_config(doc))
        await s.start()
        out = await s.motion(MotionArgs("beep", repeat=2))
        await s.stop()
        assert out.status == "done" and [t for t, _ in seen] == [[1.0], [0.0], [1.0], [0.0]]
        assert Buzzer.describe()["options"]["pin"]["required"]
    finally:
        DRIVERS.pop("test-buzzer")


def test_serial_line_templates_with_specs_that_suit_the_values_load_and_run():
    import asyncio

    doc = {"robot": {"default_library": False},
           "actuators": {"m": {"driver": "serial-line", "port": "loop://", "move": "MOVE {target:>6} {ms:05d}",
                               "motion": "M {tag!r} {speed:.1f} {repeat:d}"}},
           "motions": {"hop": {"m": [[0.05, 12.5]]}}}
    cfg = parse_actuators_config(doc)

    async def run():
        s = ActuatorSystem(cfg)
        await s.start()
        try:
            return await s.motion(MotionArgs("hop"))
        finally:
            await s.stop()

    assert asyncio.run(run()).status == "done"


async def test_capabilities_not_driver_names_decide_what_an_actuator_does():
    """A driver the config and planner have never heard of gets motions it plays itself, shows
    every emotion and has its own limits, because its class says so."""
    from ticos_agent.actuators.plan import expression_actuators
    from ticos_agent.options import Duration, Map

    lines = []

    @register_driver("test-panel")
    class Panel(Driver):
        """An MCU-like panel that plays its own tricks and shows emotions (test only)."""

        kind = "line"
        options = {"tricks": Map(Duration(minimum=0), {}, "tricks it plays itself = seconds")}

        @classmethod
        def shows_expressions(cls, options):
            return True

        @classmethod
        def played_motions(cls, options):
            return options["tricks"]

        def line(self, template, values):
            lines.append((template, values))

    @register_driver("test-dial")
    class Dial(Driver):
        """A dial from 0 to 270 degrees, resting at 135, without move times (test only)."""

        timed_moves = False

        @classmethod
        def limits_for(cls, options):
            return (0.0, 270.0, 135.0)

    try:
        doc = {"robot": {"default_library": False},
               "actuators": {"panel": {"driver": "test-panel", "tricks": {"spin": 0.05}},
                             "dial": {"driver": "test-dial"}},
               "emotions": {"glad": {"color": "#00FF00"}}}
        cfg = parse_actuators_config(doc)
        assert cfg.motions["spin"].played == {"panel": 0.05}
        dial = cfg.actuators["dial"]
        assert (dial.minimum, dial.maximum, dial.home, dial.interpolate) == ((0.0,), (270.0,), (135.0,), True)
        assert expression_actuators(cfg) == ["panel"]
        s = ActuatorSystem(cfg)
        await s.start()
        try:
            assert (await s.motion(MotionArgs("spin"))).status == "done"
            assert (await s.emotion(EmotionArgs("glad"))).status == "done"
        finally:
            await s.stop()
        assert [t for t, _ in lines] == ["motion", "emotion"]
        assert lines[0][1]["tag"] == "spin" and (lines[1][1]["tag"], lines[1][1]["g"]) == ("glad", 255)
    finally:
        DRIVERS.pop("test-panel")
        DRIVERS.pop("test-dial")


def test_no_code_outside_a_driver_compares_with_a_driver_name():
    """What an actuator can do comes from its driver's capabilities: no ``a.driver == "mock"``
    (or ``in ("serial-line", ...)``) anywhere in the package outside ``actuators/drivers/``."""
    import ast
    import pathlib

    import ticos_agent
    from ticos_agent.actuators import drivers as builtin

    names = {n for n, cls in DRIVERS.items() if cls.__module__.startswith(builtin.__name__)}
    assert {"mock", "serial-line", "gpio-servo", "feetech-sts"} <= names
    root = pathlib.Path(ticos_agent.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if pathlib.Path(builtin.__file__).parent in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for const in ast.walk(node):
                    if isinstance(const, ast.Constant) and const.value in names:
                        found.append(f"{path.relative_to(root)}:{node.lineno}: {const.value!r}")
    assert found == []


def _docstring_examples():
    """(driver name, TOML text) of the ``Example::`` block in each built-in driver's module docstring."""
    import importlib
    import sys
    import textwrap

    from ticos_agent.actuators import drivers as builtin

    for name, cls in sorted(DRIVERS.items()):
        if not cls.__module__.startswith(builtin.__name__):
            continue
        doc = sys.modules[cls.__module__].__doc__ or importlib.import_module(cls.__module__).__doc__
        assert "Example" in doc and "::\n\n" in doc.split("Example", 1)[1], f"{name}: no Example:: block"
        block = doc.split("Example", 1)[1].split("::\n\n", 1)[1]
        lines = []
        for line in block.splitlines():
            if line.strip() and not line.startswith("    "):
                break
            lines.append(line)
        yield name, textwrap.dedent("\n".join(lines))


async def test_every_driver_docstring_example_is_a_config_that_runs():
    import tomllib

    from ticos_agent.config import from_dict

    seen = set()
    for name, text in _docstring_examples():
        doc = tomllib.loads(text)
        config = from_dict(doc).actuators
        drivers = {a.driver for a in config.actuators.values()}
        seen |= drivers
        s = ActuatorSystem(config)
        await s.start()
        try:
            assert all(a["state"] == "ok" for a in s.health()["actuators"].values()), (name, s.health())
        finally:
            await s.stop()
    assert seen >= {"feetech-sts", "lx16a", "maestro", "mock", "serial-line", "gpio-rgbled", "gpio-pwmled",
                    "gpio-servo"}


def test_each_built_in_drivers_typed_options_name_the_keys_it_declares():
    """A driver's ``opts`` is declared as a TypedDict (what the type checker knows) and its
    ``options`` as a schema (what the config checks): both name the same keys."""
    import sys

    built_in = {n: c for n, c in DRIVERS.items() if c.__module__.startswith("ticos_agent.")}
    assert len(built_in) >= 9
    for name, cls in built_in.items():
        owner = next(k for k in cls.__mro__ if "opts" in vars(k).get("__annotations__", {}))
        assert owner is not Driver, f"{name}: declare opts as a TypedDict of its options"
        typed = eval(owner.__annotations__["opts"], vars(sys.modules[owner.__module__]))
        # (NotRequired inside postponed annotations is only seen in the text before Python 3.14)
        optional = set(typed.__optional_keys__) | {
            k for k, v in typed.__annotations__.items() if "NotRequired[" in getattr(v, "__forward_arg__", str(v))}
        required = set(typed.__annotations__) - optional
        assert required <= set(cls.options) <= required | optional, (name, required ^ set(cls.options))
