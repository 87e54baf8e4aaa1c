"""The summary view: per day, then per session of that day: turns, speaking time, barge-ins,
commands by tag and outcome, failure rates.

``--limit`` counts days (the newest ones with messages in the filters). Each day is read
through its rowid range (found by binary search), so a day costs what it holds, however big
the card. Speaking time: the user's is measured from the event log (from
``speech_started`` to ``speech_stopped``; ``-`` where the log has no such events); the
robot's, per day, is the time it spent in its ``speaking`` state (the event log's
``robot.state.*`` lines), else, and per session, estimated from the length of what it said
(15 characters a second, the pace of speech), marked ``≈``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from ..storage.finder import CALLS, EVENTS, MESSAGES, Window
from .outcome import EMOTIONS, MOTIONS, dropped_reason, loads
from .scope import Row, Scope, choose_session
from .table import Col, Table, duration, short_session

COLUMNS = ("card", "level", "day", "session_id", "start", "end", "sessions", "turns", "robot_speech_s",
           "robot_speech_from",
           "user_speech_s", "barge_ins", "calls", "calls_done", "calls_failed", "calls_dropped", "calls_busy",
           "transcriptions_failed", "answers_cut_short", "commands")
CHARS_PER_SECOND = 15.0
_WORDS = {"not_dispatched": "not run", "received": "no outcome", "not_shown": "not shown"}
_SPEECH = ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "response.created",
           "response.done")


@dataclass
class Tally:
    start: str | None = None
    end: str | None = None
    turns: int = 0
    robot_chars: int = 0
    user_s: float | None = None
    cut: set[str] = field(default_factory=set)         # responses cut off by the user speaking
    cancelled: set[str] = field(default_factory=set)   # answers stored as cancelled
    cut_unknown: int = 0
    heard: bool = False                                # the event log covers it
    total: bool = False                                # a day's sum of sessions
    calls: Counter[str] = field(default_factory=Counter)
    commands: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failed_transcriptions: int = 0
    short_answers: int = 0
    sessions: set[Any] = field(default_factory=set)

    def seen(self, when: Any) -> None:
        if when:
            text = str(when)
            self.start = text if self.start is None or text < self.start else self.start
            self.end = text if self.end is None or text > self.end else self.end

    def merge(self, other: Tally) -> None:
        self.seen(other.start)
        self.seen(other.end)
        self.turns += other.turns
        self.robot_chars += other.robot_chars
        if other.user_s is not None:
            self.user_s = (self.user_s or 0.0) + other.user_s
        self.cut |= other.cut_offs
        self.cut_unknown += 0 if other.heard else other.cut_unknown
        self.total = True
        self.calls.update(other.calls)
        for tag, counts in other.commands.items():
            self.commands[tag].update(counts)
        self.failed_transcriptions += other.failed_transcriptions
        self.short_answers += other.short_answers
        self.sessions |= other.sessions

    @property
    def cut_offs(self) -> set[str]:
        """Responses cut off by a barge-in: seen in the event log, or told by a call dropped for
        one; without an event log, every answer stored as cancelled."""
        return self.cut if self.heard or self.total else self.cut | self.cancelled

    @property
    def barge_ins(self) -> int:
        return len(self.cut_offs) + (self.cut_unknown if self.total or not self.heard else 0)


def _days(sc: Scope, limit: int) -> list[str]:
    """The newest ``limit`` days with messages in the filters, newest first."""
    days: list[str] = []
    until = sc.window.until
    while len(days) < limit:
        w = replace(sc.window, until=until)
        newest = [str(r[0]["datetime"] or "")[:10] for r in (s.finder.newest(MESSAGES, w, 1) for s in sc.card.sources)
                  if r]
        newest = [d for d in newest if len(d) == 10]
        if not newest:
            break
        day = max(newest)
        days.append(day)
        until = f"{day} 00:00:00"
    return days


def _day_window(sc: Scope, day: str) -> Window:
    w = sc.window
    since, until = f"{day} 00:00:00", f"{_next(day)} 00:00:00"
    since = max(since, w.since) if w.since else since
    until = min(until, w.until) if w.until else until
    clock = sc.card.clock
    return replace(w, since=since, until=until, since_ts=clock.epoch(since), until_ts=clock.epoch(until))


def _next(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def _tally_day(sc: Scope, day: str) -> dict[Any, Tally]:
    w = _day_window(sc, day)
    per: dict[Any, Tally] = defaultdict(Tally)
    for source in sc.card.sources:
        f = source.finder
        cols = f.columns(MESSAGES)
        sid = "session_id" if "session_id" in cols else "NULL"
        status = "status" if "status" in cols else "NULL"
        rid = "response_id" if "response_id" in cols else "NULL"
        for session, role, st, chars, when, response in f.select(
                MESSAGES, w, f"{sid}, role, {status}, length(content), datetime, {rid}"):
            t = per[session]
            t.sessions.add(session)
            t.seen(when)
            if role == "user":
                t.turns += 1
                t.failed_transcriptions += st == "transcription_failed"
            elif role == "assistant":
                t.robot_chars += chars or 0
                t.short_answers += st in ("incomplete", "failed")
                if st == "cancelled":
                    if response:
                        t.cancelled.add(str(response))
                    else:
                        t.cut_unknown += 1
        if w.role not in (None, "assistant"):
            continue
        for session, name, st, arguments, result, response in f.select(
                CALLS, w, "session_id, name, status, arguments, result, response_id"):
            t = per[session]
            t.calls[str(st)] += 1
            args = loads(arguments)
            args = args if isinstance(args, dict) else {}
            tags = [str(args.get(k)) for k, names in (("motion_tag", MOTIONS), ("emotion_tag", EMOTIONS))
                    if name in names and args.get(k) is not None] or [str(name)]
            outcome = loads(result)
            reason = outcome.get("reason") if isinstance(outcome, dict) else None
            for tag in tags:
                t.commands[tag][str(st)] += 1
            if st == "dropped" and response and dropped_reason(reason) == "barge-in":
                t.cut.add(str(response))
        _speech(sc, source, w, per)
    return per


def _speech(sc: Scope, source: Any, w: Window, per: dict[Any, Tally]) -> None:
    """The user's speaking time per session, and barge-ins, from the event log."""
    ev_w = replace(w, types=_SPEECH, role=None, grep=None)
    started: dict[Any, float] = {}
    live: dict[Any, dict[str, float]] = defaultdict(dict)
    for session, etype, ts, response in source.finder.select(EVENTS, ev_w, "session_id, type, ts, response_id",
                                                             "ORDER BY rowid"):
        if session not in per or not isinstance(ts, (int, float)):
            continue
        t = per[session]
        t.heard = True
        if etype == "input_audio_buffer.speech_started":
            started[session] = ts
            if live[session]:
                t.cut.add(max(live[session].items(), key=lambda kv: kv[1])[0])
        elif etype == "input_audio_buffer.speech_stopped" and session in started:
            t.user_s = (t.user_s or 0.0) + max(0.0, ts - started.pop(session))
        elif etype == "response.created" and response:
            live[session][str(response)] = ts
        elif etype == "response.done" and response:
            live[session].pop(str(response), None)


def _speaking(sc: Scope, day: str) -> float | None:
    """How long the robot was in its ``speaking`` state that day, from the event log's
    ``robot.state.*`` lines (``None`` where the log has none: an estimate is used then)."""
    w = replace(_day_window(sc, day), types=None, role=None, grep=None, by_session=False)
    total, since, seen = 0.0, None, False
    for source in sc.card.sources:
        for etype, ts in source.finder.select(EVENTS, w, "type, ts", "AND type LIKE 'robot.state.%' ORDER BY rowid"):
            if not isinstance(ts, (int, float)):
                continue
            if since is not None:
                total += max(0.0, ts - since)
            since = ts if etype == "robot.state.speaking" else None
            seen = seen or since is not None
    return total if seen else None  # no speaking state at all (no audio): the estimate then


def _commands(t: Tally) -> str:
    parts = []
    for tag, counts in sorted(t.commands.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        total = sum(counts.values())
        if set(counts) == {"done"}:
            parts.append(f"{tag} {total}")
        else:
            parts.append(f"{tag} {total} (" + ", ".join(f"{n} {_WORDS.get(s, s)}" for s, n in counts.most_common())
                         + ")")
    return " · ".join(parts)


def _pct(n: int, of: int) -> str:
    return f"{n} of {of} ({100.0 * n / of:.1f} %)" if of else f"{n}"


def _numbers(t: Tally) -> Row:
    calls = sum(t.calls.values())
    failed = t.calls["failed"] + t.calls["not_dispatched"] + t.calls["received"]
    return {"start": t.start, "end": t.end, "turns": t.turns,
            "robot_speech_s": round(t.robot_chars / CHARS_PER_SECOND), "robot_speech_from": "text",
            "user_speech_s": round(t.user_s) if t.user_s is not None else None,
            "barge_ins": t.barge_ins, "calls": calls, "calls_done": t.calls["done"], "calls_failed": failed,
            "calls_dropped": t.calls["dropped"], "calls_busy": t.calls["busy"],
            "transcriptions_failed": t.failed_transcriptions, "answers_cut_short": t.short_answers,
            "commands": _commands(t)}


def summary(sc: Scope) -> Table:
    sc = choose_session(sc)
    limit = sc.limit if sc.limit is not None else 1 << 30
    out: list[Row] = []
    for day in reversed(_days(sc, limit)):
        per = _tally_day(sc, day)
        total = Tally()
        for t in per.values():
            total.merge(t)
        d = _numbers(total)
        measured = None if sc.window.by_session else _speaking(sc, day)
        if measured is not None:
            d.update(robot_speech_s=round(measured), robot_speech_from="states")
        weekday = dt.date.fromisoformat(day).strftime("%a")
        user = f"user spoke {duration(d['user_speech_s'])}" if d["user_speech_s"] is not None else "user speech -"
        robot = duration(d["robot_speech_s"]) or "0s"
        headline = (f"{weekday} {day} · {len(per)} session(s) · {d['turns']} turn(s) · robot spoke "
                    f"{robot if measured is not None else '≈' + robot} · {user} · {d['barge_ins']} barge-in(s)")
        lines = []
        if d["commands"]:
            lines.append(f"commands: {d['commands']}")
        failures = [f"calls failed {_pct(d['calls_failed'], d['calls'])}"] if d["calls"] else []
        if d["calls_busy"]:
            failures.append(f"busy {d['calls_busy']}")
        failures.append(f"transcriptions failed {_pct(d['transcriptions_failed'], d['turns'])}")
        if d["answers_cut_short"]:
            failures.append(f"answers cut short {d['answers_cut_short']}")
        lines.append("failures: " + " · ".join(failures))
        out.append({"card": sc.card.label, "level": "day", "day": day, "session_id": None,
                    "sessions": len(per), **d, "headline": headline, "lines": lines})
        for session, t in sorted(per.items(), key=lambda kv: str(kv[1].start or "")):
            n = _numbers(t)
            out.append({"card": sc.card.label, "level": "session", "day": day, "session_id": session,
                        "sessions": 1, **n, "shown": short_session(session, 22),
                        "from": str(n["start"] or "")[11:19], "to": str(n["end"] or "")[11:19],
                        "robot": "≈" + (duration(n["robot_speech_s"]) or "0s"),
                        "user": duration(n["user_speech_s"]) if n["user_speech_s"] is not None else "-",
                        "problems": n["calls_failed"] + n["calls_busy"] + n["transcriptions_failed"]
                        + n["answers_cut_short"]})
    show = (Col("shown", "session"), Col("from", "start"), Col("to", "end"), Col("turns", "turns", right=True),
            Col("robot", "robot", right=True), Col("user", "user", right=True),
            Col("barge_ins", "barge-ins", right=True), Col("calls", "calls", right=True),
            Col("problems", "problems", right=True, style=lambda r: "fault" if r.get("problems") else None),
            Col("commands", "commands", wrap=True))
    footer = [f"the newest {limit} day(s) with messages (--limit N for more, --since to go back)"] \
        if len([r for r in out if r["level"] == "day"]) >= limit else []
    return Table("summary", COLUMNS, out, show, style="summary", footer=footer, empty="no messages")
