"""Feetech SCS/STS bus servos (SCS0009, SCS15, STS3215, STS3032 ...).

Frame: ``FF FF id len instr params chk``, ``len = len(params) + 2``,
``chk = ~(id + len + instr + sum(params)) & 0xFF``. A move of all the actuator's servos is one
SYNC_WRITE (instruction ``0x83``, broadcast id ``0xFE``) of 6 bytes from address 42:
Goal_Position, Goal_Time (ms), Goal_Speed (0 = let the time decide). STS registers are
little-endian, SCS registers big-endian.

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

from ..driver import Option, register_driver
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


def sync_write_goal(raws: list[int], ids: list[int], ms: int, *, little: bool, speed: int = 0) -> bytes:
    def word(v: int) -> list[int]:
        lo, hi = v & 0xFF, (v >> 8) & 0xFF
        return [lo, hi] if little else [hi, lo]

    params = [GOAL_POSITION, 6]
    for sid, raw in zip(ids, raws):
        params += [sid, *word(raw), *word(ms), *word(speed)]
    return frame(BROADCAST, SYNC_WRITE, params)


@register_driver("feetech-sts")
class FeetechSTS(BusServoDriver):
    """Feetech STS bus servos (4096 steps per turn, little-endian registers)."""

    little = True
    raw_max = 4095
    options = {
        **BusServoDriver.options,
        "baud": Option("int", 1_000_000, "bits per second", minimum=300, maximum=4_000_000),
        "center": Option("int", 2048, "raw position of 0 degrees", minimum=0, maximum=4095),
        "steps_per_degree": Option("float", 4096 / 360, "raw steps per degree (negative to reverse)"),
        "goal_speed": Option("int", 0, "Goal_Speed register (0: reach the target in the move time)", minimum=0, maximum=0xFFFF),
    }

    def encode(self, raws: list[int], ms: int) -> bytes:
        return sync_write_goal(raws, self.opts["ids"], ms, little=self.little, speed=self.opts["goal_speed"])


@register_driver("feetech-scs")
class FeetechSCS(FeetechSTS):
    """Feetech SCS bus servos (1024 steps over 300 degrees, big-endian registers)."""

    little = False
    raw_max = 1023
    options = {
        **FeetechSTS.options,
        "center": Option("int", 512, "raw position of 0 degrees", minimum=0, maximum=1023),
        "steps_per_degree": Option("float", 1024 / 300, "raw steps per degree (negative to reverse)"),
    }
