"""TicosClient's handlers: the integrator's plain functions, called as ticos-client called them.

The rules (ticos-client's): a motion, emotion or motion_and_emotion call goes to the motion
and/or emotion handler, and to the function-call handler (with its name) when neither is set;
every other function goes to the function-call handler; the conversation handler gets the
role as a :class:`MessageRole` when it is one. A handler may be set or replaced at any time;
the next event finds it.

What is subscribed on the agent: the :data:`ON_DEMAND` topics only once a handler for them is
set, the :data:`DIRECT` handlers themselves (swapped when replaced), the others through a
wrapper here that looks its handler up at call time. :meth:`ClientHandlers.set` may run on
any thread; :meth:`ClientHandlers.attach` and :meth:`ClientHandlers.subscribe` run before the
agent's loop does, or on its thread (the client hops there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .arguments import FunctionCall

log = logging.getLogger(__name__)

KINDS = ("message", "motion", "emotion", "function_call", "conversation", "memory")
#: The handlers whose topic is subscribed once one is set (at start, or when it is set later):
#: without one, every event (or message, or memory) would cost a call on the handler thread
#: that finds nothing to call. The others are always subscribed: whether a motion or function
#: call was handled is part of its outcome.
ON_DEMAND = {"message": "event:*", "conversation": "conversation", "memory": "memory"}
#: Of those, the ones whose handler is subscribed itself (swapped when it is replaced), not a
#: wrapper that looks it up: one call less for every event, and a handler that raises is
#: logged by its own name.
DIRECT = frozenset({"message", "memory"})


class MessageRole(str, Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class Topics(Protocol):
    """What the handlers need of the agent (:meth:`Agent.subscribe`)."""

    def subscribe(self, topic: str, fn: Callable[..., Any], *, inline: bool = False) -> Callable[[], None]: ...


class ClientHandlers:
    def __init__(self, inline: bool):
        self.inline = inline
        self.by_kind: dict[str, Callable[..., Any] | None] = dict.fromkeys(KINDS)
        self._topics: Topics | None = None
        # of ON_DEMAND, what is subscribed on the running agent: (the function, its unsubscribe)
        self._subscribed: dict[str, tuple[Callable[..., Any], Callable[[], None]]] = {}

    def set(self, kind: str, handler: Callable[..., Any] | None) -> None:
        if handler is not None and not callable(handler):
            raise ValueError("Handler must be callable")
        self.by_kind[kind] = handler

    def needs_subscribing(self, kind: str) -> bool:
        """Whether ``kind``'s handler, just set, changes what the agent has subscribed (else the
        wrapper subscribed once finds the new one)."""
        return kind in ON_DEMAND and not self._settled(kind)

    def attach(self, topics: Topics) -> None:
        """A new agent: subscribe the :data:`ON_DEMAND` handlers set so far on it."""
        self._topics = topics
        self._subscribed = {}
        for kind in ON_DEMAND:
            self.subscribe(kind)

    def subscribe(self, kind: str) -> None:
        """Make ``kind``'s subscription on the agent match its handler."""
        topics = self._topics
        if topics is None or self._settled(kind):
            return
        current = self._subscribed.pop(kind, None)
        if current is not None:
            current[1]()
        wanted = self._wanted(kind)
        if wanted is not None:
            self._subscribed[kind] = (wanted, topics.subscribe(ON_DEMAND[kind], wanted, inline=self.inline))

    def _wanted(self, kind: str) -> Callable[..., Any] | None:
        """What the agent should call for ``kind``: the handler itself for :data:`DIRECT` kinds,
        else the call-time wrapper once a handler was set."""
        handler = self.by_kind[kind]
        return handler if kind in DIRECT else (getattr(self, f"on_{kind}") if handler is not None else None)

    def _settled(self, kind: str) -> bool:
        """The subscription is what ``kind`` wants (a wrapper, once subscribed, stays: it finds
        whatever handler is set, or none)."""
        current = self._subscribed.get(kind)
        if current is None:
            return self._wanted(kind) is None
        return kind not in DIRECT or current[0] is self._wanted(kind)

    # The wrappers below look their handler up at call time, so setting one after start() works
    # as in ticos-client; the :data:`DIRECT` kinds' handlers are subscribed themselves instead.
    def on_expression(self, name: str, args: dict[str, Any]) -> None:
        """ticos-client's rule: the motion and/or emotion handler; if neither was set, the
        function-call handler with the name."""
        called = False
        if name in ("motion", "motion_and_emotion") and (fn := self.by_kind["motion"]) is not None:
            fn(args)
            called = True
        if name in ("emotion", "motion_and_emotion") and (fn := self.by_kind["emotion"]) is not None:
            fn(args)
            called = True
        if not called and (fn := self.by_kind["function_call"]) is not None:
            fn(name, args)

    def on_function(self, call: FunctionCall) -> Any:
        if (fn := self.by_kind["function_call"]) is not None:
            return fn(call.name, dict(call.arguments))
        return None

    def on_conversation(self, item_id: str, role: str, content: str) -> None:
        if (fn := self.by_kind["conversation"]) is not None:
            fn(item_id, MessageRole(role) if role in MessageRole._value2member_map_ else role, content)

    def status(self, code: str, message: str) -> None:
        """ticos-client's ``health.status`` message, to the message handler (if set)."""
        if (fn := self.by_kind["message"]) is not None:
            try:
                fn({"type": "health.status", "code": code, "message": message})
            except Exception:
                log.exception("TicosClient: the message handler failed on a health.status message")
