"""A hobby servo on one GPIO (gpiozero ``AngularServo``): targets in degrees.

Hobby servos take no move time, so keyframes are interpolated in ``step`` second steps by the
actuator system (``interpolate`` defaults to true for this driver). Software PWM jitters on a
busy Pi; a hardware PWM pin (GPIO 12/13/18/19) with the lgpio factory is steadier.

``detach_when_safe`` stops the pulses after homing so the servo goes limp (no hum, no
current); the worker thread first waits ``safe_seconds`` for the servo to reach home, and
skips the detach when new work arrives meanwhile.

Wiring: signal to the GPIO, servo power from its own 5-6 V supply (not the Pi's 5 V pin),
grounds joined.

Example::

    [actuators.arm]
    driver = "gpio-servo"
    pin = 12
    min = -10
    max = 90
    pin_factory = "mock"
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ...options import Boolean, Duration, Float, Pin
from ..driver import register_driver
from ._gpio import GPIO_OPTIONS, GpioDriver


@register_driver("gpio-servo")
class GpioServo(GpioDriver):
    """Hobby (angular) servo on one GPIO pin (gpiozero AngularServo)."""

    timed_moves = False
    options = {
        "pin": Pin(doc="GPIO of the signal wire", example=12),
        "min_angle": Float(-90.0, "angle at min_pulse_width, degrees (the actuator's default min)"),
        "max_angle": Float(90.0, "angle at max_pulse_width, degrees (the actuator's default max)"),
        "min_pulse_width": Float(1.0, "pulse width at min_angle, milliseconds", minimum=0.1, maximum=5),
        "max_pulse_width": Float(2.0, "pulse width at max_angle, milliseconds", minimum=0.1, maximum=5),
        "frame_width": Float(20.0, "time between pulses, milliseconds", minimum=5, maximum=50),
        "detach_when_safe": Boolean(False, "stop the pulses after homing (servo goes limp)"),
        "safe_seconds": Duration(0.5, "time the servo gets to reach home before it is detached", minimum=0, maximum=10),
        **GPIO_OPTIONS,
    }

    @classmethod
    def limits_for(cls, options: dict[str, Any]) -> tuple[float, float, float]:
        """The servo's own angle range; home is 0 degrees, or the nearest end of the range."""
        lo, hi = sorted((options["min_angle"], options["max_angle"]))
        return lo, hi, min(max(0.0, lo), hi)

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._busy = threading.Event()  # set by any work after a safe state: do not detach

    def make_device(self, factory: Any) -> Any:
        from gpiozero import AngularServo

        o = self.opts
        return AngularServo(
            o["pin"], initial_angle=None, min_angle=o["min_angle"], max_angle=o["max_angle"],
            min_pulse_width=o["min_pulse_width"] / 1000, max_pulse_width=o["max_pulse_width"] / 1000,
            frame_width=o["frame_width"] / 1000, pin_factory=factory,
        )

    def _angle(self, degrees: float) -> float:
        lo, hi = sorted((self.opts["min_angle"], self.opts["max_angle"]))
        return max(lo, min(hi, degrees))

    def move(self, targets: list[float], seconds: float) -> None:
        self.submit(setattr, self.device, "angle", self._angle(targets[0]))
        self._busy.set()

    def safe(self) -> None:
        if self.worker is not None:
            self._busy.clear()
            self.worker.submit(setattr, self.device, "angle", self._angle(self.config.home[0]))
            if self.opts["detach_when_safe"]:
                deadline = time.monotonic() + self.opts["safe_seconds"]  # counted from now, not from its turn
                self.worker.submit(self._detach_when_home, self.device, deadline)

    def close_timeout(self) -> float:
        # at stop the servo goes home, then limp after safe_seconds: let it finish
        return 2.0 + (self.opts["safe_seconds"] if self.opts["detach_when_safe"] else 0.0)

    def _detach_when_home(self, device: Any, deadline: float) -> None:  # worker thread
        if not self._busy.wait(max(0.0, deadline - time.monotonic())):
            device.detach()

    def mouth(self, level: float) -> None:
        if self.state == "ok" and self.worker is not None:
            self._busy.set()
            c = self.config
            self.worker.submit(setattr, self.device, "angle", self._angle(c.home[0] + level * (c.maximum[0] - c.home[0])))
