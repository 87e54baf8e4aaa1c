"""Hiwonder / LewanSoul LX-16A (and LX-224, HTS-35H) bus servos.

Frame: ``55 55 id len cmd params chk``, ``len = len(params) + 3``,
``chk = ~(id + len + cmd + sum(params)) & 0xFF``. A move is one SERVO_MOVE_TIME_WRITE
(``cmd 1``: position 0..1000 over 240 degrees, time 0..30000 ms, both little-endian) per servo,
written back to back.

Wiring: Hiwonder's BusLinker / debug board on USB, or a half-duplex buffer on a Pi UART at
115200 baud; 6-8.4 V for the servos; common ground.

Example::

    [actuators.arm]
    driver = "lx16a"
    port = "loop://"      # e.g. "/dev/serial/by-id/usb-1a86_USB2.0-Serial-if00-port0"
    ids = [3]
    min = -60
    max = 90
"""

from __future__ import annotations

from ...options import Float, Integer
from ..driver import register_driver
from ._serial import BusServoDriver

MOVE_TIME_WRITE = 1


def frame(servo_id: int, cmd: int, params: list[int]) -> bytes:
    body = [servo_id, len(params) + 3, cmd, *params]
    return b"\x55\x55" + bytes(body) + bytes([~sum(body) & 0xFF])


@register_driver("lx16a")
class LX16A(BusServoDriver):
    """Hiwonder LX-16A bus servos (0..1000 over 240 degrees)."""

    raw_max = 1000
    options = {
        **BusServoDriver.options,
        "center": Integer(500, "raw position of 0 degrees", minimum=0, maximum=1000),
        "steps_per_degree": Float(1000 / 240, "raw steps per degree (negative to reverse)"),
    }

    def encode(self, raws: list[int], ms: int) -> bytes:
        ms = min(ms, 30000)
        out = b""
        for sid, raw in zip(self.opts["ids"], raws):
            out += frame(sid, MOVE_TIME_WRITE, [raw & 0xFF, raw >> 8, ms & 0xFF, ms >> 8])
        return out
