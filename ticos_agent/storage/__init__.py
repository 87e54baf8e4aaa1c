"""Storage of ticos-agent: where the database lives, its schema, the writer, the read queries.

* :func:`open_store` -> :class:`Store` (async, batched writes; in EXTERNAL mode the TF card is
  checked before each batch, a lost card falls back to ``ticos-fallback.db`` on internal
  storage, and a card that comes back gets the fallback's rows merged: ``card``, ``merge``);
* :func:`resolve_location`, :func:`find_tf_root`, :class:`Location`, :class:`SaveMode`;
* :func:`open_readonly` and the ``read_*``/``count_messages`` functions for offline reading
  of a database (a TF card on another computer) without changing it; the ``iter_*``
  generators stream every row, oldest first (for an export).

Only :mod:`.location` loads with the package; each other name loads its module when it is
first used (``from ticos_agent.storage import SaveMode`` costs a TicosClient without storage
nothing more, and an agent never loads the offline reader).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .location import Location, SaveMode, find_tf_root, resolve_location

if TYPE_CHECKING:
    from .opening import open_store
    from .queries import (
        MAX_LIMIT,
        count_messages,
        iter_calls,
        iter_events,
        iter_memories,
        iter_messages,
        read_calls,
        read_events,
        read_memories,
        read_messages,
    )
    from .reader import ReadonlyConnection, open_readonly
    from .schema import SCHEMA_VERSION
    from .store import Store

_LAZY = {
    "open_store": "opening", "Store": "store", "SCHEMA_VERSION": "schema",
    "ReadonlyConnection": "reader", "open_readonly": "reader",
    **dict.fromkeys(("MAX_LIMIT", "count_messages", "iter_calls", "iter_events", "iter_memories", "iter_messages",
                     "read_calls", "read_events", "read_memories", "read_messages"), "queries"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "MAX_LIMIT", "SCHEMA_VERSION", "Location", "ReadonlyConnection", "SaveMode", "Store",
    "count_messages", "find_tf_root", "iter_calls", "iter_events", "iter_memories", "iter_messages",
    "open_readonly", "open_store", "read_calls", "read_events",
    "read_memories", "read_messages", "resolve_location",
]
