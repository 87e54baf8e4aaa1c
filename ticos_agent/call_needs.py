"""What a call's carrying out needs of its collaborators: the store, the actuators, the memory tools.

Protocols only (no state, no I/O): :mod:`ticos_agent.calls` and
:mod:`ticos_agent.call_outcomes` take these; the agent hands in the real ones
(:class:`~ticos_agent.storage.store.Store`, :class:`~ticos_agent.actuators.system.ActuatorSystem`,
:class:`ticos_agent.memory.router.MemoryToolRouter`). Their methods are called on the event
loop thread; the awaitables they return are awaited there.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from .arguments import EmotionArgs, FunctionCall, MotionArgs

#: The reason the actuators give a command they drop on ``interrupt(response_id)``: they cannot
#: tell a barge-in from a cancel; the call intake names which it was.
INTERRUPTED = "interrupted (barge-in or cancelled response)"


class CallLog(Protocol):
    """What the calls need of the store."""

    def record_call(self, *, call_id: str, name: str, arguments: str, session_id: str | None = None,
                    response_id: str | None = None, item_id: str | None = None, status: str = "received") -> None: ...

    def set_call_outcome(self, call_id: str, status: str, result: dict[str, Any] | str | None, *,
                         session_id: str | None = None) -> None: ...


class ActuatorOutcome(Protocol):
    status: str
    reason: str | None

    def as_dict(self) -> dict[str, Any]: ...


class Expressive(Protocol):
    """What the calls need of the actuators."""

    def motion(self, args: MotionArgs, *, response_id: str | None = None,
               call_id: str | None = None) -> Awaitable[ActuatorOutcome]: ...

    def emotion(self, args: EmotionArgs, *, response_id: str | None = None,
                call_id: str | None = None) -> Awaitable[ActuatorOutcome]: ...


class MemoryArguments(Protocol):
    @property
    def name(self) -> str: ...


class MemoryRouter(Protocol):
    """What the calls need of the memory tools (:class:`ticos_agent.memory.router.MemoryToolRouter`)."""

    def handles(self, name: str) -> bool: ...

    def arguments(self, call: FunctionCall) -> MemoryArguments: ...

    def survives_interruption(self, name: str) -> bool: ...

    def always_answered(self, name: str, outcome: dict[str, Any]) -> bool: ...

    def respond_after(self, name: str) -> bool: ...

    def run(self, args: Any) -> Awaitable[dict[str, Any]]: ...

