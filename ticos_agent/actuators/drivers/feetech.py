"""Feetech SCS/STS bus servos (SCS0009, SCS15, STS3215, STS3032 ...).

Frame: ``FF FF id len instr params chk``, ``len = len(params) + 2``,
``chk = ~(id + len + instr + sum(params)) & 0xFF``. A move of all the actuator's servos is one
SYNC_WRITE (instruction ``0x83``, broadcast id ``0xFE``) of 6 bytes per servo from address 42:
Goal_Position, Goal_Time (ms), Goal_Speed. STS registers are little-endian, SCS registers
big-endian.

How the move time is honoured differs:

* SCS servos take Goal_Time: it carries the move time in ms and Goal_Speed is the
  ``goal_speed`` option (0: let the time decide).
* STS servos (STS3215, STS3032 ...) ignore Goal_Time and run at Goal_Speed (steps/s; 0 would
  mean full speed), as Feetech's SMS_STS SDK writes them. So the driver computes, per servo,
  ``Goal_Speed = clamp(ceil(|raw - last_raw| * 1000 / ms), 1, max_speed)`` where ``last_raw``
  is the raw target it last sent to that id (``ms = 0``: ``max_speed``) and writes
  Goal_Time = 0. When the last target is unknown (first move after the port opened or came
  back) ``|raw - last_raw|`` is the farthest the servo can be within the actuator's
  ``min``/``max``, so the move takes at most the move time from anywhere in range. The safe
  state always computes it that way (a servo stopped mid-move is not at its last target), so
  homing takes at most ``safe_seconds``. A non-zero ``goal_speed`` option fixes the speed.

Wiring: a half-duplex TTL bus (Feetech URT-1 / FE-URT-1 board, or a 74LS241 buffer on a Pi
UART); the servos daisy-chained, each with its own id; 6-8.4 V supply for the servos, common
ground with the Pi. Set the ids with Feetech's FD tool first.

Example (runs anywhere, ``loop://`` is a virtual port)::

    [actuators.head]
    driver = "feetech-sts"
    port = "loop://"            # e.g. "/dev/serial/by-id/usb-1a86_USB_Single_Serial_5A46..-if00"
    baud = 1000000
    ids = [1, 2]                # pan, tilt
    min = [-90, -30]
    max = [90, 30]
    home = [0, 0]
"""

from __future__ import annotations

import math

from ...options import Float, Integer
from ..driver import register_driver
from ._serial import BusServoDriver

SYNC_WRITE = 0x83
WRITE = 0x03
BROADCAST = 0xFE
GOAL_POSITION = 42


def checksum(body: bytes | list[int]) -> int:
    """``~(id + len + instr + sum(params)) & 0xFF`` over everything after ``FF FF``."""
    return ~sum(body) & 0xFF


def frame(servo_id: int, instr: int, params: bytes | list[int]) -> bytes:
    body = bytes([servo_id, len(params) + 2, instr, *params])
    return b"\xff\xff" + body + bytes([checksum(body)])


def sync_write_goal(raws: list[int], ids: list[int], ms: int, *, little: bool, speed: int | list[int] = 0) -> bytes:
    """Goal_Position, Goal_Time and Goal_Speed of every servo (``speed``: one for all or one per id)."""

    def word(v: int) -> list[int]:
        lo, hi = v & 0xFF, (v >> 8) & 0xFF
        return [lo, hi] if little else [hi, lo]

    speeds = speed if isinstance(speed, list) else [speed] * len(ids)
    params = [GOAL_POSITION, 6]
    for sid, raw, sp in zip(ids, raws, speeds):
        params += [sid, *word(raw), *word(ms), *word(sp)]
    return frame(BROADCAST, SYNC_WRITE, params)


def goal_speed(delta: int, ms: int, max_speed: int) -> int:
    """Steps per second to travel ``delta`` raw steps in ``ms`` milliseconds, 1..max_speed."""
    if ms <= 0:
        return max_speed
    return max(1, min(max_speed, math.ceil(abs(delta) * 1000 / ms)))


@register_driver("feetech-sts")
class FeetechSTS(BusServoDriver):
    """Feetech STS bus servos (4096 steps per turn, little-endian registers)."""

    little = True
    raw_max = 4095
    options = {
        **BusServoDriver.options,
        "baud": Integer(1_000_000, "bits per second", minimum=300, maximum=4_000_000),
        "center": Integer(2048, "raw position of 0 degrees", minimum=0, maximum=4095),
        "steps_per_degree": Float(4096 / 360, "raw steps per degree (negative to reverse)"),
        "goal_speed": Integer(0, "fixed Goal_Speed register (0: computed so the move takes its time)", minimum=0,
                              maximum=0x7FFF),
        "max_speed": Integer(3400, "fastest Goal_Speed, steps/s (STS3215: 3400)", minimum=1, maximum=0x7FFF),
    }

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._last: dict[int, int] = {}  # servo id -> raw target last sent

    def link_up(self) -> None:
        self._last.clear()  # a servo that was off the bus may be anywhere

    def safe(self) -> None:
        if self.state == "ok":
            self._last.clear()  # it may be anywhere on its way: home from anywhere within safe_seconds
        super().safe()

    def encode(self, raws: list[int], ms: int) -> bytes:
        ids = self.opts["ids"]
        if self.opts["goal_speed"]:
            speeds: list[int] | int = self.opts["goal_speed"]
        else:
            speeds = []
            lo = [self.raw(v) for v in self.config.minimum] or [0] * len(ids)
            hi = [self.raw(v) for v in self.config.maximum] or [self.raw_max] * len(ids)
            for sid, raw, a, b in zip(ids, raws, lo, hi):
                last = self._last.get(sid)
                delta = abs(raw - last) if last is not None else max(abs(raw - a), abs(raw - b))
                speeds.append(goal_speed(delta, ms, self.opts["max_speed"]))
        self._last.update(zip(ids, raws))
        return sync_write_goal(raws, ids, 0, little=True, speed=speeds)


@register_driver("feetech-scs")
class FeetechSCS(FeetechSTS):
    """Feetech SCS bus servos (1024 steps over 300 degrees, big-endian registers)."""

    little = False
    raw_max = 1023
    options = {
        **FeetechSTS.options,
        "center": Integer(512, "raw position of 0 degrees", minimum=0, maximum=1023),
        "steps_per_degree": Float(1024 / 300, "raw steps per degree (negative to reverse)"),
        "goal_speed": Integer(0, "Goal_Speed register (0: reach the target in the move time)", minimum=0, maximum=0xFFFF),
    }
    del options["max_speed"]

    def encode(self, raws: list[int], ms: int) -> bytes:
        return sync_write_goal(raws, self.opts["ids"], ms, little=False, speed=self.opts["goal_speed"])
