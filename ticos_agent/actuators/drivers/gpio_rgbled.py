"""An RGB LED on three PWM-capable GPIO pins (gpiozero ``RGBLED``): the robot's face light.

An expression sets its colour (scaled by brightness and the call's ``intensity``) and pattern:
``solid``, ``pulse`` (fade in and out over ``period`` seconds) or ``blink``. As the
``[robot] mouth`` it shows the audio loudness as white brightness.

Wiring: each colour through a resistor (~220-330 ohm) to a GPIO; common cathode to GND
(``active_high = true``) or common anode to 3.3 V (``active_high = false``).

Example (``pin_factory = "mock"`` simulates the pins)::

    [actuators.face]
    driver = "gpio-rgbled"
    red = 17
    green = 27
    blue = 22
    pin_factory = "mock"
"""

from __future__ import annotations

from typing import Any

from ...options import Boolean, Float, Pin
from ..driver import register_driver
from ._gpio import GPIO_OPTIONS, GpioDriver


@register_driver("gpio-rgbled")
class GpioRGBLED(GpioDriver):
    """RGB LED on three GPIO pins (gpiozero RGBLED)."""

    kind = "light"
    options = {
        "red": Pin(doc="GPIO of the red leg", example=17),
        "green": Pin(doc="GPIO of the green leg", example=27),
        "blue": Pin(doc="GPIO of the blue leg", example=22),
        "active_high": Boolean(True, "true: common cathode; false: common anode"),
        "max_brightness": Float(1.0, "brightness at intensity 1", minimum=0, maximum=1),
        **GPIO_OPTIONS,
    }

    def make_device(self, factory: Any) -> Any:
        from gpiozero import RGBLED

        o = self.opts
        return RGBLED(o["red"], o["green"], o["blue"], active_high=o["active_high"], pin_factory=factory)

    def light(self, rgb, brightness, pattern="solid", period=1.0) -> None:
        scale = max(0.0, min(1.0, brightness)) * self.opts["max_brightness"]
        color = tuple(max(0.0, min(1.0, c * scale)) for c in rgb)
        self.submit(self._show, color, pattern, period)

    def _show(self, color, pattern, period) -> None:
        d = self.device
        if pattern == "pulse":
            d.pulse(fade_in_time=period / 2, fade_out_time=period / 2, on_color=color, off_color=(0, 0, 0))
        elif pattern == "blink":
            d.blink(on_time=period / 2, off_time=period / 2, on_color=color, off_color=(0, 0, 0))
        else:
            d.color = color

    def mouth(self, level: float) -> None:
        if self.state == "ok" and self.worker is not None:
            v = max(0.0, min(1.0, level)) * self.opts["max_brightness"]
            self.worker.submit(setattr, self.device, "color", (v, v, v))
