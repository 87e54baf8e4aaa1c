"""The store's memory methods (:class:`~ticos_agent.memory.model.MemoryStore` on SQLite).

Part of :class:`~.store.Store`. Each method here hands over to its function in
:mod:`.memories` (remember, recall, forget, the summarisation mark), which loads, with the
search and the memory model, when the first of them is called: an agent that stores
conversations but is never asked about memories does not hold them. What each does is said
here, once; how, there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .memory_rows import MemoryRows

if TYPE_CHECKING:
    from ..memory.model import Hit, Memory


class Memories(MemoryRows):
    """``MemoryStore`` on the store's connection and writer; part of ``Store``."""

    async def remember(self, kind: str, content: str, *, subject: str | None = None, key: str | None = None,
                       value: str | None = None, confidence: float | None = None,
                       importance: float | None = None, title: str | None = None, source: str | None = None,
                       user_id: str = "nobody") -> Memory:
        """Store a memory (or find the identical one); returns it once committed."""
        from . import memories as ops

        return await ops.remember(self, kind, content, subject=subject, key=key, value=value, confidence=confidence,
                                  importance=importance, title=title, source=source, user_id=user_id)

    async def mark_summarised(self, upto: int) -> None:
        """Messages up to id ``upto`` are in a ``long_term`` memory (returns once committed)."""
        from . import memories as ops

        await ops.mark_summarised(self, upto)

    async def forget(self, *, query: str | None = None, ids: Sequence[int] = (), everything: bool = False,
                     messages: bool = False) -> int:
        """Delete the memories matching every word of ``query``, with these ``ids``, or all
        (``everything``); with ``messages``, also the messages matching ``query`` (or all
        messages with ``everything``). Returns how many memories (and messages) went."""
        from . import memories as ops

        return await ops.forget(self, query=query, ids=ids, everything=everything, messages=messages)

    async def recall(self, query: str, *, limit: int = 5, messages: bool = True, memories: bool = True
                     ) -> list[Hit]:
        """Memories (unless ``memories`` is false) and messages (unless ``messages`` is false)
        matching ``query``, best first."""
        from . import memories as ops

        return await ops.recall(self, query, limit=limit, messages=messages, memories=memories)

    async def latest_memory(self, kind: str = "long_term") -> Memory | None:
        """The newest memory of ``kind`` (``None``: there is none)."""
        from . import memories as ops

        return await ops.latest_memory(self, kind)

    async def facts(self, limit: int = 50) -> list[Memory]:
        """The newest facts, newest first."""
        from . import memories as ops

        return await ops.facts(self, limit)

    async def unsummarised(self, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` finished messages after the mark, oldest first, and the new mark
        (see :func:`.memories.unsummarised`)."""
        from . import memories as ops

        return await ops.unsummarised(self, limit)
