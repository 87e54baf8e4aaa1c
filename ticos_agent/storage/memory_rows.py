"""The store's row reader for memory code, and the read an agent makes at start.

Part of :class:`~.store.Store` (through :class:`~.memory_methods.Memories`): ``_rows`` and
``_has`` read on the store's connection, and :meth:`MemoryRows.recent_messages` gives the
last finished messages, which session_config takes at start. The other memory methods are
in :mod:`.memories`, which loads with the first of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiosqlite

from ..errors import StorageError, describe
from .indexer import Indexer

if TYPE_CHECKING:
    from .writes import Params

#: Messages that are over (what summaries, session_config and priming take).
FINISHED = ("role IN ('user', 'assistant') AND content <> '' AND "
            "(status IS NULL OR status IN ('completed', 'incomplete', 'cancelled'))")


def message_of(row: Sequence[Any]) -> dict[str, Any]:
    return {"id": row[0], "role": row[1], "content": row[2], "datetime": row[3]}


class MemoryRows(Indexer):
    """Reads on the store's connection; part of ``Store``."""

    if TYPE_CHECKING:  # Store's methods
        def _op(self, sql: str, params: Params) -> None: ...
        async def flush(self) -> None: ...

    async def _rows(self, sql: str, params: Sequence[Any] = (), db: aiosqlite.Connection | None = None
                    ) -> list[tuple[Any, ...]]:
        try:
            async with (db or self._db).execute(sql, tuple(params)) as cursor:
                return [tuple(row) for row in await cursor.fetchall()]
        except (aiosqlite.Error, ValueError) as exc:
            raise StorageError(f"reading {self.location.path} failed: {describe(exc)}") from exc

    async def _has(self, name: str, db: aiosqlite.Connection | None = None) -> bool:
        return bool(await self._rows("SELECT 1 FROM sqlite_master WHERE name = ?", (name,), db))

    async def recent_messages(self, count: int) -> list[dict[str, Any]]:
        """The last ``count`` finished user/assistant messages, oldest first."""
        rows = await self._rows(f"SELECT id, role, content, datetime FROM messages WHERE {FINISHED} "
                                "ORDER BY rowid DESC LIMIT ?", (max(0, int(count)),))
        return [message_of(r) for r in reversed(rows)]
