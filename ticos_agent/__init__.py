"""ticos-agent: the device agent of a Raspberry Pi-class robot.

Realtime events from the local voice agent come in on ``ws://127.0.0.1:9999/realtime``;
the robot moves, speaks and remembers. ``Agent`` is the asyncio API, ``TicosClient`` the
ticos-client SDK's API, kept working unchanged.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .errors import (
    ActuatorError,
    AudioError,
    BadArguments,
    BadAudio,
    BadEvent,
    ConfigError,
    DriverUnavailable,
    StorageError,
    StoreClosed,
    TicosError,
    UnknownTag,
)

if TYPE_CHECKING:  # what __getattr__ hands out, for type checkers
    from .agent import Agent
    from .client import MemoryType, MessageRole, TicosClient
    from .storage import SaveMode


def __getattr__(name: str) -> object:  # keep `import ticos_agent` light: heavy parts load on first use
    if name == "Agent":
        from .agent import Agent

        return Agent
    if name == "TicosClient":
        from .client import TicosClient

        return TicosClient
    if name == "SaveMode":
        from .storage import SaveMode

        return SaveMode
    if name in ("MessageRole", "MemoryType"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'ticos_agent' has no attribute {name!r}")


__all__ = [
    "ActuatorError",
    "Agent",
    "AudioError",
    "BadArguments",
    "BadAudio",
    "BadEvent",
    "ConfigError",
    "DriverUnavailable",
    "MemoryType",
    "MessageRole",
    "SaveMode",
    "StorageError",
    "StoreClosed",
    "TicosClient",
    "TicosError",
    "UnknownTag",
    "__version__",
]
