"""The store's memory methods (:class:`~ticos_agent.memory.model.MemoryStore` on SQLite).

Part of :class:`~.store.Store`. Each method here hands over to its function in
:mod:`.memories` (remember, recall, forget, the summarisation mark), which loads, with the
search and the memory model, when the first of them is called: an agent that stores
conversations but is never asked about memories does not hold them (``ops`` stands for the
module: type checkers see it, the methods reach it through one import). What each does is
said here, once; how, there; ``remember`` takes :class:`~ticos_agent.memory.model.MemoryFields`.

Thread and timing: on the loop, as the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Unpack

from .memory_rows import MemoryRows

if TYPE_CHECKING:
    from ..memory.model import Hit, Memory, MemoryFields
    from . import memories as ops
else:
    class _Ops:
        """:mod:`.memories`, imported at the first use of one of its functions."""

        def __getattr__(self, name: str) -> Any:
            from . import memories

            return getattr(memories, name)

    ops = _Ops()


class Memories(MemoryRows):
    """``MemoryStore`` on the store's connection and writer; part of ``Store``."""

    async def remember(self, kind: str, content: str, **fields: Unpack[MemoryFields]) -> Memory:
        """Store a memory (or find the identical one); returns it once committed."""
        return await ops.remember(self, kind, content, **fields)

    async def mark_summarised(self, upto: int) -> None:
        """Messages up to id ``upto`` are in a ``long_term`` memory (returns once committed)."""
        await ops.mark_summarised(self, upto)

    async def forget(self, *, query: str | None = None, ids: Sequence[int] = (), everything: bool = False,
                     messages: bool = False) -> int:
        """Delete the memories matching every word of ``query``, with these ``ids``, or all
        (``everything``); with ``messages``, also the messages matching ``query`` (or all
        messages with ``everything``). Returns how many memories (and messages) went."""
        return await ops.forget(self, query=query, ids=ids, everything=everything, messages=messages)

    async def recall(self, query: str, *, limit: int = 5, messages: bool = True, memories: bool = True
                     ) -> list[Hit]:
        """Memories (unless ``memories`` is false) and messages (unless ``messages`` is false)
        matching ``query``, best first."""
        return await ops.recall(self, query, limit=limit, messages=messages, memories=memories)

    async def latest_memory(self, kind: str = "long_term") -> Memory | None:
        """The newest memory of ``kind`` (``None``: there is none)."""
        return await ops.latest_memory(self, kind)

    async def facts(self, limit: int = 50) -> list[Memory]:
        """The newest facts, newest first."""
        return await ops.facts(self, limit)

    async def unsummarised(self, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` finished messages after the mark, oldest first, and the new mark
        (see :func:`.memories.unsummarised`)."""
        return await ops.unsummarised(self, limit)
