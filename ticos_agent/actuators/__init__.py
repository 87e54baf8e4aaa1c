"""Actuators: motion and emotion calls -> work on serial and GPIO drivers.

Public surface (the agent core codes against it):

* :func:`parse_actuators_config` - the whole TOML document (``{}`` without a file) ->
  :class:`ActuatorsConfig` (reads ``robot``, ``actuators``, ``motions``, ``emotions``);
  without ``[actuators]`` you get a simulated robot wired to the default library.
* :class:`ActuatorSystem` - ``start``/``stop``, ``motion``/``emotion`` -> :class:`Outcome`,
  ``interrupt`` (barge-in), ``mouth_level`` (lip sync), ``health``.
* :class:`Driver` - the driver contract and its capabilities (see :mod:`.driver`);
  :func:`register_driver` / :data:`DRIVERS` / :func:`driver_class` - the registry, which also
  loads third-party drivers from the ``ticos_agent.drivers`` entry points (see :mod:`.registry`).
"""

from __future__ import annotations

from ..options import Option
from . import drivers as _drivers  # noqa: F401 - registers the built-in drivers
from .config import ActuatorsConfig, parse_actuators_config
from .driver import DRIVERS, ActuatorConfig, Driver, register_driver
from .lanes import Outcome
from .registry import driver_class
from .system import ActuatorSystem

__all__ = [
    "DRIVERS",
    "ActuatorConfig",
    "ActuatorSystem",
    "ActuatorsConfig",
    "Driver",
    "Option",
    "Outcome",
    "driver_class",
    "parse_actuators_config",
    "register_driver",
]
