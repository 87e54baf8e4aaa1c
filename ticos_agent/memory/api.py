"""Remembering, recalling and forgetting, as every path does it: tools, ``Agent`` API, HTTP.

:class:`Memories` wraps the store (a :class:`~.model.MemoryStore`) with the checks every caller
gets and tells the ``memory`` handler topic of each change, whichever path made it::

    emit("stored", {"memory": Memory.as_dict(), "via": "tool" | "api" | "http" | "generation"})
    emit("forgotten", {"count": int, "query": str | None, "ids": [int, ...], "everything": bool,
                       "via": ...})

``emit`` is an :data:`EmitMemory`, ``emit(action, payload) -> None``; the agent passes
``dispatcher.emit("memory", ...)``, and memory generation is given the same callable
(``Agent.emit_memory``) so a summary it stores reaches the handlers too (build its payload
with :func:`stored_payload`).

Fields (:func:`memory_fields`): ``content`` a non-empty string of at most
:data:`~.model.MAX_CONTENT` characters (blanks around it stripped); ``kind`` one of
:data:`~.model.KINDS` (default ``fact``); ``subject``, ``key``, ``value``, ``title``,
``source``, ``user_id`` strings of at most :data:`MAX_FIELD` characters; ``confidence`` and
``importance`` numbers from 0 to 1. A value that breaks a rule raises
:class:`~ticos_agent.errors.BadMemory` naming the field; an unknown field too.

:meth:`Memories.recall` puts what the robot remembers first: the memories that match, best
first, then (``messages=True``) the messages that match, up to ``limit`` in all.

Thread and timing: everything runs on the event loop; each method awaits the store (a write
returns once committed) and never blocks the loop. Store failures surface as
:class:`~ticos_agent.errors.StorageError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..arguments import LONE_SURROGATE
from ..errors import BadMemory, StorageError
from ..events import json_kind
from .model import KINDS, MAX_CONTENT, MAX_FIELD, MAX_QUERY, Hit, Memory, MemoryStore

log = logging.getLogger(__name__)

#: ``emit(action, payload)``: ``action`` is ``"stored"`` or ``"forgotten"`` (see the module docstring).
EmitMemory = Callable[[str, dict[str, Any]], None]

MAX_LIMIT = 50  # hits of one search
TEXT_FIELDS = ("subject", "key", "value", "title", "source", "user_id")
UNIT_FIELDS = ("confidence", "importance")
FIELDS = frozenset(("content", "kind", *TEXT_FIELDS, *UNIT_FIELDS))


class Listing(Protocol):
    """The store's page of memories, newest first (what ``GET /v1/memories`` without ``q`` lists)."""

    async def memories(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]: ...


def stored_payload(memory: Memory, via: str) -> dict[str, Any]:
    """The payload of a ``stored`` emit."""
    return {"memory": memory.as_dict(), "via": via}


def text_field(value: Any, name: str, *, most: int, required: bool = False) -> str | None:
    """A string field, stripped; ``None`` when absent (refused when ``required``)."""
    if value is None:
        if required:
            raise BadMemory(f"{name} is required", field=name)
        return None
    if not isinstance(value, str):
        raise BadMemory(f"{name} must be a string, got {json_kind(value)}", field=name)
    text: str = value.strip()
    if not text:
        if required:
            raise BadMemory(f"{name} must not be empty", field=name)
        return None
    if len(text) > most:
        raise BadMemory(f"{name} is longer than {most} characters ({len(text)})", field=name)
    if (bad := LONE_SURROGATE.search(text)) is not None:  # valid as a JSON escape, not as text: SQLite refuses it
        raise BadMemory(f"{name} is not valid text (a lone surrogate at character {bad.start()})", field=name)
    return text


def unit_field(value: Any, name: str) -> float | None:
    """A number from 0 to 1, or ``None`` when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadMemory(f"{name} must be a number from 0 to 1, got {json_kind(value)}", field=name)
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise BadMemory(f"{name} must be a number from 0 to 1, got {value!r}", field=name)
    return number


def kind_field(value: Any, kinds: Sequence[str] = KINDS, default: str = "fact") -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value not in kinds:
        raise BadMemory(f"kind must be one of {', '.join(kinds)}, got {value!r}", field="kind")
    return value


def limit_field(value: Any, *, default: int, most: int) -> int:
    """A whole number from 1 to ``most`` (``3.0`` is taken as 3)."""
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadMemory(f"limit must be a whole number from 1 to {most}, got {json_kind(value)} {value!r}",
                           field="limit")
    if not 1 <= value <= most:
        raise BadMemory(f"limit must be from 1 to {most}, got {value}", field="limit")
    return value


def memory_fields(data: Mapping[str, Any], *, kinds: Sequence[str] = KINDS,
                  allowed: frozenset[str] = FIELDS) -> tuple[str, str, dict[str, Any]]:
    """``(kind, content, other fields)`` from a JSON object; raises :class:`BadMemory`."""
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise BadMemory(f"unknown field(s) {', '.join(map(repr, unknown))}; known: "
                           f"{', '.join(sorted(allowed))}", field=unknown[0])
    content = text_field(data.get("content"), "content", most=MAX_CONTENT, required=True)
    assert content is not None
    kind = kind_field(data.get("kind"), kinds)
    fields: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        if name in allowed and (text := text_field(data.get(name), name, most=MAX_FIELD)) is not None:
            fields[name] = text
    for name in UNIT_FIELDS:
        if name in allowed and (number := unit_field(data.get(name), name)) is not None:
            fields[name] = number
    return kind, content, fields


class Memories:
    """The one way memories are stored, searched and forgotten (see the module docstring).

    ``store`` is the agent's store; ``emit`` tells the ``memory`` handler topic."""

    def __init__(self, store: MemoryStore, emit: EmitMemory, listing: Listing | None = None):
        self._store = store
        self._emit = emit
        self._listing = listing

    def _tell(self, action: str, payload: dict[str, Any]) -> None:
        try:
            self._emit(action, payload)
        except Exception:  # a handler problem must not undo a stored memory
            log.exception("memory: telling the handlers %s failed", action)

    async def remember(self, content: Any, kind: Any = "fact", *, via: str = "api",
                       kinds: Sequence[str] = KINDS, **fields: Any) -> Memory:
        """Store one memory (checked by :func:`memory_fields`) and return it as stored."""
        return await self.store({**fields, "content": content, "kind": kind}, via=via, kinds=kinds)

    async def store(self, data: Mapping[str, Any], *, via: str, kinds: Sequence[str] = KINDS) -> Memory:
        """Store the memory a JSON object describes (``content``, ``kind``, ...)."""
        kind, text, checked = memory_fields(data, kinds=kinds)
        memory = await self._store.remember(kind, text, **checked)
        log.info("memory: stored %s #%s via %s (%d characters)", memory.kind, memory.id, via, len(memory.content))
        self._tell("stored", stored_payload(memory, via))
        return memory

    async def recall(self, query: Any, limit: Any = 5, *, messages: bool = True, most: int = MAX_LIMIT) -> list[Hit]:
        """What matches ``query``: memories first (best first), then messages, ``limit`` in all."""
        text = text_field(query, "query", most=MAX_QUERY, required=True)
        assert text is not None
        count = limit_field(limit, default=5, most=most)
        hits = await self._store.recall(text, limit=count, messages=False)
        if messages and len(hits) < count:
            hits += await self._store.recall(text, limit=count - len(hits), memories=False)
        return hits

    async def forget(self, query: Any = None, ids: Sequence[Any] = (), everything: bool = False, *,
                     via: str = "api") -> int:
        """Delete the memories matching ``query``, with these ``ids``, or all (exactly one of
        them); returns how many."""
        text = text_field(query, "query", most=MAX_QUERY)
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise BadMemory(f"ids must be a list of whole numbers, got {json_kind(ids)}", field="ids")
        numbers = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                raise BadMemory(f"ids must be whole numbers, got {json_kind(i)} {i!r}", field="ids")
            numbers.append(i)
        if not isinstance(everything, bool):
            raise BadMemory(f"everything must be true or false, got {json_kind(everything)}", field="everything")
        given = [what for what, on in (("query", text is not None), ("ids", bool(numbers)),
                                       ("everything", everything)) if on]
        if len(given) != 1:
            got = f" (got {' and '.join(given)})" if given else ""
            raise BadMemory(f"say what to forget with exactly one of: a query, ids, everything=True{got}",
                               field=given[-1] if given else "query")
        count = await self._store.forget(query=text, ids=numbers, everything=everything)
        log.info("memory: forgot %d memor%s via %s%s", count, "y" if count == 1 else "ies", via,
                 " (everything)" if everything else "")
        if count:
            self._tell("forgotten", {"count": count, "query": text, "ids": numbers, "everything": everything,
                                     "via": via})
        return count

    async def list(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The newest memories as rows (``GET /v1/memories`` without ``q``)."""
        if self._listing is None:
            raise StorageError("this store cannot list memories")
        return await self._listing.memories(limit=limit, offset=offset)
