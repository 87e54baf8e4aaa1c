"""Pololu Maestro servo controllers (Micro 6, Mini 12/18/24), compact protocol.

Set Target: ``0x84 channel low7 high7`` with the target in quarter-microseconds
(``low7 = t & 0x7F``, ``high7 = (t >> 7) & 0x7F``). The Maestro has no move time, so the
actuator system interpolates keyframes in small steps (``interpolate``, ``step`` in the
actuator table); its own speed/acceleration limits (Maestro Control Center) still apply.

Wiring: USB (``/dev/serial/by-id/usb-Pololu_..._Maestro_..-if00``, the "command port"; set
Serial mode to "USB Dual Port" or "USB Chained") or TTL serial on a Pi UART. Hobby servos on
the channels, their own 5-6 V supply.

Example::

    [actuators.arm]
    driver = "maestro"
    port = "loop://"       # e.g. "/dev/serial/by-id/usb-Pololu_Corporation_Pololu_Micro_Maestro_6-Servo_Controller_00012345-if00"
    channels = [0]
    min = -10
    max = 90
"""

from __future__ import annotations

from typing import Any

from ...options import Float, Integer, List
from ..driver import register_driver
from ._serial import PORT_OPTIONS, SerialDriver

SET_TARGET = 0x84


def set_target(channel: int, quarter_us: int) -> bytes:
    return bytes([SET_TARGET, channel, quarter_us & 0x7F, (quarter_us >> 7) & 0x7F])


@register_driver("maestro")
class Maestro(SerialDriver):
    """Pololu Maestro, compact protocol; targets in degrees -> pulse width."""

    timed_moves = False
    options = {
        **PORT_OPTIONS,
        "baud": Integer(9600, "bits per second (ignored on the USB command port)", minimum=300, maximum=200_000),
        "channels": List(Integer(minimum=0, maximum=23), doc="Maestro channels, one per actuator channel", example=[0]),
        "center_us": Float(1500.0, "pulse width at 0 degrees, microseconds", minimum=500, maximum=2500),
        "us_per_degree": Float(500 / 90, "microseconds per degree (negative to reverse)"),
    }

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        return len(options["channels"])

    def quarter_us(self, degrees: float) -> int:
        us = self.opts["center_us"] + degrees * self.opts["us_per_degree"]
        return max(0, min(0x3FFF, round(us * 4)))

    def move(self, targets: list[float], seconds: float) -> None:
        self.send(b"".join(set_target(ch, self.quarter_us(t)) for ch, t in zip(self.opts["channels"], targets)))

    def safe(self) -> None:
        if self.state == "ok":
            self.move(list(self.config.home), 0)

    def mouth(self, level: float) -> None:
        c = self.config
        self.move([h + level * (m - h) for h, m in zip(c.home, c.maximum)], 0)
