"""Pages of rows across a card's databases: the newest ``--limit`` rows of each, put together
oldest first (:func:`page`), or every row streamed (:func:`rows`, an export), and what a page
leaves out (:func:`earlier`, :func:`more`). The event log has no session index: a session's
events are found between its neighbours' messages (:func:`event_window`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from ..storage.finder import MEMORIES, MESSAGES, Kind, Window
from .cards import Source
from .scope import Row, Scope

Windows = Window | Callable[[Source], Window] | None


def _window(sc: Scope, w: Windows, source: Source) -> Window:
    return w(source) if callable(w) else (w or sc.window)


def page(sc: Scope, kind: Kind, w: Windows = None, limit: int | None = None) -> list[tuple[Source, Row]]:
    """Each database's newest ``limit`` rows of ``kind``, together, oldest first, the newest
    ``limit`` kept (``kind``'s time orders rows of different databases). ``w``: the window,
    or a function giving each database's."""
    limit = limit if limit is not None else (sc.limit or 0)
    out: list[tuple[int, Source, Row]] = []
    for i, source in enumerate(sc.card.sources):
        out += [(i, source, r) for r in reversed(source.finder.newest(kind, _window(sc, w, source), limit))]
    if len(sc.card.sources) > 1:
        out.sort(key=lambda t: (_time_key(t[2].get(kind.time)), t[0]))
    return [(s, r) for _, s, r in out[-limit:]] if limit > 0 else []


def _time_key(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:020.6f}"
    return str(value or "")


def rows(sc: Scope, kind: Kind, w: Windows = None) -> Iterator[tuple[Source, Row]]:
    """The page (with a limit) or every row, streamed (without)."""
    if sc.limit is not None:
        yield from page(sc, kind, w)
        return
    for source in sc.card.sources:
        for row in source.finder.scan(kind, _window(sc, w, source)):
            yield source, row


def earlier(sc: Scope, kind: Kind, shown: list[tuple[Source, Row]], w: Windows = None) -> int:
    """How many rows of ``w`` are older than the page ``shown``."""
    if sc.limit is None or not shown:
        return 0
    total = 0
    for source in sc.card.sources:
        first = [r for s, r in shown if s is source]
        total += source.finder.count(kind, _window(sc, w, source), before=first[0]["rowid"] if first else None)
    return total


def neighbours(source: Source, session_id: str | None) -> tuple[str | None, str | None]:
    """The times of the messages just before and just after the session's (whatever their
    session): what the session's events lie between (the event log has no span of its own)."""
    span = source.finder.session_span(session_id)
    if span["first_rowid"] is None or "datetime" not in source.finder.columns(MESSAGES):
        return None, None
    before = source.conn.execute("SELECT datetime FROM messages WHERE rowid < ? ORDER BY rowid DESC LIMIT 1",
                                 (span["first_rowid"],)).fetchone()
    after = source.conn.execute("SELECT datetime FROM messages WHERE rowid > ? ORDER BY rowid LIMIT 1",
                                (span["last_rowid"],)).fetchone()
    return (str(before[0]) if before and before[0] else None), (str(after[0]) if after and after[0] else None)


def event_window(sc: Scope, source: Source, w: Window | None = None) -> Window:
    """``w`` for the event log: a session with no time range narrowed to the time between its
    neighbours' messages (the event log has no session index; a time range is a rowid range)."""
    w = w or sc.window
    if not w.by_session or w.since_ts is not None or w.until_ts is not None:
        return w
    lo, hi = neighbours(source, w.session)
    clock = sc.card.clock
    lo_ts, hi_ts = clock.epoch(lo), clock.epoch(hi)
    return replace(w, since_ts=lo_ts - 1.0 if lo_ts is not None else None,
                   until_ts=hi_ts + 2.0 if hi_ts is not None else None)


def more(sc: Scope, kind: Kind, shown: list[tuple[Source, Row]], what: str, w: Windows = None) -> list[str]:
    """The footer of a full page: how many older rows there are (counted through the session's
    span), or only that there are some (a count of a whole table would cost a scan)."""
    if sc.limit is None or len(shown) < sc.limit:
        return []
    hint = "(--limit, --since or --session to see them)"
    if sc.window.by_session and kind is not MEMORIES:
        n = earlier(sc, kind, shown, w)
        return [f"{n} earlier {what} not shown {hint}"] if n else []
    for source in sc.card.sources:
        first = [r for s, r in shown if s is source]
        if source.finder.newest(kind, _window(sc, w, source), 1, before=first[0]["rowid"] if first else None):
            return [f"earlier {what} not shown {hint}"]
    return []
