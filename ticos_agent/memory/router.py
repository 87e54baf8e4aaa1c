"""The memory tools as the calls intake sees them, light until one is called.

:class:`MemoryToolRouter` answers :meth:`~MemoryToolRouter.handles` from the tools' names
alone; the first memory call loads :mod:`.tools` (and with it the memory API and the
store's memory queries) and makes the :class:`~.tools.MemoryCalls` every later call uses.

Thread and timing: on the loop, in the intake's path (as :class:`~.tools.MemoryCalls`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import NAMES

if TYPE_CHECKING:
    from ..events import FunctionCall
    from .api import Memories
    from .tools import MemoryArgs, MemoryCalls


class MemoryToolRouter:
    """:class:`~.tools.MemoryCalls` made at the first memory call, from ``memories()``;
    ``taken`` and ``respond_after_recall`` as there."""

    def __init__(self, memories: Callable[[], Memories], *, taken: Callable[[str], bool],
                 respond_after_recall: bool = True):
        self._memories = memories
        self._taken = taken
        self._respond_after_recall = respond_after_recall
        self._calls: MemoryCalls | None = None

    def calls(self) -> MemoryCalls:
        if self._calls is None:
            from .tools import MemoryCalls

            self._calls = MemoryCalls(self._memories(), taken=self._taken,
                                      respond_after_recall=self._respond_after_recall)
        return self._calls

    def handles(self, name: str) -> bool:
        return name in NAMES and not self._taken(name)

    def arguments(self, call: FunctionCall) -> MemoryArgs:
        return self.calls().arguments(call)

    def survives_interruption(self, name: str) -> bool:
        return self.calls().survives_interruption(name)

    def always_answered(self, name: str, outcome: dict[str, Any]) -> bool:
        return self.calls().always_answered(name, outcome)

    def respond_after(self, name: str) -> bool:
        return self.calls().respond_after(name)

    async def run(self, args: MemoryArgs) -> dict[str, Any]:
        return await self.calls().run(args)
