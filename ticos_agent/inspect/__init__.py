"""``ticos-agent inspect`` / ``export``: what the robot heard, said and did, read offline from
one or many TF cards, never changing them.

Views (``inspect VIEW``): ``transcript`` (the default: one session as a conversation, with
each call's outcome and what went wrong in its place), ``faults`` (everything that went
wrong, grouped and counted), ``summary`` (per day and per session), and the rows themselves:
``messages``, ``memories``, ``calls``, ``events``, ``sessions``. Every view takes the same
filters (``--since``/``--until``, ``--session``, ``--role``, ``--grep``, ``--limit`` per
card) and formats (``--format text|jsonl|csv|markdown``, ``--output FILE``). ``export`` is
the same with JSON lines and no limit by default, and its own view ``all`` (messages,
memories, calls, and the event log with ``--events``), streamed in constant memory.

Where to read (:mod:`.cards`): ``--tf-root`` and ``--db``, each as often as needed, or a
folder holding several cards; ``--config`` finds the database as the agent would; nothing
given reads the internal database. A card's fallback database is read with it while rows wait
there. Databases are opened by :func:`ticos_agent.storage.open_readonly`: nothing next to them
is created or changed, whatever state a power cut left them in.

Errors are one line on standard error with a non-zero exit: 2 for a bad argument, 1 for a
card that cannot be read or a session that is not there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .cards import Card, Problem, open_cards
from .options import Options, UsageError, options
from .render import writer
from .scope import Scope, choose_session, scope
from .table import Table

__all__ = ["main"]


def _views() -> dict[str, Callable[[Scope], Table]]:
    from .faults import faults
    from .summary import summary
    from .timeline import transcript
    from .views import calls, events, everything, memories, messages, sessions

    return {"transcript": transcript, "faults": faults, "summary": summary, "messages": messages,
            "memories": memories, "calls": calls, "events": events, "sessions": sessions, "all": everything}


def main(args: Any) -> int:
    """Run ``inspect``/``export`` with parsed arguments; returns the exit status."""
    command = getattr(args, "command", None) or "inspect"
    try:
        opts = options(args)
    except UsageError as exc:
        print(f"ticos-agent {command}: {exc}", file=sys.stderr)
        return 2
    errors: list[str] = []
    try:
        cards = open_cards(opts, errors)
    except UsageError as exc:
        print(f"ticos-agent {command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from ..config import ConfigErrors

        if isinstance(exc, ConfigErrors):
            print(f"ticos-agent {command}: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        raise
    try:
        failed = _show(opts, cards, errors)
    finally:
        for card in cards:
            card.close()
    for line in errors:
        print(f"ticos-agent: {line}", file=sys.stderr)
    return 1 if errors or failed else 0


def _output(opts: Options, cards: list[Card]) -> TextIO:
    if not opts.output or opts.output == "-":
        return sys.stdout
    target = Path(opts.output).expanduser().resolve()
    for card in cards:
        for source in card.sources:
            guarded = (source.path, *(Path(str(source.path) + s) for s in ("-wal", "-shm", "-journal")))
            if any(target == p.resolve() for p in guarded):
                raise UsageError(f"--output {opts.output} is the database being read")
    return open(target, "w", encoding="utf-8", newline="")


def _show(opts: Options, cards: list[Card], errors: list[str]) -> bool:
    """Every card's view, written as asked; True when no card could show it."""
    if not cards:
        return True
    try:
        out = _output(opts, cards)
    except (UsageError, OSError) as exc:
        errors.append(str(exc) if isinstance(exc, UsageError) else f"cannot write {opts.output}: {exc.strerror}")
        return True
    w = writer(opts.format, out, opts.color)
    view = _views()[opts.view]
    if opts.limit is None:  # an export reads every page once: map none, so memory stays flat
        for card in cards:
            for source in card.sources:
                source.conn.execute("PRAGMA mmap_size = 0")
    many = len(cards) > 1
    problems = 0
    try:
        for card in cards:
            if opts.verbose:
                for note in card.notes:
                    print(f"note: {card.label}: {note}" if many else f"note: {note}", file=sys.stderr)
            w.card(card.label, str(card.path) if card.path else None, card.info, many)
            try:
                w.table(view(choose_session(scope(card, opts))))
            except Problem as exc:
                problems += 1
                if many:
                    w.problem(card.label, str(exc))
                else:
                    errors.append(str(exc))
        w.close()
    except BrokenPipeError:  # `| head`: the reader has seen enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return False
    finally:
        if out is not sys.stdout:
            out.close()
    return problems == len(cards)
