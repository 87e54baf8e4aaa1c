"""A microcontroller that takes newline-terminated ASCII commands (Arduino, ESP32, RP2040 ...).

Each kind of work is one line made from a template (Python ``str.format`` fields):

============  ==========================================  =====================================
option        default                                     fields
============  ==========================================  =====================================
``motion``    ``MOTION {tag} {speed} {repeat}``           tag, speed, repeat
``emotion``   ``EMOTION {tag} {intensity}``               tag, intensity, face, r, g, b
                                                          (0..255), brightness, pattern,
                                                          duration, fade_in (sent at once:
                                                          the MCU fades in by itself)
``move``      ``MOVE {targets} {ms}``                     target, targets (space separated), ms
``stop``      ``STOP``                                    (sent for the safe state)
``mouth``     (none)                                      level (0..1, two decimals)
============  ==========================================  =====================================

``motions`` lists the motion tags the MCU plays by itself with their length in seconds at
speed 1 (``{ wave = 2.0, dance = 4.5 }``): calling one sends the ``motion`` line once and
the agent waits ``seconds * repeat / speed`` before the next queued motion. Keyframes given
for this actuator in ``[motions.*]`` are sent as ``move`` lines. ``handshake`` is a line sent
at every open; with ``handshake_reply`` the port only counts as open once a line containing it
comes back within ``handshake_timeout``. Lines longer than ``chunk_size`` bytes (64: the
receive buffer of an ATmega328 Arduino) are written in pieces with ``chunk_gap`` seconds
between them.

Wiring: USB cable (``/dev/serial/by-id/usb-Arduino...-if00``) or the Pi's UART
(``/dev/serial0``, 3.3 V levels only; enable it with ``raspi-config``); common ground.

Example::

    [actuators.body]
    driver = "serial-line"
    port = "loop://"            # e.g. "/dev/serial/by-id/usb-Arduino__www.arduino.cc__0043_..-if00"
    baud = 115200
    handshake = "HELLO"
    motions = { nod = 1.0, wave = 2.0, dance = 4.0 }
    emotion = "FACE {face} {r} {g} {b}"
"""

from __future__ import annotations

import string
from typing import Any

from ...options import Choice, Duration, Integer, Invalid, Map, String
from ..driver import register_driver
from ._serial import PORT_OPTIONS, SerialDriver

#: Every field of every template, with a sample of the type the driver passes at run time
#: (``target``/``targets`` are already formatted text; ``ms``, ``repeat``, ``r``/``g``/``b``
#: whole numbers; the rest numbers or text). Templates are checked against these at load.
FIELDS = {
    "motion": {"tag": "wave", "speed": 1.0, "repeat": 1},
    "emotion": {"tag": "happy", "intensity": 1.0, "face": "smile", "r": 255, "g": 200, "b": 0,
                "brightness": 1.0, "pattern": "solid", "duration": 0.0, "fade_in": 0.0},
    "move": {"target": "0", "targets": "0", "ms": 100},
    "stop": {},
    "mouth": {"level": 0.5},
}


class Template(String):
    """A command-line template (``str.format``) using only the fields in ``sample``: plain
    ``{field}`` or ``{field:spec}`` / ``{field!r}``, no attribute or index access, no
    positional fields, no nested fields in a spec, ASCII only; empty: no line."""

    def __init__(self, sample: dict[str, Any], default: Any, doc: str):
        self.sample_values = sample
        super().__init__(default, doc, optional=True)

    def describe(self) -> str:
        allowed = " ".join("{%s}" % f for f in self.sample_values) or "no fields"
        return f"a template using {allowed} (empty: none)"

    def convert(self, value: Any) -> str | None:
        value = super().convert(value)
        if value is None:
            return None
        if not value.isascii():
            raise Invalid(" (ASCII text only)")
        try:
            parts = list(string.Formatter().parse(value))
        except Exception as exc:
            raise Invalid(f" ({exc})") from None
        for _, name, spec, _ in parts:
            if name is None:
                continue
            if name not in self.sample_values:
                raise Invalid(f" (plain names only, no . or [ ]; got {{{name}}})")
            if spec and "{" in spec:
                raise Invalid(" (no nested fields in a format spec)")
        try:
            value.format(**self.sample_values)
        except Exception as exc:
            raise Invalid(f" (with specs that suit them; {type(exc).__name__}: {exc})") from None
        return value


@register_driver("serial-line")
class SerialLine(SerialDriver):
    """Newline-terminated ASCII commands to a microcontroller, one template per command."""

    kind = "line"
    options = {
        **PORT_OPTIONS,
        "motion": Template(FIELDS["motion"], "MOTION {tag} {speed} {repeat}", "line for a motion the MCU plays itself"),
        "motions": Map(Duration(minimum=0), {}, "tags the MCU plays itself = their seconds at speed 1", what="tag",
                       example={"wave": 2.0}),
        "emotion": Template(FIELDS["emotion"], "EMOTION {tag} {intensity}", "line sent for every emotion (empty: none)"),
        "move": Template(FIELDS["move"], "MOVE {targets} {ms}", "line for a keyframe target (empty: no keyframes)"),
        "stop": Template(FIELDS["stop"], "STOP", "line for the safe state (empty: none)"),
        "mouth": Template(FIELDS["mouth"], None, "line for the mouth level (empty: none)"),
        "axes": Integer(1, "values per move target", minimum=1, maximum=32),
        "handshake": String(None, "line sent after opening the port (empty: none)", optional=True),
        "handshake_reply": String(None, "text the MCU must answer the handshake with (empty: none)", optional=True),
        "handshake_timeout": Duration(1.0, "how long to wait for the reply", minimum=0.01, maximum=30),
        "newline": Choice(("\n", "\r\n", "\r"), "\n", "line terminator"),
        "chunk_size": Integer(64, "longest single write in bytes (0: no split)", minimum=0),
        "chunk_gap": Duration(0.01, "pause between pieces of a long line", minimum=0, maximum=1),
    }

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        return options["axes"]

    @classmethod
    def follows_keyframes(cls, options: dict[str, Any]) -> bool:
        """Keyframes become ``move`` lines, so only with a ``move`` template."""
        return bool(options["move"])

    @classmethod
    def shows_expressions(cls, options: dict[str, Any]) -> bool:
        """Every emotion becomes an ``emotion`` line, so only with an ``emotion`` template."""
        return bool(options["emotion"])

    @classmethod
    def played_motions(cls, options: dict[str, Any]) -> dict[str, float]:
        """The ``motions`` option: tags the MCU plays by itself, with their seconds at speed 1."""
        return dict(options["motions"])

    def link_options(self) -> dict[str, Any]:
        o = self.opts
        return {
            "handshake": o["handshake"],
            "handshake_reply": o["handshake_reply"],
            "handshake_timeout": o["handshake_timeout"],
            "newline": o["newline"].encode("ascii"),
            "chunk_size": o["chunk_size"],
            "chunk_gap": o["chunk_gap"],
        }

    def line(self, template: str, values: dict[str, Any]) -> None:
        text = self.opts.get(template)
        if not text:
            self.check()
            return
        self.send(text.format(**values).encode("ascii", "replace") + self.opts["newline"].encode("ascii"))

    def move(self, targets: list[float], seconds: float) -> None:
        texts = [f"{round(t, 2):g}" for t in targets]
        self.line("move", {"target": texts[0], "targets": " ".join(texts), "ms": round(seconds * 1000)})

    def safe(self) -> None:
        if self.state == "ok":
            self.line("stop", {})

    _last_level = None

    def link_up(self) -> None:
        self._last_level = None

    def mouth(self, level: float) -> None:
        level = round(level, 2)
        if level != self._last_level and self.opts["mouth"] and self.state == "ok":
            self._last_level = level
            self.line("mouth", {"level": level})
