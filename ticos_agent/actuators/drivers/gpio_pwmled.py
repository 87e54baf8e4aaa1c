"""A single LED (or LED strip through a MOSFET) on one PWM GPIO (gpiozero ``PWMLED``).

An expression sets its brightness (the colour is ignored): ``solid``, ``pulse`` or ``blink``
(the patterns use gpiozero's own, at full amplitude). As the ``[robot] mouth`` its brightness
follows the audio loudness.

Wiring: GPIO -> resistor (~330 ohm) -> LED -> GND; for a strip use a logic-level MOSFET.

Example::

    [actuators.mouth]
    driver = "gpio-pwmled"
    pin = 18
    pin_factory = "mock"

    [robot]
    mouth = "mouth"
"""

from __future__ import annotations

from typing import Any

from ...options import Boolean, Float, Integer, Pin
from ..driver import register_driver
from ._gpio import GPIO_OPTIONS, GpioDriver


@register_driver("gpio-pwmled")
class GpioPWMLED(GpioDriver):
    """LED with PWM brightness on one GPIO (gpiozero PWMLED)."""

    kind = "light"
    options = {
        "pin": Pin(doc="GPIO of the LED", example=18),
        "active_high": Boolean(True, "true: the pin drives the LED's anode"),
        "frequency": Integer(100, "PWM frequency, Hz", minimum=1, maximum=10000),
        "max_brightness": Float(1.0, "brightness at intensity 1", minimum=0, maximum=1),
        **GPIO_OPTIONS,
    }

    def make_device(self, factory: Any) -> Any:
        from gpiozero import PWMLED

        o = self.opts
        return PWMLED(o["pin"], active_high=o["active_high"], frequency=o["frequency"], pin_factory=factory)

    def light(self, rgb, brightness, pattern="solid", period=1.0) -> None:
        value = max(0.0, min(1.0, brightness)) * self.opts["max_brightness"]
        self.submit(self._show, value, pattern, period)

    def _show(self, value, pattern, period) -> None:
        d = self.device
        if pattern == "pulse":
            d.pulse(fade_in_time=period / 2, fade_out_time=period / 2)
        elif pattern == "blink":
            d.blink(on_time=period / 2, off_time=period / 2)
        else:
            d.value = value

    def mouth(self, level: float) -> None:
        if self.state == "ok" and self.worker is not None:
            self.worker.submit(setattr, self.device, "value", max(0.0, min(1.0, level)) * self.opts["max_brightness"])
