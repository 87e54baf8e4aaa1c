"""The faults view: everything that went wrong, grouped and counted, each group with the
session and time of its latest case to look at.

What the database records, and so what can be shown:

* calls that ``failed`` (unknown tag, an actuator down or lost during a command, a handler
  that raised or timed out, no handler), were answered ``busy``, were ``dropped`` (barge-in,
  a cancelled response, preempted), were never run (cut off before their arguments were
  complete) or have no outcome (the agent stopped first); reasons that differ only in numbers
  and ids count as one;
* serial and GPIO outages, *inferred* from the calls that failed because an actuator was down
  or lost its device (first and last such call: the outage itself is not recorded);
* user turns whose transcription failed or that were lost with their connection, answers that
  failed or did not finish;
* the voice agent's own ``error`` events (their message is not stored);
* the storage fallback: rows waiting in the fallback database (the card was missing, full or
  read-only then), and a merge into the card that was interrupted.

Not recorded anywhere, so not shown: frames the agent rejected (bad JSON, wrong shapes) and
the error replies it sent, when a serial device went away or came back, card losses once
their rows are merged, handler calls dropped because the handler thread was behind, event-log
rows dropped while storage was failing, records the database rejected, audio underruns.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ..storage.finder import CALLS, EVENTS, MESSAGES, Finder
from ..storage.reader import twin
from .cards import Source
from .outcome import actuator_fault, dropped_reason, loads, reason_key
from .scope import Row, Scope, choose_session
from .table import Col, Table, duration, short_session

COLUMNS = ("card", "category", "what", "count", "first", "last", "session_id", "time", "detail")
ORDER = ("actuator outage", "call failed", "call busy", "call not run", "call without outcome",
         "transcription failed", "user turn lost", "answer failed", "answer incomplete", "voice agent error",
         "storage fallback", "call not shown", "call dropped")
_CALL_CATEGORY = {"failed": "call failed", "busy": "call busy", "not_dispatched": "call not run",
                  "received": "call without outcome", "dropped": "call dropped", "not_shown": "call not shown"}
_MESSAGE_CATEGORY = {("user", "transcription_failed"): "transcription failed", ("user", "incomplete"): "user turn lost",
                     ("assistant", "failed"): "answer failed", ("assistant", "incomplete"): "answer incomplete"}


@dataclass
class Group:
    category: str
    what: str
    count: int = 0
    first: str | None = None
    last: str | None = None
    last_rowid: tuple[Source, int] | None = None
    names: dict[str, int] = field(default_factory=dict)
    reason: str | None = None  # an outage's latest reason
    episodes: list[tuple[str, str, int]] = field(default_factory=list)  # an outage's (first, last, calls)

    def add(self, n: int, first: Any, last: Any, where: tuple[Source, int] | None, name: str | None = None) -> None:
        self.count += n
        if first is not None and (self.first is None or str(first) < self.first):
            self.first = str(first)
        if last is not None and (self.last is None or str(last) >= self.last):
            self.last = str(last)
            self.last_rowid = where or self.last_rowid
        if name:
            self.names[name] = self.names.get(name, 0) + n


def _calls(sc: Scope, source: Source, groups: dict[tuple[str, str], Group]) -> None:
    w = replace(sc.window, statuses=tuple(_CALL_CATEGORY))
    fields = "status, name, {reason}, COUNT(*), MIN(created), MAX(created), MAX(rowid)"
    try:
        found = source.finder.select(CALLS, w, fields.format(reason="json_extract(result, '$.reason')"),
                                     "GROUP BY 1, 2, 3")
    except sqlite3.OperationalError:  # an SQLite without JSON: read the outcomes here
        found = []
        for status, name, result, created, rowid in source.finder.select(
                CALLS, w, "status, name, result, created, rowid"):
            outcome = loads(result)
            reason = outcome.get("reason") if isinstance(outcome, dict) else None
            found.append((status, name, reason, 1, created, created, rowid))
    outages: dict[str, Group] = {}
    for status, name, reason, n, first, last, rowid in found:
        category = _CALL_CATEGORY.get(status, "call failed")
        if status == "dropped":
            what = dropped_reason(reason)
        elif status == "not_dispatched":
            what = "cut off before its arguments were complete"
        elif status == "received":
            what = "no outcome was stored (the agent stopped, or it is still running)"
        elif status == "not_shown":
            what = reason_key(reason).split(":")[0] + " (the config gives it no light, emotion line or pose)"
        else:
            what = reason_key(reason)
        down = actuator_fault(reason) if status == "failed" else None
        if down is not None:  # counted once, under the outage it tells of
            key = f"actuator '{down[0]}' ({down[1]})"
            group = outages.setdefault(key, Group("actuator outage", key))
            if last is not None and (group.last is None or str(last) >= group.last):
                group.reason = what
        else:
            group = groups.setdefault((category, what), Group(category, what))
        group.add(n, first, last, (source, rowid), name)
    if outages:
        _episodes(sc, source, outages)
    for key, group in outages.items():
        merged = groups.setdefault(("actuator outage", key), Group("actuator outage", key))
        merged.add(group.count, group.first, group.last, group.last_rowid)
        merged.reason = group.reason if merged.reason is None else merged.reason
        merged.episodes = sorted(merged.episodes + group.episodes)
        for name, n in group.names.items():
            merged.names[name] = merged.names.get(name, 0) + n


OUTAGE_GAP = 15 * 60.0  # seconds between failed calls that make them two outages, not one


def _episodes(sc: Scope, source: Source, outages: dict[str, Group]) -> None:
    """Each actuator's failed calls in runs: an outage is the calls that failed no more than
    :data:`OUTAGE_GAP` apart (the outage itself is not recorded; its calls are)."""
    w = replace(sc.window, statuses=("failed",))
    try:
        found = source.finder.select(CALLS, w, "created, json_extract(result, '$.reason')",
                                     "AND json_extract(result, '$.reason') LIKE 'actuator %' ORDER BY rowid")
    except sqlite3.OperationalError:
        found = []
        for created, result in source.finder.select(CALLS, w, "created, result", "ORDER BY rowid"):
            outcome = loads(result)
            found.append((created, outcome.get("reason") if isinstance(outcome, dict) else None))
    times: dict[str, list[str]] = {}
    for created, reason in found:
        down = actuator_fault(reason)
        if down is not None and created:
            times.setdefault(f"actuator '{down[0]}' ({down[1]})", []).append(str(created))
    clock = sc.card.clock
    for key, moments in times.items():
        group = outages.get(key)
        if group is None:
            continue
        runs: list[tuple[str, str, int]] = []
        for when in sorted(moments):
            ts, last = clock.epoch(when), clock.epoch(runs[-1][1]) if runs else None
            if runs and ts is not None and last is not None and ts - last <= OUTAGE_GAP:
                runs[-1] = (runs[-1][0], when, runs[-1][2] + 1)
            else:
                runs.append((when, when, 1))
        group.episodes = runs


def _message_rows(sc: Scope, source: Source) -> list[tuple[Any, ...]]:
    """The failed and unfinished messages, grouped: a scan of every message, so it runs on its
    own connection on a worker thread while the calls are read (half the time on two cores)."""
    conn = twin(source.conn)
    try:
        finder = Finder(conn)
        if not {"role", "status"} <= finder.columns(MESSAGES):
            return []
        w = replace(sc.window, statuses=("transcription_failed", "incomplete", "failed"))
        return list(finder.select(
            MESSAGES, w, "role, status, COUNT(*), MIN(datetime), MAX(datetime), MAX(rowid)", "GROUP BY 1, 2"))
    finally:
        conn.close()


def _messages(source: Source, rows: list[tuple[Any, ...]], groups: dict[tuple[str, str], Group]) -> None:
    for role, status, n, first, last, rowid in rows:
        category = _MESSAGE_CATEGORY.get((role, status))
        if category is None:
            continue
        what = {"transcription failed": "the robot did not catch what was said",
                "user turn lost": "the connection closed before the transcript arrived",
                "answer failed": "the response failed",
                "answer incomplete": "the answer did not finish (connection lost, or the response was cut short)",
                }[category]
        groups.setdefault((category, what), Group(category, what)).add(n, first, last, (source, rowid))


def _errors(sc: Scope, source: Source, groups: dict[tuple[str, str], Group]) -> None:
    clock = sc.card.clock
    w = replace(sc.window, types=("error",), role=None if sc.window.role in (None, "system") else sc.window.role)
    for n, first, last, rowid in source.finder.select(EVENTS, w, "COUNT(*), MIN(ts), MAX(ts), MAX(rowid)"):
        if n:
            what = "the voice agent sent an error event (its message is not stored)"
            group = groups.setdefault(("voice agent error", what), Group("voice agent error", what))
            group.add(n, clock.local(first), clock.local(last), (source, rowid))


def _storage(sc: Scope, groups: dict[tuple[str, str], Group]) -> None:
    for source in sc.card.sources:
        if source.name == "fallback":
            for kind in (MESSAGES, CALLS):
                n = source.finder.count(kind, replace(sc.window, by_session=False))
                if n:
                    what = "rows written to the fallback database while the TF card could not take them; not merged yet"
                    got = source.finder.select(kind, replace(sc.window, by_session=False),
                                               f"MIN({kind.time}), MAX({kind.time}), MAX(rowid)")
                    first, last, rowid = got[0]
                    groups.setdefault(("storage fallback", what), Group("storage fallback", what)).add(
                        n, first, last, (source, rowid), kind.table)
            continue
        try:
            marks = source.conn.execute("SELECT tbl, upto, merged FROM ticos_merged").fetchall()
        except sqlite3.Error:
            continue
        for table, upto, merged in marks:
            what = "a merge of fallback rows into this card was interrupted (it resumes when the agent runs)"
            groups.setdefault(("storage fallback", what), Group("storage fallback", what)).add(
                1, merged, merged, None, f"{table} up to row {upto}")


def faults(sc: Scope) -> Table:
    sc = choose_session(sc)
    groups: dict[tuple[str, str], Group] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="faults") as pool:
        scans: list[Future[list[tuple[Any, ...]]]] = [pool.submit(_message_rows, sc, s) for s in sc.card.sources]
        for source in sc.card.sources:
            if sc.window.role in (None, "assistant"):
                _calls(sc, source, groups)
            if sc.window.grep is None:
                _errors(sc, source, groups)
        for source, scan in zip(sc.card.sources, scans):
            _messages(source, scan.result(), groups)
    if sc.window.grep is None and not sc.window.by_session:
        _storage(sc, groups)
    ordered = sorted(groups.values(), key=lambda g: (ORDER.index(g.category) if g.category in ORDER else 99,
                                                     -g.count, g.what))
    if sc.window.grep:
        needle = sc.window.grep.lower()
        ordered = [g for g in ordered if needle in g.what.lower() or needle in g.category]
    limit = sc.limit if sc.limit is not None else len(ordered)
    listed = [_row(sc, g) for g in ordered[:limit]]
    total = sum(g.count for g in ordered)
    footer = [f"{len(ordered) - limit} more group(s) not shown (--limit)"] if len(ordered) > limit else []
    if listed:
        footer.append(f"{total} fault(s) in {len(ordered)} group(s); 'look at' is the latest case: "
                      "inspect transcript --session ID --since TIME")
    show = (Col("category", "category",
                style=lambda r: "note" if r["category"] in ("call dropped", "call not shown") else "fault"),
            Col("count", "count", right=True), Col("first", "first"), Col("last", "last"),
            Col("look_at", "look at"), Col("shown", "what", wrap=True))
    return Table("fault", COLUMNS, listed, show, footer=footer, empty="no faults recorded")


def _row(sc: Scope, g: Group) -> Row:
    session = when = None
    if g.last_rowid is not None:
        source, rowid = g.last_rowid
        kind = {"voice agent error": EVENTS}.get(g.category, MESSAGES if g.category in (
            "transcription failed", "user turn lost", "answer failed", "answer incomplete") else CALLS)
        if g.category == "storage fallback" and g.names.get("messages"):
            kind = MESSAGES
        try:
            found = source.conn.execute(f"SELECT session_id, {kind.time} FROM {kind.table} WHERE rowid = ?",
                                        (rowid,)).fetchone()
        except sqlite3.Error:
            found = None
        if found:
            session = found[0]
            when = sc.card.clock.local(found[1]) if isinstance(found[1], (int, float)) else found[1]
    detail = ", ".join(f"{k} {v}" for k, v in sorted(g.names.items(), key=lambda t: -t[1]))
    if g.category == "actuator outage" and g.reason:
        detail = g.reason
    shown = g.what
    if g.category == "actuator outage":
        shown = f"{g.what} down or lost: {g.count} call(s) failed" + _outages(sc, g) + \
            " (seen in the calls: outages themselves are not recorded)" + \
            (f"; the last said: {g.reason}" if g.reason else "")
    elif detail and g.category.startswith("call"):
        shown += f" ({detail})"
    look = f"{short_session(session, 14)} {str(when or '')[11:19]}" if session or when else ""
    return {"card": sc.card.label, "category": g.category, "what": g.what, "count": g.count, "first": g.first,
            "last": g.last, "session_id": session, "time": when, "detail": detail, "shown": shown,
            "look_at": look}


def _outages(sc: Scope, g: Group) -> str:
    runs = g.episodes or [(g.first or "", g.last or "", g.count)]
    first, last, n = runs[-1]
    span = duration(_seconds(sc, first, last))
    when = f"at {first}" if first == last else f"from {first} to {last[11:] if first[:10] == last[:10] else last}" + (
        f" ({span})" if span else "")
    if len(runs) == 1:
        return f" {when}"
    return (f" in {len(runs)} outages (failures over {OUTAGE_GAP / 60:.0f} min apart count apart); "
            f"the latest: {n} call(s) {when}")


def _seconds(sc: Scope, first: str | None, last: str | None) -> float | None:
    a, b = sc.card.clock.epoch(first), sc.card.clock.epoch(last)
    return b - a if a is not None and b is not None else None
