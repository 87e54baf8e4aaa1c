"""A simulated actuator with no hardware at all: it records what it is told.

``kind`` picks what it stands in for: ``position`` (servos; ``channels`` values per target),
``light`` or ``line``. ``history`` holds ``(loop time, operation, arguments)`` tuples, the last
``keep`` of them; ``fail_open = true`` makes it refuse to open (to see a disabled actuator).

Example::

    [actuators.tail]
    driver = "mock"
    kind = "position"
    min = -45
    max = 45
"""

from __future__ import annotations

import collections
import time
from typing import Any

from ...errors import ActuatorError
from ...options import Boolean, Choice, Integer
from ..driver import Driver, register_driver


@register_driver("mock")
class MockActuator(Driver):
    """Simulated actuator that records every operation (no I/O)."""

    options = {
        "kind": Choice(("position", "light", "line"), "position", "what it simulates"),
        "channels": Integer(1, "values per target (position kind)", minimum=1, maximum=32),
        "keep": Integer(1000, "operations kept in history", minimum=1),
        "fail_open": Boolean(False, "refuse to open (testing)"),
    }

    @classmethod
    def kind_for(cls, options: dict[str, Any]) -> str:
        return options["kind"]

    @classmethod
    def shows_expressions(cls, options: dict[str, Any]) -> bool:
        """A simulated light, and a simulated MCU (as if it had an ``emotion`` line), show every emotion."""
        return options["kind"] in ("light", "line")

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        return options["channels"]

    @classmethod
    def simulated_for(cls, options: dict[str, Any]) -> bool:
        return True

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.kind = self.opts["kind"]  # instance attribute: the system reads driver.kind
        self.history: collections.deque = collections.deque(maxlen=self.opts["keep"])

    def _rec(self, op: str, *args: Any) -> None:
        self.check()
        self.history.append((time.monotonic(), op, args))

    async def open(self) -> None:
        if self.opts["fail_open"]:
            raise ActuatorError("mock actuator told to fail at open (fail_open = true)")

    def safe(self) -> None:
        if self.state == "ok":
            self._rec("safe")

    def move(self, targets, seconds) -> None:
        if self.kind == "light":
            return super().move(targets, seconds)
        self._rec("move", list(targets), seconds)

    def light(self, rgb, brightness, pattern="solid", period=1.0) -> None:
        if self.kind != "light":
            return super().light(rgb, brightness, pattern, period)
        self._rec("light", tuple(rgb), brightness, pattern, period)

    def line(self, template, values) -> None:
        if self.kind != "line":
            return super().line(template, values)
        self._rec("line", template, dict(values))

    def mouth(self, level: float) -> None:
        if self.state == "ok":
            self.history.append((time.monotonic(), "mouth", (level,)))
