"""What every view reads: one card and the filters of the options (:class:`Scope`), with
``--session`` resolved on the card (:func:`choose_session`).

``--since``/``--until`` become a :class:`~ticos_agent.storage.finder.Window` on the card's
clock (the robot's local time as text, and seconds since 1970 for the event log; see
:mod:`.clock`); ``--session`` takes an id, a prefix of one, or ``last``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..storage.finder import MESSAGES, Window
from .cards import Card, Problem, Source
from .options import Options

Row = dict[str, Any]


@dataclass
class Scope:
    """One card and the options, with the filters turned into a :class:`Window` on the card's
    clock; ``window.by_session`` once ``--session`` is resolved (:func:`choose_session`)."""

    card: Card
    opts: Options
    window: Window
    limit: int | None
    nothing: bool = False  # no session matches the filters: the view is empty

    @property
    def tagged(self) -> bool:
        return self.card.tagged

    def tag(self, source: Source, row: Row) -> Row:
        row.pop("rowid", None)
        return {"card": self.card.label, "source": source.name, **row}


def scope(card: Card, opts: Options) -> Scope:
    clock = card.clock
    bounds: dict[str, tuple[str | None, float | None]] = {}
    for name, spec in (("since", opts.since), ("until", opts.until)):
        if spec is None:
            bounds[name] = (None, None)
        elif spec.age is not None:
            ts = _now() - spec.age
            bounds[name] = (clock.local(ts), ts)
        else:
            bounds[name] = (spec.local, clock.epoch(spec.local))
    window = Window(since=bounds["since"][0], since_ts=bounds["since"][1], until=bounds["until"][0],
                    until_ts=bounds["until"][1], role=opts.role, grep=opts.grep)
    return Scope(card, opts, window, opts.limit)


def _now() -> float:
    import time

    return time.time()


def choose_session(sc: Scope, *, default_last: bool = False) -> Scope:
    """``--session`` (an id, a prefix, ``last``) resolved on this card; with ``default_last``
    and no ``--session``, the session of the newest row the filters select. Raises
    :class:`Problem` when nothing matches or a prefix is ambiguous."""
    wanted = sc.opts.session
    if sc.window.by_session or (wanted is None and not default_last):
        return sc
    if wanted is None or wanted.lower() == "last":
        newest: tuple[Any, str | None] | None = None
        for source in sc.card.sources:
            rows = source.finder.newest(MESSAGES, sc.window, 1)
            if rows and (newest is None or str(rows[0]["datetime"] or "") >= str(newest[0] or "")):
                newest = (rows[0]["datetime"], rows[0]["session_id"])
        if newest is None:
            return replace(sc, window=replace(sc.window, by_session=True, session=None), nothing=True)
        return replace(sc, window=replace(sc.window, by_session=True, session=newest[1]))
    found: list[str] = []
    for source in sc.card.sources:
        for sid in source.finder.match_sessions(wanted):
            if sid not in found:
                found.append(sid)
    if wanted in found:
        found = [wanted]
    if not found:
        raise Problem(f"no session {wanted!r} (give a session id, a prefix of one, or 'last'; "
                      "'inspect sessions' lists them)")
    if len(found) > 1:
        more = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise Problem(f"session prefix {wanted!r} is ambiguous: {more}")
    return replace(sc, window=replace(sc.window, by_session=True, session=found[0]))
