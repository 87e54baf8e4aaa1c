"""The driver contract and the registry of drivers.

A driver turns an actuator's abstract work into I/O. Every driver is one module under
``ticos_agent/actuators/drivers/`` holding one (or a few closely related) classes decorated
with :func:`register_driver`; the package imports every module in that folder, so a new driver
needs no change anywhere else.

A driver class describes itself:

* ``name`` (set by the decorator), ``kind`` (``"position"``: servos, targets in degrees;
  ``"light"``: LEDs, colour and brightness; ``"line"``: a microcontroller speaking text lines),
* ``options``: its config schema, ``{key: Option(type, default, doc)}``; the config loader
  validates an actuator's table against it and fills the defaults,
* ``channels(options)``: how many values one target has (a bus with servos 1 and 2 has 2),
* ``timed_moves``: whether the hardware takes a move time (if not, the system interpolates),
* ``check_environment(options)``: human-readable problems found before opening (used by
  ``ticos-agent doctor``), and ``simulated_for(options)``: whether it moves real hardware.

A driver whose device can appear or come back while the agent runs (a serial port) calls
``self.on_up(generation)`` on the event loop each time it does; the actuator system sets
``on_up`` and answers by applying the safe state. ``generation`` counts the device's opens.

Instances are created with the actuator's config and a :class:`DriverContext`. All methods
except ``open``/``close`` are called on the event loop thread and must not block: serial
drivers hand bytes to a writer thread (:mod:`.serial_link`), GPIO drivers hand calls to a
:class:`Worker` thread.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from ..errors import ActuatorError, ConfigError, DriverUnavailable

log = logging.getLogger("ticos_agent.actuators")

#: name -> driver class. Filled by :func:`register_driver` when ``drivers`` is imported.
DRIVERS: dict[str, type["Driver"]] = {}

REQUIRED = object()


def register_driver(name: str) -> Callable[[type["Driver"]], type["Driver"]]:
    """Class decorator: make a driver available as ``driver = "<name>"`` in the config."""

    def deco(cls: type[Driver]) -> type[Driver]:
        if name in DRIVERS and DRIVERS[name] is not cls:
            raise ValueError(f"driver {name!r} is registered twice ({DRIVERS[name].__name__}, {cls.__name__})")
        cls.name = name
        DRIVERS[name] = cls
        return cls

    return deco


@dataclass(frozen=True)
class Option:
    """One config key of a driver: ``type`` is one of the names in :data:`TYPES`."""

    type: str
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        text = TYPES[self.type][1]
        if self.minimum is not None and self.maximum is not None:
            text += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum is not None:
            text += f" >= {self.minimum:g}"
        return text

    def validate(self, key: str, value: Any) -> Any:
        check, _ = TYPES[self.type]
        try:
            value = check(value)
        except (TypeError, ValueError):
            raise ConfigError(key, value, self.describe()) from None
        if self.choices and value not in self.choices:
            raise ConfigError(key, value, self.describe())
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if (self.minimum is not None and v < self.minimum) or (self.maximum is not None and v > self.maximum):
                    raise ConfigError(key, value, self.describe())
        return value


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError
    return v


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TypeError
    return float(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError
    return v


def _opt_str(v: Any) -> str | None:
    return None if v is None or v == "" else _str(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError
    return v


def _list(item: Callable[[Any], Any]) -> Callable[[Any], list]:
    def check(v: Any) -> list:
        if not isinstance(v, list) or not v:
            raise TypeError
        return [item(x) for x in v]

    return check


def _pin(v: Any) -> int | str:
    if isinstance(v, str) and v.strip():
        return v.strip()
    return _int(v)


def _seconds_map(v: Any) -> dict[str, float]:
    if not isinstance(v, dict):
        raise TypeError
    out = {}
    for k, x in v.items():
        x = _float(x)
        if x < 0:
            raise ValueError
        out[str(k)] = x
    return out


#: type name -> (checker, description used in error messages)
TYPES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "int": (_int, "a whole number"),
    "float": (_float, "a number"),
    "str": (_str, "a string"),
    "str?": (_opt_str, "a string (or empty for none)"),
    "bool": (_bool, "true or false"),
    "pin": (_pin, 'a GPIO number (17) or a pin name ("GPIO17", "BOARD11")'),
    "list[int]": (_list(_int), "a non-empty list of whole numbers"),
    "seconds-map": (_seconds_map, "a table of tag = seconds (numbers >= 0)"),
}


@dataclass
class DriverContext:
    """What the actuator system shares with its drivers (serial links, mock pin factory)."""

    links: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)


class Driver:
    """Base class of every driver. Subclasses override what their hardware can do."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "position"
    timed_moves: ClassVar[bool] = True
    options: ClassVar[dict[str, Option]] = {}
    #: (min, max, home) in degrees when the config gives none (position kind only)
    default_limits: ClassVar[tuple[float, float, float]] = (-90.0, 90.0, 0.0)

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        return 1

    @classmethod
    def check_environment(cls, options: dict[str, Any]) -> list[str]:
        return []

    @classmethod
    def validate(cls, options: dict[str, Any], key: str) -> None:
        """Cross-field checks after the schema; raise ConfigError under ``key``."""

    @classmethod
    def simulated_for(cls, options: dict[str, Any]) -> bool:
        return False

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "kind": cls.kind,
            "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
            "options": {
                k: {"type": o.type, "default": None if o.required else o.default, "required": o.required, "doc": o.doc}
                for k, o in cls.options.items()
            },
        }

    def __init__(self, config: Any, ctx: DriverContext):
        self.config = config
        self.label = config.name
        self.opts: dict[str, Any] = config.options
        self.ctx = ctx
        self._state = "ok"
        self._error: str | None = None
        self._faults = 0
        #: set by the actuator system: called on the loop with ``generation`` when the device is (back) up
        self.on_up: Callable[[int], None] | None = None

    @property
    def generation(self) -> int:
        """How many times the device has been opened (drivers that never reopen: 0)."""
        return 0

    @property
    def faults(self) -> int:
        """Faults seen after writes were accepted (a command compares it before and after)."""
        return self._faults

    # --- state ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"ok"``, ``"disabled"`` or ``"reconnecting"``."""
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def simulated(self) -> bool:
        return type(self).simulated_for(self.opts)

    def disable(self, error: str) -> None:
        self._state, self._error = "disabled", error

    def check(self) -> None:
        """Raise :class:`DriverUnavailable` when commands cannot be carried out right now."""
        if self.state != "ok":
            raise DriverUnavailable(f"actuator {self.label!r} ({self.name}) is {self.state}: {self.error or 'no detail'}")

    # --- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Open the device. Raise to have the actuator disabled (the error is logged)."""

    async def close(self) -> None:
        """Release the device. Must not raise."""

    # --- work (loop thread, non-blocking) ---------------------------------------------

    def safe(self) -> None:
        """Apply the safe state (home / off / stop)."""

    def move(self, targets: list[float], seconds: float) -> None:
        raise ActuatorError(f"actuator {self.label!r} ({self.name}) cannot move to a position")

    def light(self, rgb: tuple[float, float, float], brightness: float, pattern: str = "solid", period: float = 1.0) -> None:
        raise ActuatorError(f"actuator {self.label!r} ({self.name}) is not a light")

    def line(self, template: str, values: dict[str, Any]) -> None:
        raise ActuatorError(f"actuator {self.label!r} ({self.name}) does not take command lines")

    def mouth(self, level: float) -> None:
        """Show a 0..1 loudness (the ``[robot] mouth`` actuator)."""


class Worker:
    """One thread that runs submitted calls in order (GPIO libraries block, briefly)."""

    def __init__(self, label: str, on_error: Callable[[BaseException], None] | None = None):
        self.label = label
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=f"ticos-{label}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._q.put((fn, args))

    def call(self, fn: Callable[..., Any], *args: Any) -> "threading.Event":
        done = threading.Event()
        self._q.put((lambda: (fn(*args), done.set()), ()))
        return done

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported, never kills the thread
                log.warning("%s: %s", self.label, exc)
                if self._on_error:
                    self._on_error(exc)

    def stop(self, timeout: float = 2.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)
