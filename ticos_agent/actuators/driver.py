"""The driver contract: what a driver class declares and what its instances do.

A driver turns an actuator's abstract work into I/O. Every built-in driver is one module under
``ticos_agent/actuators/drivers/`` holding one (or a few closely related) classes decorated
with :func:`register_driver`; the package imports every module in that folder, so a new driver
needs no change anywhere else. Third-party drivers come from the entry-point group
``ticos_agent.drivers`` (see :mod:`.registry`).

Each driver class keeps its manual in its docstring: what it drives, the wiring, and a
runnable ``[actuators.NAME]`` example (``port = "loop://"`` or ``pin_factory = "mock"`` runs
anywhere).

What a driver class declares
----------------------------

``options``
    Its config keys, ``{key: Option}`` in the vocabulary of :mod:`ticos_agent.options`
    (``Integer``, ``Device``, ``Pin``, ``List`` ...), each with its default and one line of
    documentation. The config loader checks an actuator's table against them (plus the keys
    every actuator has: ``driver``, ``role``, ``min``, ``max``, ``home``, ``interpolate``,
    ``step``) and fills in the defaults; ``ticos-agent config --example`` prints them.
    ``validate(options, key)`` adds cross-field checks (raise ``ConfigError`` under ``key``).

The checked options reach the driver as :data:`DriverOptions` (``{key: value}``, each value
of the type its ``Option`` converts to); a driver narrows ``opts`` to a ``TypedDict`` of its
own keys (``opts: BuzzerOptions``) so the type checker knows each value's type.

Capabilities, asked with the actuator's checked options; the config and the planner ask
these instead of ever looking at a driver's name:

``kind_for(options)``
    ``"position"`` (servos: targets in degrees), ``"light"`` (LEDs: colour and brightness) or
    ``"line"`` (a microcontroller taking text lines). Default: the class's ``kind``.
``channels(options)``
    How many values one target has (a bus with servos 1 and 2 has 2). Default 1.
``limits_for(options)``
    ``(min, max, home)`` in degrees when the config gives none (position kind). Default:
    ``default_limits``.
``follows_keyframes(options)``
    Whether ``[motions.*]`` keyframes can be sent to it (``move``). Default: position kind.
``shows_expressions(options)``
    Whether every emotion is shown on it (``light``, or ``line`` for an MCU). Default: light kind.
``played_motions(options)``
    ``{tag: seconds at speed 1}`` of motions the device plays by itself; each becomes a motion
    tag that sends ``line("motion", ...)``. Default: none.
``timed_moves``
    Whether the hardware takes a move time (if not, the system interpolates keyframes).
``simulated_for(options)`` / ``check_environment(options)``
    Whether it moves real hardware; human-readable problems found before opening (used by
    ``ticos-agent doctor`` and logged at start).

What an instance does
---------------------

Instances are created with the actuator's config and a :class:`DriverContext`. All methods
except ``open``/``close`` are called on the event loop thread and must not block: serial
drivers hand bytes to a writer thread (:mod:`.serial_link`), GPIO drivers hand calls to a
:class:`Worker` thread. ``safe`` applies the safe state; ``move``/``light``/``line``/``mouth``
carry out work.

A driver whose device can appear or come back while the agent runs (a serial port) calls
``self.on_up(generation)`` on the event loop each time it does; the actuator system sets
``on_up`` and answers by applying the safe state. ``generation`` counts the device's opens.

A minimal driver (see ``tests/test_actuator_plugins.py`` for one installed as a plug-in)::

    from typing import TypedDict

    from ticos_agent.actuators import Driver, register_driver
    from ticos_agent.options import Pin

    class BuzzerOptions(TypedDict):
        pin: int | str

    @register_driver("buzzer")
    class Buzzer(Driver):
        '''A buzzer that beeps at each keyframe.'''

        options = {"pin": Pin(doc="GPIO of the buzzer", example=4)}
        opts: BuzzerOptions

        def move(self, targets: list[float], seconds: float) -> None:
            ...
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from ..errors import ActuatorError, DriverUnavailable
from ..options import Boolean, Duration, Option, dump_table, setting

if TYPE_CHECKING:
    from .serial_link import SerialLink

log = logging.getLogger(__name__)

#: An actuator's driver options after the config checked them against the driver's
#: ``options``: key -> value of the type that key's ``Option`` converts to. Drivers narrow
#: their ``opts`` to a ``TypedDict`` of their own keys.
DriverOptions: TypeAlias = Mapping[str, object]

#: ``step``: how finely keyframes are interpolated for hardware without a move time.
STEP = Duration(0.02, "interpolation step", minimum=0.005, maximum=0.5)
#: ``noisy``: the actuator is held still while the user speaks (a servo near the microphone).
NOISY = Boolean(False, "held still while the user speaks (a servo near the microphone)")

#: name -> driver class: the built-in drivers (registered when ``drivers`` is imported) and the
#: plug-ins loaded so far (see :mod:`.registry`).
DRIVERS: dict[str, type[Driver]] = {}


def register_driver(name: str) -> Callable[[type[Driver]], type[Driver]]:
    """Class decorator: make a driver available as ``driver = "<name>"`` in the config."""

    def deco(cls: type[Driver]) -> type[Driver]:
        if name in DRIVERS and DRIVERS[name] is not cls:
            raise ValueError(f"driver {name!r} is registered twice ({DRIVERS[name].__name__}, {cls.__name__})")
        cls.name = name
        DRIVERS[name] = cls
        return cls

    return deco

__all__ = ["DRIVERS", "ActuatorConfig", "Driver", "DriverContext", "DriverOptions", "Option", "Worker",
           "register_driver"]


@dataclass(frozen=True)
class ActuatorConfig:
    """One ``[actuators.NAME]`` table, checked (see :mod:`.config`): what a driver is created with."""

    name: str
    driver: str
    role: str
    kind: str
    channels: int
    options: DriverOptions
    minimum: tuple[float, ...] = ()
    maximum: tuple[float, ...] = ()
    home: tuple[float, ...] = ()
    interpolate: bool = False
    step: float = setting(STEP)
    simulated: bool = False
    #: capabilities of its driver for these options (see :mod:`.driver`)
    follows_keyframes: bool = False
    shows_expressions: bool = False
    #: held still while the user speaks (servos near the microphone)
    noisy: bool = setting(NOISY)

    def clamp(self, target: tuple[float, ...] | list[float]) -> list[float]:
        if not self.minimum:
            return list(target)
        return [min(max(v, lo), hi) for v, lo, hi in zip(target, self.minimum, self.maximum)]

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        cls = DRIVERS.get(self.driver)  # registered when the config was checked
        options = dump_table(self.options, cls.options, mask_secrets=mask_secrets) if cls else dict(self.options)
        out: dict[str, Any] = {"driver": self.driver, "role": self.role, **options}
        if self.noisy:
            out["noisy"] = True
        if self.minimum:
            out.update(min=list(self.minimum), max=list(self.maximum), home=list(self.home),
                       interpolate=self.interpolate, step=self.step)
        return out


@dataclass
class DriverContext:
    """What the actuator system shares with its drivers: the serial links by port, and
    ``shared`` objects such as the mock pin factory (by name)."""

    links: dict[str, SerialLink] = field(default_factory=dict)
    shared: dict[str, object] = field(default_factory=dict)


class Driver:
    """Base class of every driver. Subclasses override what their hardware can do."""

    name: ClassVar[str] = ""
    kind: str = "position"  # a class attribute (the mock driver sets it per instance)
    timed_moves: ClassVar[bool] = True
    options: ClassVar[dict[str, Option]] = {}
    #: (min, max, home) in degrees when the config gives none (position kind only)
    default_limits: ClassVar[tuple[float, float, float]] = (-90.0, 90.0, 0.0)

    # --- capabilities (see the module docstring) ---------------------------------------

    @classmethod
    def kind_for(cls, options: DriverOptions) -> str:
        return cls.kind

    @classmethod
    def channels(cls, options: DriverOptions) -> int:
        return 1

    @classmethod
    def limits_for(cls, options: DriverOptions) -> tuple[float, float, float]:
        return cls.default_limits

    @classmethod
    def follows_keyframes(cls, options: DriverOptions) -> bool:
        return cls.kind_for(options) == "position"

    @classmethod
    def shows_expressions(cls, options: DriverOptions) -> bool:
        return cls.kind_for(options) == "light"

    @classmethod
    def played_motions(cls, options: DriverOptions) -> dict[str, float]:
        return {}

    @classmethod
    def check_environment(cls, options: DriverOptions) -> list[str]:
        return []

    @classmethod
    def validate(cls, options: DriverOptions, key: str) -> None:
        """Cross-field checks after each option was checked; raise ConfigError(s) under ``key``."""

    @classmethod
    def simulated_for(cls, options: DriverOptions) -> bool:
        return False

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The driver as plain data: name, kind, first docstring line, and each option."""
        return {
            "name": cls.name,
            "kind": cls.kind,
            "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
            "options": {
                k: {"type": type(o).__name__, "expected": o.describe(), "default": None if o.required else o.sample(),
                    "required": o.required, "doc": o.doc}
                for k, o in cls.options.items()
            },
        }

    def __init__(self, config: ActuatorConfig, ctx: DriverContext):
        self.config = config
        self.label = config.name
        self.opts: DriverOptions = config.options
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
            raise DriverUnavailable(
                f"actuator {self.label!r} ({self.name}) is {self.state}: {self.error or 'no detail'}")

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

    def light(self, rgb: tuple[float, float, float], brightness: float, pattern: str = "solid",
              period: float = 1.0) -> None:
        raise ActuatorError(f"actuator {self.label!r} ({self.name}) is not a light")

    def line(self, template: str, values: Mapping[str, object]) -> None:
        raise ActuatorError(f"actuator {self.label!r} ({self.name}) does not take command lines")

    def mouth(self, level: float) -> None:
        """Show a 0..1 loudness (the ``[robot] mouth`` actuator)."""


class Worker:
    """One thread that runs submitted calls in order (GPIO libraries block, briefly)."""

    def __init__(self, label: str, on_error: Callable[[BaseException], None] | None = None):
        self.label = label
        self._q: queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]] | None] = queue.SimpleQueue()
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=f"ticos-{label}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        self._q.put((fn, args))

    def call(self, fn: Callable[..., object], *args: object) -> threading.Event:
        """Like :meth:`submit`; the event is set once ``fn`` returned (never if it raised)."""
        done = threading.Event()

        def run() -> None:
            fn(*args)
            done.set()

        self._q.put((run, ()))
        return done

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException as exc:
                log.warning("%s: %s", self.label, exc)
                if self._on_error:
                    self._on_error(exc)

    def stop(self, timeout: float = 2.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)
