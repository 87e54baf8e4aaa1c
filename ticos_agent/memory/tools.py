"""``remember``, ``recall`` and ``forget``: the memory tools the voice agent's own model calls.

Their definitions (:func:`memory_tools`, offered with the robot's while storage is on), the
checks of a call's arguments (:func:`memory_args`) and how one call is carried out
(:func:`run`); :class:`~.router.MemoryToolRouter` is what the calls intake holds. Arguments:

==============  ==========================================================================
tool            arguments
==============  ==========================================================================
``remember``    ``content`` (required, text), ``kind`` (``fact`` default, or ``episode``),
                ``subject`` (text), ``importance`` (0 .. 1)
``recall``      ``query`` (required, text), ``limit`` (1 .. 20, default 5)
``forget``      ``query`` (required, text): deletes the memories that match it
==============  ==========================================================================

A wrong type, a missing ``content``/``query`` or a value out of range is a ``failed``
outcome naming the field, always sent back so the model can correct itself; arguments the
schema does not name are ignored (and noted). Outcomes::

    remember  {"status": "done", "reason": null, "id": 7, "kind": "fact", "content": "..."}
    recall    {"status": "done", "reason": null, "query": "name", "count": 1,
               "found": ["memory (fact, 2025-05-01 10:00:00): The user's name is Lin."]}
    forget    {"status": "done", "reason": null, "forgotten": 2}
    any       {"status": "failed", "reason": "storage: ...", ...}

``recall``'s outcome always goes back as the call's ``function_call_output`` (the model asked
a question), followed by a ``response.create`` unless ``[replies] respond_after_recall`` is
off, so the model says what it found; ``remember``/``forget`` outcomes are sent back when
``[replies] function_call_output`` is on, as ``motion``'s are. A barge-in does not drop a
``remember`` or ``forget`` (what the user said stays said); it drops a ``recall``, whose
answer nobody waits for any more.

An integrator's own handler registered for one of these names
(``agent.on_function("recall", fn)``) takes the call instead (``function:*`` does not).

Thread and timing: on the loop; :func:`memory_args` in the intake's path (pure checks),
:func:`run` in the call's own task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BadArguments, BadMemory, StorageError
from .api import Memories, kind_field, limit_field, text_field, unit_field
from .model import MAX_CONTENT, MAX_FIELD, MAX_QUERY, Hit

log = logging.getLogger(__name__)

TOOL_KINDS = ("fact", "episode")  # long_term is what generation writes
MAX_RECALL = 20
HIT_CHARS = 500  # characters of one hit sent back to the model

REMEMBER = ("Remember something worth keeping about the people you talk to or what happened: a fact "
            "(\"The user's name is Lin.\", \"Lin likes dinosaurs.\") or an episode (a moment worth "
            "remembering). Write it as one clear sentence that makes sense on its own later.")
RECALL = ("Search what you remember (and what was said before) before you answer a question about the "
          "past, the user or their preferences. Returns the best matches, memories first.")
FORGET = ("Forget the memories that match a query, when the user asks you to forget something "
          "(\"forget what I told you about my sister\"). Returns how many were forgotten.")


def memory_tools() -> list[dict[str, Any]]:
    """The three tools, as OpenAI Realtime function definitions (fresh dicts)."""
    def tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {"type": "function", "name": name, "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required}}

    return [
        tool("remember", REMEMBER, {
            "content": {"type": "string", "description": "What to remember, as one self-contained sentence "
                                                         f"(at most {MAX_CONTENT} characters)."},
            "kind": {"type": "string", "enum": list(TOOL_KINDS), "default": "fact",
                     "description": "fact: something true about someone or something; episode: a moment "
                                    "that happened."},
            "subject": {"type": "string", "description": "Who or what it is about (\"user\", a name); "
                                                         f"at most {MAX_FIELD} characters."},
            "importance": {"type": "number", "minimum": 0, "maximum": 1,
                           "description": "How much it matters: 0 trivia, 1 never to be forgotten."},
        }, ["content"]),
        tool("recall", RECALL, {
            "query": {"type": "string", "description": "Words to look for (a name, a topic)."},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RECALL, "default": 5,
                      "description": "How many matches at most."},
        }, ["query"]),
        tool("forget", FORGET, {
            "query": {"type": "string", "description": "Words the memories to forget contain."},
        }, ["query"]),
    ]


@dataclass(frozen=True)
class MemoryArgs:
    """One memory call's checked arguments."""

    name: str
    query: str = ""
    limit: int = 5
    content: str = ""
    kind: str = "fact"
    fields: tuple[tuple[str, Any], ...] = ()
    notes: tuple[str, ...] = ()


_KNOWN = {"remember": {"content", "kind", "subject", "importance"}, "recall": {"query", "limit"},
          "forget": {"query"}}


def memory_args(name: str, args: dict[str, Any]) -> MemoryArgs:
    """Check a memory call's arguments; raises :class:`BadArguments` naming the field."""
    try:
        return _memory_args(name, args)
    except BadMemory as exc:
        raise BadArguments(f"{name}: {exc}", field=exc.field) from None


def _memory_args(name: str, args: dict[str, Any]) -> MemoryArgs:
    extra = sorted(str(k) for k in args if k not in _KNOWN[name])
    notes = (f"ignored argument(s) {', '.join(extra)}",) if extra else ()
    if name == "remember":
        content = text_field(args.get("content"), "content", most=MAX_CONTENT, required=True)
        kind = kind_field(args.get("kind"), TOOL_KINDS)
        fields: list[tuple[str, Any]] = []
        if (subject := text_field(args.get("subject"), "subject", most=MAX_FIELD)) is not None:
            fields.append(("subject", subject))
        if (importance := unit_field(args.get("importance"), "importance")) is not None:
            fields.append(("importance", importance))
        return MemoryArgs(name, content=content or "", kind=kind, fields=tuple(fields), notes=notes)
    query = text_field(args.get("query"), "query", most=MAX_QUERY, required=True) or ""
    if name == "recall":
        return MemoryArgs(name, query=query, limit=limit_field(args.get("limit"), default=5, most=MAX_RECALL),
                          notes=notes)
    return MemoryArgs(name, query=query, notes=notes)


def hit_text(hit: Hit) -> str:
    """One hit as a line the model can use."""
    what = f"memory ({hit.kind})" if hit.source == "memory" else f"{hit.role or 'someone'} said"
    text = " ".join(hit.text.split())
    if len(text) > HIT_CHARS:
        text = text[:HIT_CHARS - 3] + "..."
    return f"{what}, {hit.datetime}: {text}"


async def run(memories: Callable[[], Memories], args: MemoryArgs) -> dict[str, Any]:
    """Carry out one call on ``memories()`` and return its outcome; never raises."""
    try:
        out = await _run(memories(), args)
    except BadMemory as exc:  # the store's own check (a query without a word to search for, say)
        out = {"status": "failed", "reason": f"{args.name}: {exc}", "field": exc.field}
    except StorageError as exc:
        log.warning("memory: %s failed: %s", args.name, exc)
        out = {"status": "failed", "reason": f"storage: {exc}"}
    except Exception as exc:  # one call's bug must not escape into the loop
        log.exception("memory: %s failed", args.name)
        out = {"status": "failed", "reason": f"internal error: {type(exc).__name__}: {exc}"}
    if args.notes:
        out["notes"] = list(args.notes)
    return out


async def _run(memories: Memories, args: MemoryArgs) -> dict[str, Any]:
    if args.name == "remember":
        m = await memories.remember(args.content, args.kind, via="tool", kinds=TOOL_KINDS, **dict(args.fields))
        return {"status": "done", "reason": None, "id": m.id, "kind": m.kind, "content": m.content}
    if args.name == "recall":
        hits = await memories.recall(args.query, args.limit, most=MAX_RECALL)
        out: dict[str, Any] = {"status": "done", "reason": None, "query": args.query, "count": len(hits),
                               "found": [hit_text(h) for h in hits]}
        if not hits:
            out["note"] = "nothing remembered matches that"
        return out
    count = await memories.forget(args.query, via="tool")
    return {"status": "done", "reason": None, "forgotten": count}  # the query is not kept: it was forgotten
