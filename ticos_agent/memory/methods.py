"""The agent's memory methods: ``agent.remember``, ``agent.recall``, ``agent.forget``.

A mixin of :class:`ticos_agent.agent.Agent` (kept here so the agent module stays about wiring);
each method goes through the agent's :class:`~.api.Memories`, which exists while the agent
runs with storage on. Bad fields raise :class:`~ticos_agent.errors.BadMemory` naming the
field; no storage, or a store that cannot, :class:`~ticos_agent.errors.StorageError`.

Thread and timing: coroutines of the agent's loop; each awaits the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import StorageError
from .api import Memories
from .model import Hit, Memory


class MemoryMethods:
    memories: Memories | None  # set by the agent while it runs with storage on

    def _memory_off(self) -> str:
        """Why there are no memories now."""
        return "the agent is not running"

    def _memories(self) -> Memories:
        if self.memories is None:
            raise StorageError(f"no memories: {self._memory_off()}")
        return self.memories

    async def remember(self, content: str, kind: str = "fact", **fields: Any) -> Memory:
        """Store a memory (``subject``, ``key``, ``value``, ``confidence``, ``importance``,
        ``title``, ``source``, ``user_id``) and return it as stored; the ``memory`` handlers
        hear ``("stored", {"memory": ..., "via": "api"})``."""
        return await self._memories().remember(content, kind, via="api", **fields)

    async def recall(self, query: str, limit: int = 5, *, messages: bool = True) -> list[Hit]:
        """What matches ``query``, at most ``limit`` (1..50): memories first, best first, then
        (``messages``) what was said."""
        return await self._memories().recall(query, limit, messages=messages)

    async def forget(self, query: str | None = None, ids: Sequence[int] = (), everything: bool = False) -> int:
        """Delete the memories matching ``query``, with these ``ids``, or all; returns how many."""
        return await self._memories().forget(query, ids, everything, via="api")
