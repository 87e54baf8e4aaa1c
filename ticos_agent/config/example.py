"""``ticos-agent config --example``: a commented config file generated from the declarations.

Every key of every section with its default and one line of documentation, one example
actuator per installed driver (built in and plug-ins) with every option of that driver, and
one motion and one emotion with every key. Every setting is commented out (``#key = value``,
``#[table]``), so the file as it is changes nothing; delete the ``#`` in front of a line to
use it. Documentation lines start with ``# `` (a space after the ``#``). Uncommenting every
setting gives a valid config that drives every example actuator on simulated hardware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..options import REQUIRED, Invalid, Option, schema_of
from .toml import key, value

if TYPE_CHECKING:
    from ..actuators.driver import Driver

HEADER = """\
ticos-agent configuration: every key, its default and what it does.
Generated from the option declarations by `ticos-agent config --example`.
Every setting is commented out; delete the leading "#" of a line (and of its [table]) to use it.
`ticos-agent config --config FILE` shows the effective values of a file."""


def _doc(option: Option) -> str:
    doc = option.doc.rstrip(".")
    return f"# {doc}. Takes {option.describe()}." if doc else f"# Takes {option.describe()}."


def _setting(lines: list[str], name: str, option: Option, sample: Any = REQUIRED) -> None:
    lines.append(_doc(option))
    sample = option.sample() if sample is REQUIRED else sample
    if sample is REQUIRED or sample is None:
        lines.append(f"# {name}: required, no example")
    else:
        lines.append(f"#{key(name)} = {value(sample)}")


def _section(lines: list[str], path: str, schema: dict[str, Option], samples: dict[str, Any] | None = None,
             intro: str = "") -> None:
    lines.append("")
    lines += [f"# {line}" for line in intro.splitlines()]
    lines.append(f"#[{path}]")
    for name, option in schema.items():
        _setting(lines, name, option, (samples or {}).get(name, REQUIRED))


def _typed(cls: type[Driver], samples: dict[str, Any]) -> dict[str, object] | None:
    """A driver's options as the config loader would hand them over, or None if not all known."""
    options: dict[str, object] = {}
    for name, option in cls.options.items():
        sample = samples[name]
        if sample is REQUIRED or sample is None:
            return None
        try:
            options[name] = option.convert(sample)
        except Invalid:
            return None
    return options


def _per_channel(v: float, channels: int) -> Any:
    return v if channels == 1 else [v] * channels




def example() -> str:
    """The commented example file."""
    from ..actuators.config import COMMON, ROBOT, SERVO_KEYS
    from ..actuators.library import DESCRIPTION, EXPRESSION, TRACKS
    from ..actuators.registry import available
    from ..audio.config import AudioConfig
    from . import PLAIN_SECTIONS

    lines = [f"# {line}" for line in HEADER.splitlines()]
    for path, cls in (*PLAIN_SECTIONS.items(), ("audio", AudioConfig)):
        intro = (cls.__doc__ or "").strip().splitlines()[0].split(":", 1)[-1].strip()
        _section(lines, path, schema_of(cls), intro=f"[{path}]: {intro}")
    _section(lines, "robot", ROBOT, intro="[robot]: the robot as a whole")

    lines += ["", "# [actuators.NAME]: one table per actuator. `driver` picks what runs it; the other keys are the",
              "# keys every actuator has and the driver's own options. Without an [actuators] section the agent",
              "# drives a simulated robot. One example per installed driver follows, each with every key."]
    keyframe_target = None  # (actuator name, channels) an example motion and pose can use
    for name, cls in available().items():
        samples = {k: o.sample() for k, o in cls.options.items()}
        options = _typed(cls, samples)
        common: dict[str, Any] = {"driver": name, "role": name}
        doc = (cls.__doc__ or "").strip().splitlines()
        intro = f"driver {name!r}: {doc[0] if doc else cls.__name__}"
        schema = dict(COMMON)
        if options is not None and cls.kind_for(options) != "light":
            channels = cls.channels(options)
            lo, hi, home = cls.limits_for(options)
            common.update(min=_per_channel(lo, channels), max=_per_channel(hi, channels),
                          home=_per_channel(home, channels), interpolate=not cls.timed_moves)
            if keyframe_target is None and cls.follows_keyframes(options):
                keyframe_target = (name, channels)
        else:
            schema = {k: o for k, o in COMMON.items() if k not in SERVO_KEYS}
        lines += ["", f"# {intro}", f"#[actuators.{key(name)}]"]  # the example actuator is named after its driver
        for k, option in schema.items():
            _setting(lines, k, option, common.get(k, REQUIRED))
        for k, option in cls.options.items():
            _setting(lines, k, option, samples[k])

    target, channels = keyframe_target or ("head", 2)
    lines += ["", "# [motions.TAG]: keyframes per actuator (or role), [[seconds, target], ...]; a target is degrees,",
              "# one number or one per channel. A tag of the shipped library is replaced, a new one added."]
    lines.append("#[motions.example]")
    _setting(lines, "description", DESCRIPTION, "a small tilt of the head: listening, curious")
    lines.append(_doc(TRACKS.value))
    lines.append(f"#{key(target)} = {value([[0.5, _per_channel(10.0, channels)], [1.0, _per_channel(0.0, channels)]])}")
    pose = {target: _per_channel(5.0, channels)}
    _section(lines, "emotions.example", EXPRESSION, {"pose": pose},
             intro="[emotions.TAG]: how an emotion is shown. A tag of the shipped library is replaced, "
                   "a new one added.")
    from ..life.config import LOOK, STATES

    _section(lines, "states.listening", LOOK, {"emotion": "happy", "motion": "", "pose": {}, "actuators": []},
             intro=f"[states.NAME]: what the robot shows in a state ({', '.join(STATES)}): one of emotion, "
                   "motion or pose.")
    return "\n".join(lines) + "\n"
