"""The transcript: one session as a conversation, with what the robot did and what went wrong.

Lines come from three tables. ``messages`` give who said what, in the order they were stored
(a user's turn is stored when it begins, so it keeps its place; the robot's when its answer
ends), with their status: a user turn whose transcription failed, an answer ``cancelled``,
``incomplete`` or ``failed``. ``function_calls`` give each motion, emotion and function call
with its outcome; a call is shown under the answer of its response. The event log gives the
precise moments: ``input_audio_buffer.speech_started`` during a response is a barge-in (the
answer it cut off is marked, with how far it had got), and the voice agent's ``error`` events
appear where they happened. Faults the database does not record (bad frames the agent
rejected, serial outages, card fallbacks) cannot appear; a failed call's reason often names
them.

A page is the session's newest ``--limit`` messages with the calls and events of their time;
an export walks the whole session a chunk at a time (constant memory).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..storage.finder import CALLS, EVENTS, MESSAGES, Window
from .cards import Source
from .outcome import describe
from .pages import earlier, neighbours, page
from .scope import Row, Scope, choose_session
from .table import Table

COLUMNS = ("card", "source", "session_id", "time", "kind", "who", "text", "status", "level", "item_id",
           "response_id", "call_id")
EVENT_TYPES = ("input_audio_buffer.speech_started", "response.created", "response.done", "error",
               "conversation.item.created")
WHO = {"user": "user", "assistant": "robot", "system": "system"}
CALL_LEAD = 120.0  # seconds: a response's calls are made before its answer is stored
CHUNK = 1000       # messages per step of an export


def transcript(sc: Scope) -> Table:
    sc = choose_session(sc, default_last=True)
    empty = "nothing was said" + (" that matches the filters" if _narrowed(sc) else "")
    if sc.nothing:
        return Table("entry", COLUMNS, [], style="transcript", empty=empty)
    if sc.limit is None:
        return Table("entry", COLUMNS, _all(sc), style="transcript", empty="nothing was said", tagged=sc.tagged)
    shown = page(sc, MESSAGES)
    before = earlier(sc, MESSAGES, shown)
    lo = None if before == 0 or not shown else str(shown[0][1]["datetime"] or "")
    entries = _fallback_marks(sc, _entries(sc, shown, lo=lo, hi=None))
    footer = [f"{before} earlier message(s) of this session not shown (--limit or --since to see them)"] \
        if before else []
    return Table("entry", COLUMNS, _with_header(sc, entries, before), style="transcript", footer=footer,
                 tagged=sc.tagged, empty=empty)


def _fallback_marks(sc: Scope, entries: list[Row]) -> list[Row]:
    """Where the conversation goes on in the fallback database, a line says so: from there
    the TF card could not take what was stored (missing, full or read-only)."""
    out: list[Row] = []
    before = None
    for e in entries:
        if e.get("source") == "fallback" and before not in (None, "fallback") and not e.get("attached"):
            out.append({**dict.fromkeys(COLUMNS), "card": sc.card.label, "source": "fallback",
                        "session_id": e.get("session_id"), "time": e.get("time"), "kind": "storage",
                        "who": "", "text": "from here on the rows went to the fallback database: the TF card "
                        "could not take them (missing, full or read-only)", "level": "fault", "mark": "fault"})
        before = e.get("source") if not e.get("attached") else before
        out.append(e)
    return out


def _narrowed(sc: Scope) -> bool:
    w = sc.window
    return any(v is not None for v in (w.since, w.until, w.role, w.grep))


def _with_header(sc: Scope, entries: list[Row], before: int) -> list[Row]:
    said = [e for e in entries if e["kind"] == "message"]
    calls = sum(1 for e in entries if e["kind"] == "call")
    if not said and not calls:
        return []
    times = [e["time"] for e in entries if e.get("time")]
    first, last = (min(times), max(times)) if times else ("", "")
    sid = sc.window.session
    name = f"Session {sid}" if sid is not None else "Messages without a session"
    span = f"{first} – {last[11:19]}" if first[:10] == last[:10] else f"{first} – {last}"
    text = f"{name} · {span} · {len(said)} message(s), {calls} call(s)"
    if before:
        text += f" (the last {len(said)}; {before} before)"
    head = {**dict.fromkeys(COLUMNS), "card": sc.card.label, "session_id": sid, "time": first, "kind": "session",
            "who": "", "text": text}
    return [head, *entries]


def _all(sc: Scope) -> Iterator[Row]:
    """Every line of the session, a chunk of messages at a time (each chunk's calls and events
    are those of its time: from its first message to the next chunk's)."""
    sid = sc.window.session
    said = sum(s.finder.count(MESSAGES, sc.window) for s in sc.card.sources)
    if not said:
        return
    calls = sum(s.finder.count(CALLS, sc.window) for s in sc.card.sources)
    spans = [s.finder.session_span(sid) for s in sc.card.sources]
    first = min(str(s["first"]) for s in spans if s["first"])
    last = max(str(s["last"]) for s in spans if s["last"])
    name = f"Session {sid}" if sid is not None else "Messages without a session"
    yield {**dict.fromkeys(COLUMNS), "card": sc.card.label, "session_id": sid, "time": first, "kind": "session",
           "who": "", "text": f"{name} · {first} – {last} · {said} message(s), {calls} call(s)"}
    for source in sc.card.sources:
        lo: str | None = None
        chunk: list[tuple[Source, Row]] = []
        for row in source.finder.scan(MESSAGES, sc.window, page=CHUNK):
            if len(chunk) >= CHUNK:
                hi = str(row["datetime"] or "")
                yield from _entries(sc, chunk, lo=lo, hi=hi, only=source)
                lo, chunk = hi, []
            chunk.append((source, row))
        yield from _entries(sc, chunk, lo=lo, hi=None, only=source)


def _entries(sc: Scope, msgs: list[tuple[Source, Row]], *, lo: str | None, hi: str | None,
             only: Source | None = None) -> list[Row]:
    """The lines of the messages ``msgs`` (a page or a chunk, oldest first) with the calls and
    events of the time ``lo <= t < hi`` (``None``: the session's start, its end)."""
    clock = sc.card.clock
    w = sc.window
    sid = w.session
    entries: list[Row] = []
    calls: list[tuple[Source, Row]] = []
    events: list[tuple[Source, Row]] = []
    for source in sc.card.sources if only is None else [only]:
        call_w = replace(w, since=_minus(clock, lo, CALL_LEAD) or w.since,
                         until=_earliest(_minus(clock, hi, -CALL_LEAD), w.until))
        calls += [(source, r) for r in source.finder.scan(CALLS, call_w)]
        if sid is None or not source.finder.columns(EVENTS):
            continue
        around = neighbours(source, sid) if lo is None or hi is None else (None, None)
        lo_text, hi_text = lo or around[0], hi or around[1]
        lo_ts, hi_ts = clock.epoch(lo_text), clock.epoch(hi_text)
        ev_w = Window(since_ts=(lo_ts - CALL_LEAD) if lo_ts is not None else w.since_ts,
                      until_ts=(hi_ts + (0.0 if hi else 2.0)) if hi_ts is not None else w.until_ts,
                      by_session=True, session=sid, types=EVENT_TYPES)
        events += [(source, r) for r in source.finder.scan(EVENTS, ev_w)]
    barge, created = _barge_ins(events)
    moments = _moments(events)
    answered = {r.get("response_id") for _, r in msgs if r.get("role") == "assistant" and r.get("response_id")}
    for _, c in calls:  # a call dropped for a barge-in tells of the barge-in even without events
        if c.get("status") == "dropped" and "barge-in" in str(c.get("result") or "") and c.get("response_id"):
            barge.setdefault(str(c["response_id"]), None)
    by_response: dict[Any, list[tuple[Source, Row]]] = defaultdict(list)
    floating: list[tuple[float, Row]] = []
    start = lo or ""
    end = hi or "\uffff"
    loose = [(s, c) for s, c in calls if c.get("response_id") not in answered
             and start <= str(c.get("created") or "") < end]
    elsewhere = _answered_elsewhere(sc, loose) if lo is not None or hi is not None else set()
    for source, c in calls:
        rid = c.get("response_id")
        if rid in answered:
            by_response[rid].append((source, c))
        elif start <= str(c.get("created") or "") < end and rid not in elsewhere:
            floating.append((_at(clock, c.get("created")), _call(sc, source, c, rid in barge)))
    if w.grep is None and w.role in (None, "system", "assistant"):
        for source, e in events:
            ts = e.get("ts")
            if not isinstance(ts, (int, float)):
                continue
            when = clock.local(ts)
            if not start <= when < end:
                continue
            if e.get("type") == "error" and w.role != "assistant":
                floating.append((float(ts), _line(sc, source, e, when, "error", "system",
                                             "the voice agent reported an error", level="fault", mark="fault")))
        for rid, ts in barge.items():
            if rid not in answered and ts is not None and w.role != "system" and start <= clock.local(ts) < end:
                source = next((s for s, e in events if e.get("response_id") == rid), sc.card.sources[0])
                text = "cut off by barge-in before saying anything" + _into(ts, created.get(rid))
                floating.append((ts, _line(sc, source, {"response_id": rid}, clock.local(ts), "barge-in",
                                                        "robot", text, level="cut", mark="cut")))
    floating.sort(key=lambda t: t[0])
    i = 0
    for source, m in msgs:
        moment = _moment(clock, m, moments)
        while i < len(floating) and floating[i][0] < moment:
            entries.append(floating[i][1])
            i += 1
        entries += _message(sc, source, m, barge, created, by_response.get(m.get("response_id"), []))
    entries += [f for _, f in floating[i:]]
    return entries


def _answered_elsewhere(sc: Scope, loose: list[tuple[Source, Row]]) -> set[Any]:
    """Responses of ``loose`` calls whose answer is stored just after them but outside this
    page or chunk: their calls are shown under that answer, not here."""
    found: set[Any] = set()
    for source in sc.card.sources:
        mine = [c for s, c in loose if s is source and c.get("response_id") and c.get("created")]
        if not mine:
            continue
        first = min(str(c["created"]) for c in mine)
        last = _minus(sc.card.clock, max(str(c["created"]) for c in mine), -CALL_LEAD)
        w = Window(since=first, until=last, by_session=True, session=sc.window.session, role="assistant")
        wanted = {c["response_id"] for c in mine}
        found |= {rid for (rid,) in source.finder.select(MESSAGES, w, "DISTINCT response_id") if rid in wanted}
    return found


def _at(clock: Any, text: Any) -> float:
    """A stored local time (whole seconds) as epoch seconds, in the middle of its second."""
    ts = clock.epoch(str(text)) if text else None
    return ts + 0.5 if ts is not None else float("-inf")


def _moments(events: list[tuple[Source, Row]]) -> dict[tuple[str, str], float]:
    """When each user item was created and each response was done (the event log's precise
    times of what ``messages`` stores to the second)."""
    out: dict[tuple[str, str], float] = {}
    for _, e in events:
        ts = e.get("ts")
        if not isinstance(ts, (int, float)):
            continue
        if e.get("type") == "conversation.item.created" and e.get("item_id"):
            out.setdefault(("item", str(e["item_id"])), float(ts))
        elif e.get("type") == "response.done" and e.get("response_id"):
            out.setdefault(("response", str(e["response_id"])), float(ts))
    return out


def _moment(clock: Any, m: Row, moments: dict[tuple[str, str], float]) -> float:
    key = ("response", str(m.get("response_id"))) if m.get("role") == "assistant" else ("item", str(m.get("item_id")))
    return moments.get(key) or _at(clock, m.get("datetime"))


def _minus(clock: Any, text: str | None, seconds: float) -> str | None:
    ts = clock.epoch(text) if text else None
    return clock.local(ts - seconds) if ts is not None else None


def _earliest(a: str | None, b: str | None) -> str | None:
    return min(a, b) if a is not None and b is not None else (a if a is not None else b)


def _barge_ins(events: list[tuple[Source, Row]]) -> tuple[dict[str, float | None], dict[str, float]]:
    """Responses cut off by the user speaking: response id -> when the speech began."""
    created: dict[str, float] = {}
    done: dict[str, float] = {}
    speech: list[float] = []
    for _, e in events:
        ts, rid, etype = e.get("ts"), e.get("response_id"), e.get("type")
        if not isinstance(ts, (int, float)):
            continue
        if etype == "response.created" and rid:
            created.setdefault(str(rid), float(ts))
        elif etype == "response.done" and rid:
            done.setdefault(str(rid), float(ts))
        elif etype == "input_audio_buffer.speech_started":
            speech.append(float(ts))
    barge: dict[str, float | None] = {}
    for ts in speech:
        live = [(t, rid) for rid, t in created.items() if t <= ts and done.get(rid, float("inf")) >= ts]
        if live:
            rid = max(live)[1]
            barge.setdefault(rid, ts)
    return barge, created


def _into(ts: float, began: float | None) -> str:
    return f" ({ts - began:.1f} s into the answer)" if began is not None and ts >= began else ""


def _line(sc: Scope, source: Source, row: Row, when: str, kind: str, who: str, text: str, *,
          level: str | None = None, mark: str | None = None, attached: bool = False,
          status: str | None = None, placeholder: bool = False) -> Row:
    return {"card": sc.card.label, "source": source.name, "session_id": row.get("session_id", sc.window.session),
            "time": when, "kind": kind, "who": who, "text": text, "status": status, "level": level,
            "item_id": row.get("item_id"), "response_id": row.get("response_id"), "call_id": row.get("call_id"),
            "mark": mark, "attached": attached, "placeholder": placeholder}


def _call(sc: Scope, source: Source, c: Row, barge_in: bool, attached: bool = False) -> Row:
    o = describe(c.get("name"), c.get("arguments"), c.get("status"), c.get("result"), barge_in=barge_in)
    return _line(sc, source, c, str(c.get("created") or ""), "call", "robot" if not attached else "",
                 f"{o.what} {o.text}", level=None if o.level == "ok" else o.level, mark="call",
                 attached=attached, status=o.status)


def _message(sc: Scope, source: Source, m: Row, barge: dict[str, float | None], created: dict[str, float],
             calls: list[tuple[Source, Row]]) -> list[Row]:
    role = str(m.get("role") or "")
    status = m.get("status")
    content = str(m.get("content") or "")
    when = str(m.get("datetime") or "")
    who = WHO.get(role, role or "?")
    out: list[Row] = []
    if role == "user" and not content.strip():
        if status == "transcription_failed":
            out.append(_line(sc, source, m, when, "message", who, "(not understood: the transcription failed)",
                             level="fault", status=status, placeholder=True))
        elif status in ("pending", "incomplete"):
            text = ("(spoke; no transcript arrived before the connection closed)" if status == "incomplete"
                    else "(spoke; the transcript had not arrived yet)")
            out.append(_line(sc, source, m, when, "message", who, text, level="note", status=status,
                             placeholder=True))
        else:
            out.append(_line(sc, source, m, when, "message", who, "(nothing)", status=status, placeholder=True))
        return out
    out.append(_line(sc, source, m, when, "message", who, content, status=status))
    rid = m.get("response_id")
    if role == "assistant" and status in ("cancelled", "incomplete", "failed"):
        words = len(content.split())
        said = f"after {words} word{'s' if words != 1 else ''}"
        if rid in barge:
            ts = barge[str(rid)]
            at = f" at {sc.card.clock.local(ts)[11:19]}" if ts is not None else ""
            text, level = f"cut off by barge-in{at} {said}" + (_into(ts, created.get(str(rid))) if ts else ""), "cut"
        elif status == "cancelled":
            text, level = f"cancelled {said}", "cut"
        elif status == "incomplete":
            text, level = f"did not finish {said} (incomplete: the connection or the response was cut)", "fault"
        else:
            text, level = f"the response failed {said}", "fault"
        out.append(_line(sc, source, m, when, "barge-in" if rid in barge else "cut", "", text, level=level,
                         mark="cut", attached=True, status=status))
    for src, c in sorted(calls, key=lambda t: str(t[1].get("created") or "")):
        out.append(_call(sc, src, c, str(rid) in barge, attached=True))
    return out
