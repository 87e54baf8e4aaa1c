"""Actuators: motion and emotion calls -> work on serial and GPIO drivers.

Public surface (the agent core codes against it):

* :func:`parse_actuators_config` - the whole TOML document (``{}`` without a file) ->
  :class:`ActuatorsConfig` (reads ``robot``, ``actuators``, ``motions``, ``emotions``);
  without ``[actuators]`` you get a simulated robot wired to the default library.
* :class:`ActuatorSystem` - ``start``/``stop``, ``motion``/``emotion`` -> :class:`Outcome`,
  ``interrupt`` (barge-in), ``mouth_level`` (lip sync), ``health``.
* :func:`register_driver` / :data:`DRIVERS` - the driver registry (see :mod:`.driver`).
"""

from __future__ import annotations

from . import drivers as _drivers  # noqa: F401 - registers the built-in drivers
from .config import ActuatorConfig, ActuatorsConfig, parse_actuators_config
from .driver import DRIVERS, Driver, Option, register_driver
from .system import ActuatorSystem, Outcome

__all__ = [
    "ActuatorConfig",
    "ActuatorsConfig",
    "ActuatorSystem",
    "DRIVERS",
    "Driver",
    "Option",
    "Outcome",
    "parse_actuators_config",
    "register_driver",
]
