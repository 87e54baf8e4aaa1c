"""The driver registry: the built-in drivers and third-party ones from entry points.

Built-in drivers are the modules of ``ticos_agent/actuators/drivers/``; each registers its
classes with :func:`register_driver` when imported. A separately installed package adds a
driver with an entry point in the group ``ticos_agent.drivers``::

    # pyproject.toml of a package "ticos-tiny-driver"
    [project.entry-points."ticos_agent.drivers"]
    tiny = "tiny_driver:TinyDriver"

:data:`~.driver.DRIVERS` holds what is registered so far. The entry point's name is what a config writes (``driver = "tiny"``); its object is a
:class:`~ticos_agent.actuators.driver.Driver` subclass. Entry points are read the first time
a config names a driver that is not built in, or when every driver is listed
(``ticos-agent config --example``, ``ticos-agent doctor``), so a robot with built-in drivers
only never scans them. A plug-in that fails to import, is not a ``Driver`` subclass or reuses
a built-in's name is logged and skipped: the agent keeps serving, and a config that names it
gets an error saying why (:data:`FAILED`).
"""

from __future__ import annotations

import logging

from .driver import DRIVERS, Driver, register_driver

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ticos_agent.drivers"

#: plug-in name -> why it could not be loaded.
FAILED: dict[str, str] = {}

_plugins_read = False


def _builtins() -> None:
    from . import drivers  # noqa: F401 - imports (and so registers) every built-in driver


def load_plugins() -> None:
    """Read the ``ticos_agent.drivers`` entry points once and register what loads."""
    global _plugins_read
    if _plugins_read:
        return
    _plugins_read = True
    _builtins()
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"{ep.value} from {ep.dist.name if ep.dist else 'an unknown package'}"
        if ep.name in DRIVERS:
            log.warning("driver plug-in %r (%s) skipped: a driver of that name is built in", ep.name, origin)
            continue
        try:
            cls = ep.load()
        except Exception as exc:
            FAILED[ep.name] = f"{type(exc).__name__}: {exc}"
            log.error("driver plug-in %r (%s) failed to load and is skipped: %s", ep.name, origin, FAILED[ep.name])
            continue
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            FAILED[ep.name] = f"{ep.value} is not a ticos_agent Driver subclass"
            log.error("driver plug-in %r (%s) skipped: %s", ep.name, origin, FAILED[ep.name])
            continue
        if DRIVERS.get(ep.name) is not cls:
            register_driver(ep.name)(cls)
        log.info("driver plug-in %r loaded (%s)", ep.name, origin)


def driver_class(name: object) -> type[Driver] | None:
    """The class of driver ``name``: built in, or a plug-in (entry points read on a miss)."""
    _builtins()
    if not isinstance(name, str):
        return None
    if name not in DRIVERS:
        load_plugins()
    return DRIVERS.get(name)


def available() -> dict[str, type[Driver]]:
    """Every driver: built in and plug-ins (reads the entry points)."""
    load_plugins()
    return dict(sorted(DRIVERS.items()))
