"""The agent's memory methods: remember, recall, forget, the memory topic, memory rounds.

A mixin of :class:`ticos_agent.agent.Agent` (kept here so the agent module stays about wiring);
each method goes through the agent's :class:`~.api.Memories`, which exists while the agent
runs with storage on (made, and :mod:`.api` loaded, when it is first used). Bad fields raise
:class:`~ticos_agent.errors.BadMemory` naming the field; no storage, or a store that cannot,
:class:`~ticos_agent.errors.StorageError`.

Thread and timing: on the agent's loop; the coroutines await the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import StorageError

if TYPE_CHECKING:
    from ..dispatch import Dispatcher
    from ..storage import Store
    from .api import Memories
    from .generation import MemoryGeneration
    from .model import Hit, Memory
    from .summariser import Summariser


class MemoryMethods:
    memory: MemoryGeneration | None  # memory rounds, while it runs with storage on
    _memory_store: Store | None = None  # the store the memories are on, set while the agent runs with it
    _memory_api: Memories | None = None
    dispatcher: Dispatcher
    _summariser: Summariser | None

    if TYPE_CHECKING:
        def _register(self, topic: str, fn: Callable[..., Any] | None, inline: bool) -> Any: ...

    def on_memory(self, fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
        """Handler ``fn(action, payload)`` for every memory stored (``"stored"``, ``{"memory": {...},
        "via": ...}``) or forgotten (``"forgotten"``, ``{"count", "query", "ids", "everything",
        "via"}``), whichever path did it: tools, this API, HTTP, generation."""
        return self._register("memory", fn, inline)

    def emit_memory(self, action: str, payload: dict[str, Any]) -> None:
        """Tell the ``memory`` handlers of a change made elsewhere (memory generation); see
        :mod:`ticos_agent.memory.api`."""
        self.dispatcher.emit("memory", action, payload)

    @property
    def memories(self) -> Memories | None:
        """remember/recall/forget on the store, while the agent runs with storage on."""
        if self._memory_api is None and self._memory_store is not None:
            self._memory_api = self._memories_on(self._memory_store)
        return self._memory_api

    def _memories_on(self, store: Store) -> Memories:
        from .api import Memories

        return Memories(store, self.emit_memory, store)

    def _memories_from(self, store: Store | None) -> None:
        """The memories are on ``store`` from now on (``None``: there are none)."""
        self._memory_store = store
        self._memory_api = None

    def _memory_off(self) -> str:
        """Why there are no memories now."""
        return "the agent is not running"

    def _memories(self) -> Memories:
        memories = self.memories
        if memories is None:
            raise StorageError(f"no memories: {self._memory_off()}")
        return memories

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

    def set_summariser(self, fn: Summariser | None) -> None:
        """Summarise memory rounds with ``fn(messages, latest_memory) -> str`` (a function, run on
        a worker thread, or a coroutine function) instead of ``[memory] base_url``; it turns
        generation on. ``None`` goes back to the config's. See :mod:`ticos_agent.memory.generation`."""
        if fn is not None and not callable(fn):
            raise TypeError("the summariser must be callable: fn(messages, latest_memory) -> str")
        self._summariser = fn
        if self.memory is not None:
            self.memory.set_summariser(fn)

    async def generate_memory(self) -> Memory | None:
        """Run a memory round now (ticos-client's ``generate_memory``): the new long-term memory,
        or ``None`` when nothing was summarised (generation off, nothing new, or it failed)."""
        if self.memory is None:
            return None
        return await self.memory.generate()
