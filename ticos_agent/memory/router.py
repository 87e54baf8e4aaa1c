"""The memory tools as the calls intake sees them, light until one is called.

:class:`MemoryToolRouter` says which calls it takes, whether they survive a barge-in and how
they are answered from the tools' names alone; checking a call's arguments loads :mod:`.tools`,
and carrying one out loads the memory API and the store's memory queries with it.

Thread and timing: on the loop. :meth:`~MemoryToolRouter.arguments` runs in the intake's path
(pure checks); :meth:`~MemoryToolRouter.run` is awaited in the call's own task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import NAMES

if TYPE_CHECKING:
    from ..arguments import FunctionCall
    from .api import Memories
    from .tools import MemoryArgs


class MemoryToolRouter:
    """Carries out memory calls for the calls intake.

    ``memories()`` is the store's memory API, asked for at each call (it raises
    :class:`~ticos_agent.errors.StorageError` when there is none: the call fails with that);
    ``taken(name)`` says whether an integrator's own handler takes calls of that name;
    ``respond_after_recall`` whether a ``response.create`` follows recall's output."""

    def __init__(self, memories: Callable[[], Memories], *, taken: Callable[[str], bool],
                 respond_after_recall: bool = True):
        self._memories = memories
        self._taken = taken
        self._respond_after_recall = respond_after_recall

    def handles(self, name: str) -> bool:
        return name in NAMES and not self._taken(name)

    @staticmethod
    def arguments(call: FunctionCall) -> MemoryArgs:
        """The call's checked arguments; raises :class:`~ticos_agent.errors.BadArguments`."""
        from .tools import memory_args

        return memory_args(call.name, call.arguments)

    @staticmethod
    def survives_interruption(name: str) -> bool:
        return name != "recall"

    @staticmethod
    def always_answered(name: str, outcome: dict[str, Any]) -> bool:
        """recall's outcome, and any that names a field to correct."""
        return name == "recall" or "field" in outcome

    def respond_after(self, name: str) -> bool:
        """Whether a ``response.create`` follows this tool's output."""
        return name == "recall" and self._respond_after_recall

    async def run(self, args: MemoryArgs) -> dict[str, Any]:
        """Carry out one call and return its outcome; never raises."""
        from .tools import run

        return await run(self._memories, args)
