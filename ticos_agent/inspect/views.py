"""The row views (``messages``, ``memories``, ``calls``, ``events``, ``sessions``) and
``export all`` (:func:`everything`).

A view's page is each database's newest ``--limit`` rows, put together and shown oldest first
(the newest at the bottom, next to the prompt); an export (no limit) streams every row of the
card, then of its fallback (see :mod:`.pages`). ``sessions`` counts each session's turns,
barge-ins, calls and problems through its span.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..storage.finder import CALLS, EVENTS, MEMORIES, MESSAGES, Window
from ..storage.schema import CALL_COLUMNS, EVENT_COLUMNS, MEMORY_COLUMNS, MESSAGE_COLUMNS
from .cards import Source
from .outcome import describe
from .pages import event_window, more, rows
from .scope import Row, Scope
from .table import Col, Table, duration, short_session

TAGS = ("card", "source")


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
    return Table("message", (*TAGS, *MESSAGE_COLUMNS), out(), show, footer=more(sc, MESSAGES, shown, "messages"),
                 empty="no messages")


def memories(sc: Scope) -> Table:
    w = replace(sc.window, by_session=False)  # memories belong to no session
    shown = list(rows(sc, MEMORIES, w))
    show = (Col("datetime", "time"), *_tagged_col(sc), Col("type", "type"), Col("user_id", "user"),
            Col("content", "memory", wrap=True))
    return Table("memory", (*TAGS, *MEMORY_COLUMNS), (sc.tag(s, r) for s, r in shown), show,
                 footer=more(sc, MEMORIES, shown, "memories"), empty="no memories")


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
                 footer=more(sc, CALLS, listed or [], "calls"), empty="no function calls")


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
                 footer=more(sc, EVENTS, listed or [], "events", windows),
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
