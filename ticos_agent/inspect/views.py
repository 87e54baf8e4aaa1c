"""The row views (``messages``, ``memories``, ``calls``, ``events``, ``sessions``) and what
every view shares: the filters of one card (:class:`Scope`) and which session ``--session``
names on it.

A view's page is each database's newest ``--limit`` rows, put together and shown oldest first
(the newest at the bottom, next to the prompt); an export (no limit) streams every row of the
card, then of its fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..storage.finder import CALLS, EVENTS, MEMORIES, MESSAGES, Kind, Window
from ..storage.schema import CALL_COLUMNS, EVENT_COLUMNS, MEMORY_COLUMNS, MESSAGE_COLUMNS
from .cards import Card, Problem, Source
from .options import Options
from .outcome import describe
from .table import Col, Table

Row = dict[str, Any]
TAGS = ("card", "source")


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


def short_session(sid: Any, width: int = 18) -> str:
    if sid is None:
        return "(none)"
    text = str(sid)
    return text if len(text) <= width else text[: width - 1] + "…"


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


def _filtered(sc: Scope) -> bool:
    w = sc.window
    return any(v is not None for v in (w.since, w.until, w.role, w.grep))


# --- pages ------------------------------------------------------------------------------------

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


def _more(sc: Scope, kind: Kind, shown: list[tuple[Source, Row]], what: str, w: Windows = None) -> list[str]:
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


def _tagged_col(sc: Scope) -> tuple[Col, ...]:
    return (Col("source", "from"),) if sc.tagged else ()


def _status_style(row: Row) -> str | None:
    status = row.get("status")
    if status in ("transcription_failed", "failed", "incomplete"):
        return "fault"
    return "note" if status not in (None, "completed") else None


# --- the row views ------------------------------------------------------------------------------

def messages(sc: Scope) -> Table:
    shown = list(rows(sc, MESSAGES))

    def out() -> Iterator[Row]:
        for source, r in shown:
            row = sc.tag(source, r)
            status = "" if r.get("status") in (None, "completed") else f"[{r['status']}]"
            row["text"] = " ".join(p for p in (str(r.get("content") or ""), status) if p)
            yield row

    show = (Col("datetime", "time"), *_tagged_col(sc), Col("session_id", "session", max=18),
            Col("role", "role", style=lambda r: {"user": "user", "assistant": "robot"}.get(str(r.get("role")))),
            Col("text", "text", wrap=True, style=_status_style))
    return Table("message", (*TAGS, *MESSAGE_COLUMNS), out(), show, footer=_more(sc, MESSAGES, shown, "messages"),
                 empty="no messages")


def memories(sc: Scope) -> Table:
    w = replace(sc.window, by_session=False)  # memories belong to no session
    shown = list(rows(sc, MEMORIES, w))
    show = (Col("datetime", "time"), *_tagged_col(sc), Col("type", "type"), Col("user_id", "user"),
            Col("content", "memory", wrap=True))
    return Table("memory", (*TAGS, *MEMORY_COLUMNS), (sc.tag(s, r) for s, r in shown), show,
                 footer=_more(sc, MEMORIES, shown, "memories"), empty="no memories")


def call_row(sc: Scope, source: Source, r: Row) -> Row:
    o = describe(r.get("name"), r.get("arguments"), r.get("status"), r.get("result"))
    row = sc.tag(source, r)
    row.update(what=o.what, outcome=o.text, level=o.level)
    return row


def calls(sc: Scope) -> Table:
    shown = rows(sc, CALLS)
    listed = list(shown) if sc.limit is not None else None
    show = (Col("created", "time"), *_tagged_col(sc), Col("session_id", "session", max=18),
            Col("what", "call", max=40),
            Col("outcome", "outcome", wrap=True, style=lambda r: {"fault": "fault", "note": "note"}.get(r["level"])))
    body = (call_row(sc, s, r) for s, r in (listed if listed is not None else shown))
    return Table("call", (*TAGS, *CALL_COLUMNS, "what", "outcome"), body, show,
                 footer=_more(sc, CALLS, listed or [], "calls"), empty="no function calls")


def events(sc: Scope) -> Table:
    clock = sc.card.clock

    def windows(source: Source) -> Window:
        return event_window(sc, source)

    shown = rows(sc, EVENTS, windows)
    listed = list(shown) if sc.limit is not None else None

    def out() -> Iterator[Row]:
        for source, r in (listed if listed is not None else shown):
            row = sc.tag(source, r)
            ts = r.get("ts")
            row["time"] = clock.local(ts, ms=True) if isinstance(ts, (int, float)) else None
            yield row

    show = (Col("time", "time"), *_tagged_col(sc), Col("session_id", "session", max=18),
            Col("type", "event", style=lambda r: "fault" if r.get("type") == "error" or str(r.get("type")).endswith(
                ".failed") else None),
            Col("item_id", "item", max=24), Col("response_id", "response", max=24))
    return Table("event", (*TAGS, *EVENT_COLUMNS, "time"), out(), show,
                 footer=_more(sc, EVENTS, listed or [], "events", windows),
                 empty="no events (the event log is off, pruned, or this is a ticos-client database)")


SESSION_COLUMNS = ("card", "source", "session_id", "first", "last", "seconds", "messages", "turns", "barge_ins",
                   "calls", "problems")
_PROBLEM_CALLS = ("failed", "busy", "not_dispatched", "received")


def session_stats(sc: Scope, source: Source, span: Row) -> Row:
    """A session's numbers, read through its span: turns (user messages), barge-ins,
    calls, problems (failed, busy or lost calls, transcriptions that failed, responses that
    failed or did not finish)."""
    conn, finder, clock = source.conn, source.finder, sc.card.clock
    sid = span["session_id"]
    has_session = "session_id" in finder.columns(MESSAGES)
    test, params = finder.of_session(MESSAGES, sid) if has_session else ("1", [])
    turns = problems = 0
    cancelled: set[Any] = set()
    if {"role", "status"} <= finder.columns(MESSAGES):
        rid = "response_id" if "response_id" in finder.columns(MESSAGES) else "rowid"
        for role, status, response, n in conn.execute(
                f"SELECT role, status, CASE WHEN status = 'cancelled' THEN {rid} END, COUNT(*) FROM messages "
                f"WHERE {test} GROUP BY 1, 2, 3", params):
            turns += n if role == "user" else 0
            if role == "assistant" and status == "cancelled":
                cancelled.add(response)
            problems += n if status in ("transcription_failed", "failed", "incomplete") else 0
    calls = 0
    cut: set[Any] = set()
    if "session_id" in finder.columns(CALLS) and has_session:
        test, params = finder.of_session(CALLS, sid)
        for status, response, result in conn.execute(
                f"SELECT status, response_id, CASE WHEN status = 'dropped' THEN result END FROM function_calls "
                f"WHERE {test}", params):
            calls += 1
            problems += status in _PROBLEM_CALLS
            if status == "dropped" and response and "barge-in" in str(result or ""):
                cut.add(response)
    heard, spoken = barge_ins(sc, source, sid)
    cut |= spoken if heard else cancelled
    first, last = clock.epoch(span["first"]), clock.epoch(span["last"])
    seconds = round(last - first) if first is not None and last is not None else None
    return {"session_id": sid, "first": span["first"], "last": span["last"], "seconds": seconds,
            "messages": span["messages"], "turns": turns, "barge_ins": len(cut), "calls": calls,
            "problems": problems}


def barge_ins(sc: Scope, source: Source, session_id: str | None) -> tuple[bool, set[str]]:
    """(whether the event log covers the session, the responses in it that the user's speech
    cut off: ``speech_started`` while a response was being given)."""
    if session_id is None or not source.finder.columns(EVENTS):
        return False, set()
    w = event_window(sc, source, Window(by_session=True, session=session_id, types=(
        "input_audio_buffer.speech_started", "response.created", "response.done")))
    live: dict[str, float] = {}
    cut: set[str] = set()
    seen = False
    for etype, response, ts in source.finder.select(EVENTS, w, "type, response_id, ts", "ORDER BY rowid"):
        seen = True
        if etype == "response.created" and response:
            live[str(response)] = ts
        elif etype == "response.done" and response:
            live.pop(str(response), None)
        elif etype == "input_audio_buffer.speech_started" and live:
            cut.add(max(live.items(), key=lambda kv: kv[1])[0])
    return seen, cut


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def sessions(sc: Scope) -> Table:
    limit = sc.limit if sc.limit is not None else 1 << 62
    found: list[tuple[str, Row]] = []
    for source in sc.card.sources:
        w = sc.window
        if w.by_session:
            spans = [source.finder.session_span(w.session)]
            spans = [s for s in spans if s["messages"]]
        else:
            spans = source.finder.sessions(w, limit)
        for span in spans:
            row = {"card": sc.card.label, "source": source.name, **session_stats(sc, source, span)}
            row["length"] = duration(row["seconds"])
            row["shown"] = short_session(row["session_id"], 40)
            found.append((str(span["last"] or ""), row))
    found.sort(key=lambda t: t[0])
    listed = [r for _, r in found][-limit:]
    show = (Col("shown", "session"), *_tagged_col(sc), Col("first", "start"), Col("last", "end"),
            Col("length", "length", right=True), Col("messages", "messages", right=True),
            Col("turns", "turns", right=True), Col("barge_ins", "barge-ins", right=True),
            Col("calls", "calls", right=True),
            Col("problems", "problems", right=True, style=lambda r: "fault" if r.get("problems") else None))
    footer = []
    if sc.limit is not None and len(listed) >= sc.limit:
        footer.append("older sessions not shown (--limit or --since to see them)")
    return Table("session", SESSION_COLUMNS, listed, show, footer=footer, empty="no sessions")


ALL_COLUMNS = tuple(dict.fromkeys(("kind", *TAGS, *MESSAGE_COLUMNS, *MEMORY_COLUMNS, *CALL_COLUMNS, "outcome",
                                   *EVENT_COLUMNS, "time")))


def everything(sc: Scope) -> Table:
    """``export all``: messages, memories, function calls (and the event log with
    ``--events``), each row with its ``kind``; CSV gets the union of their columns."""
    clock = sc.card.clock

    def out() -> Iterator[Row]:
        for source, r in rows(sc, MESSAGES):
            yield {"kind": "message", **sc.tag(source, r)}
        for source, r in rows(sc, MEMORIES, replace(sc.window, by_session=False)):
            yield {"kind": "memory", **sc.tag(source, r)}
        for source, r in rows(sc, CALLS):
            row = call_row(sc, source, r)
            del row["what"], row["level"]
            yield {"kind": "call", **row}
        if sc.opts.events:
            for source, r in rows(sc, EVENTS, lambda source: event_window(sc, source)):
                ts = r.get("ts")
                yield {"kind": "event", **sc.tag(source, r),
                       "time": clock.local(ts, ms=True) if isinstance(ts, (int, float)) else None}

    show = (Col("kind", "kind"), Col("source", "from"), Col("session_id", "session", max=18),
            Col("content", "text", wrap=True))
    return Table("row", ALL_COLUMNS, out(), show)
