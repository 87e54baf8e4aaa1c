"""Shared parts of the GPIO drivers: pin factory choice, the device's worker thread."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ...options import Choice
from ..driver import Driver, Worker

GPIO_OPTIONS = {
    "pin_factory": Choice(
        ("default", "mock"), "default",
        "'default': gpiozero's own choice (GPIOZERO_PIN_FACTORY, lgpio on a Pi 5); 'mock': simulated pins",
    ),
}


def mock_factory(ctx) -> Any:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    if "mock_factory" not in ctx.shared:
        ctx.shared["mock_factory"] = MockFactory(pin_class=MockPWMPin)
    return ctx.shared["mock_factory"]


def _is_mock(factory: Any) -> bool:
    from gpiozero.pins.mock import MockFactory

    return isinstance(factory, MockFactory)


class GpioDriver(Driver):
    """A gpiozero device driven from its own worker thread."""

    device: Any = None
    worker: Worker | None = None

    @classmethod
    def simulated_for(cls, options: dict[str, Any]) -> bool:
        if options.get("pin_factory") == "mock" or os.environ.get("GPIOZERO_PIN_FACTORY", "").lower() == "mock":
            return True
        from gpiozero import Device

        return _is_mock(Device.pin_factory)

    @property
    def simulated(self) -> bool:
        if self.device is not None:
            return _is_mock(self.device.pin_factory)
        return type(self).simulated_for(self.opts)

    @classmethod
    def check_environment(cls, options: dict[str, Any]) -> list[str]:
        if cls.simulated_for(options):
            return []
        if not os.path.exists("/dev/gpiochip0"):
            return ["no /dev/gpiochip0: not a Raspberry Pi? (use pin_factory = \"mock\" to simulate)"]
        if not os.access("/dev/gpiochip0", os.R_OK | os.W_OK):
            return ["/dev/gpiochip0 is not writable by this user (add it to the 'gpio' group)"]
        return []

    def make_device(self, factory: Any) -> Any:
        raise NotImplementedError

    async def open(self) -> None:
        factory = mock_factory(self.ctx) if self.opts["pin_factory"] == "mock" else None
        self.device = await asyncio.to_thread(self.make_device, factory)
        self.worker = Worker(self.label, on_error=self._fault)

    def _fault(self, exc: BaseException) -> None:  # worker thread
        self._faults += 1
        self._error = f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        worker, device = self.worker, self.device
        self.worker = None  # no new work; what is queued (the safe state) still runs on the device
        if worker is not None:
            await asyncio.to_thread(worker.stop, self.close_timeout())
        self.device = None
        if device is not None:
            try:
                await asyncio.to_thread(device.close)
            except Exception:
                pass

    def close_timeout(self) -> float:
        """How long the queued work (the safe state) may take at close."""
        return 2.0

    def check(self) -> None:
        super().check()
        if self.worker is None:
            from ...errors import DriverUnavailable

            raise DriverUnavailable(f"actuator {self.label!r} is not open")

    def submit(self, fn: Any, *args: Any) -> None:
        self.check()
        self.worker.submit(fn, *args)

    def safe(self) -> None:
        if self.worker is not None:
            self.worker.submit(self.device.off)
