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

from ...errors import ConfigError
from ..driver import Option, register_driver
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


def check_template(key: str, template: str, sample: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` under ``key`` unless ``template`` formats ``sample``: plain
    ``{field}`` or ``{field:spec}`` / ``{field!r}`` with the known field names only (no
    attribute or index access, no positional fields, no nested fields in a spec)."""
    allowed = " ".join("{%s}" % f for f in sample) or "no fields"
    if not template.isascii():
        raise ConfigError(key, template, "ASCII text")
    try:
        parts = list(string.Formatter().parse(template))
    except Exception as exc:  # noqa: BLE001 - unbalanced braces and the like
        raise ConfigError(key, template, f"a template using {allowed} ({exc})") from None
    for _, name, spec, _ in parts:
        if name is None:
            continue
        if name not in sample:
            raise ConfigError(key, template, f"a template using {allowed} only (plain names, no . or [ ]; got {{{name}}})")
        if spec and "{" in spec:
            raise ConfigError(key, template, f"a template using {allowed} (no nested fields in a format spec)")
    try:
        template.format(**sample)
    except Exception as exc:  # noqa: BLE001 - a bad format spec for the field's type
        raise ConfigError(key, template, f"a template using {allowed} with specs that suit them ({type(exc).__name__}: {exc})") from None


@register_driver("serial-line")
class SerialLine(SerialDriver):
    """Newline-terminated ASCII commands to a microcontroller, one template per command."""

    kind = "line"
    options = {
        **PORT_OPTIONS,
        "motion": Option("str?", "MOTION {tag} {speed} {repeat}", "line for a motion the MCU plays itself"),
        "motions": Option("seconds-map", {}, "tags the MCU plays itself -> their seconds at speed 1"),
        "emotion": Option("str?", "EMOTION {tag} {intensity}", "line sent for every emotion (empty: none)"),
        "move": Option("str?", "MOVE {targets} {ms}", "line for a keyframe target"),
        "stop": Option("str?", "STOP", "line for the safe state (empty: none)"),
        "mouth": Option("str?", None, "line for the mouth level (empty: none)"),
        "axes": Option("int", 1, "values per move target", minimum=1, maximum=32),
        "handshake": Option("str?", None, "line sent after opening the port"),
        "handshake_reply": Option("str?", None, "text the MCU must answer the handshake with"),
        "handshake_timeout": Option("float", 1.0, "seconds to wait for the reply", minimum=0.01, maximum=30),
        "newline": Option("str", "\n", "line terminator", choices=("\n", "\r\n", "\r")),
        "chunk_size": Option("int", 64, "longest single write in bytes (0: no split)", minimum=0),
        "chunk_gap": Option("float", 0.01, "pause between pieces of a long line, seconds", minimum=0, maximum=1),
    }

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        return options["axes"]

    @classmethod
    def validate(cls, options: dict[str, Any], key: str) -> None:
        for name, sample in FIELDS.items():
            template = options.get(name)
            if template:
                check_template(f"{key}.{name}", template, sample)

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
