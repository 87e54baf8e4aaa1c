"""Shared parts of the serial drivers: the port options, link handling, bus-servo maths."""

from __future__ import annotations

import os
from typing import Any

from ...options import Device, Duration, Integer, List
from ..driver import Driver
from ..serial_link import acquire, is_virtual, release

PORT_OPTIONS = {
    "port": Device(doc="serial device: /dev/serial/by-id/usb-..., /dev/ttyAMA0, or loop:// (simulated)",
                   example="loop://"),
    "baud": Integer(115200, "bits per second", minimum=300, maximum=4_000_000),
}


class SerialDriver(Driver):
    """A driver that writes to one serial port through a :class:`SerialLink`."""

    link = None

    @classmethod
    def simulated_for(cls, options: dict[str, Any]) -> bool:
        return is_virtual(options["port"])

    @classmethod
    def check_environment(cls, options: dict[str, Any]) -> list[str]:
        port = options["port"]
        if is_virtual(port):
            return []
        if not os.path.exists(port):
            return [f"{port} does not exist (plugged in? see ls -l /dev/serial/by-id/)"]
        if not os.access(port, os.R_OK | os.W_OK):
            return [f"{port} is not readable and writable by this user (add it to the 'dialout' group)"]
        return []

    def link_options(self) -> dict[str, Any]:
        return {}

    async def open(self) -> None:
        self.link = await acquire(
            self.ctx.links, self.opts["port"], self.opts["baud"], label=self.label, **self.link_options()
        )
        self.link.add_up_listener(self._link_up)

    async def close(self) -> None:
        if self.link is not None:
            link, self.link = self.link, None
            link.remove_up_listener(self._link_up)
            await release(self.ctx.links, link)

    @property
    def generation(self) -> int:
        return self.link.opens if self.link is not None else 0

    def _link_up(self, opens: int) -> None:  # event loop, after the link (re)opened
        if self.link is None:
            return
        self.link_up()
        if self.on_up is not None:
            self.on_up(opens)

    def link_up(self) -> None:
        """The port (re)opened: forget what the device was last told (it may have restarted)."""

    @property
    def state(self) -> str:
        if self._state == "disabled" or self.link is None:
            return "disabled"
        return {"ok": "ok", "closed": "disabled"}.get(self.link.state, "reconnecting")

    @property
    def error(self) -> str | None:
        if self._state == "disabled" or self.link is None:
            return self._error or "not open"
        return self.link.error

    @property
    def faults(self) -> int:
        return self.link.faults if self.link is not None else 0

    def send(self, data: bytes) -> None:
        self.check()
        self.link.write(data)


class BusServoDriver(SerialDriver):
    """Servos with ids on one serial bus; targets in degrees, converted to raw steps."""

    raw_max = 4095
    options = {
        **PORT_OPTIONS,
        "ids": List(Integer(minimum=0, maximum=253), doc="servo ids on the bus, one per channel (e.g. [1, 2] for pan, tilt)",
                    example=[1, 2]),
        "safe_seconds": Duration(0.5, "move time to the home position in the safe state", minimum=0, maximum=60),
    }

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        return len(options["ids"])

    def raw(self, degrees: float) -> int:
        value = round(self.opts["center"] + degrees * self.opts["steps_per_degree"])
        return max(0, min(self.raw_max, value))

    def encode(self, raws: list[int], ms: int) -> bytes:
        raise NotImplementedError

    def move(self, targets: list[float], seconds: float) -> None:
        ms = max(0, min(0xFFFF, round(seconds * 1000)))
        self.send(self.encode([self.raw(t) for t in targets], ms))

    def safe(self) -> None:
        if self.state == "ok":
            self.move(list(self.config.home), self.opts["safe_seconds"])

    def mouth(self, level: float) -> None:
        c = self.config
        self.move([h + level * (m - h) for h, m in zip(c.home, c.maximum)], 0.02)
