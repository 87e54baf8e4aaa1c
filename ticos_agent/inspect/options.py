"""The command line of ``inspect`` and ``export``: its arguments, checked once, one-line errors.

:func:`add_arguments` declares them on an argparse parser; :func:`options` turns the parsed
namespace (or any object with some of those attributes, as tests and older callers pass) into
:class:`Options`, raising :class:`UsageError` with one line a person can act on.

Times (``--since``/``--until``) are the robot's local times as the views show them: a date
(``2026-11-25``; as ``--until`` it includes that whole day), a date and time
(``2026-11-25 14:30``, ``2026-11-25T14:30:05``), a time today (``14:30``), ``today``,
``yesterday``, ``now``, or an age: a number and ``s``/``m``/``h``/``d``/``w`` (``90m``,
``2h``, ``3d``), counted back from now.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import re
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

VIEWS = ("transcript", "faults", "summary", "messages", "memories", "calls", "events", "sessions")
EXPORT_VIEWS = (*VIEWS, "all")
FORMATS = ("text", "jsonl", "csv", "markdown")
_FORMAT_NAMES = {"text": "text", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl", "csv": "csv",
                 "markdown": "markdown", "md": "markdown"}
#: ``--limit`` when none is given: messages of the transcript, days of the summary, groups of
#: the faults view, rows or sessions of the others (per card). ``export`` has no limit.
DEFAULT_LIMITS = {"transcript": 200, "faults": 50, "summary": 7, "messages": 50, "memories": 50, "calls": 50,
                  "events": 100, "sessions": 20, "all": 50}
ROLES = {"user": "user", "assistant": "assistant", "robot": "assistant", "system": "system"}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|wks|week|weeks)\s*$",
                  re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class UsageError(Exception):
    """A bad argument: the message is the whole one-line error."""


@dataclass(frozen=True)
class TimeSpec:
    """One ``--since``/``--until`` value: an age in seconds before now, or a local time."""

    text: str
    age: float | None = None
    local: str | None = None  # "YYYY-MM-DD HH:MM:SS"


@dataclass
class Options:
    command: str = "inspect"
    view: str = "transcript"
    dbs: list[str] = field(default_factory=list)
    tf_roots: list[str] = field(default_factory=list)
    config: str | None = None
    fallback: str | None = None
    since: TimeSpec | None = None
    until: TimeSpec | None = None
    session: str | None = None
    role: str | None = None
    grep: str | None = None
    limit: int | None = None  # None: every row (export)
    format: str = "text"
    output: str | None = None
    verbose: bool = False
    color: str = "auto"
    events: bool = False
    explicit_view: bool = False


def add_arguments(p: argparse.ArgumentParser, *, export: bool) -> None:
    """Declare the arguments of ``inspect`` (``export=False``) or ``export``."""
    views = EXPORT_VIEWS if export else VIEWS
    p.add_argument("what", nargs="?", metavar="VIEW",
                   help=f"one of {', '.join(views)} (default: {'all' if export else 'transcript'})")
    p.add_argument("--db", action="append", metavar="PATH",
                   help="a database file, or a folder holding cards; may be given several times")
    p.add_argument("--tf-root", action="append", metavar="DIR",
                   help="a TF card's root (reads <root>/.config/ticos/ticos.db), or a folder holding "
                        "several cards' mount points; may be given several times")
    p.add_argument("--config", "-c", help="find the database the way the agent with this config does")
    p.add_argument("--fallback", metavar="PATH",
                   help="a fallback database (ticos-fallback.db) to read with the card")
    p.add_argument("--since", metavar="WHEN", help="from this time: 2026-11-25, '2026-11-25 14:30', 14:30, "
                                                   "yesterday, or an age like 90m, 2h, 3d")
    p.add_argument("--until", metavar="WHEN", help="up to this time (a date alone: to the end of that day)")
    p.add_argument("--session", metavar="ID", help="one session: its id, a prefix of it, or 'last'")
    p.add_argument("--role", metavar="ROLE", help="user, assistant (or robot) or system")
    p.add_argument("--grep", metavar="TEXT", help="rows containing TEXT (any case for ASCII letters)")
    p.add_argument("--limit", metavar="N",
                   help="at most N per card" + (" (default: no limit)" if export else
                                                " (default: a transcript's last 200 messages, 50 fault groups, "
                                                "7 days of summary, 50 rows, 100 events, 20 sessions)"))
    p.add_argument("--format", "-f", metavar="FORMAT",
                   help="text, jsonl, csv or markdown (default: " + ("jsonl)" if export else "text)"))
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour in a terminal (default: auto; NO_COLOR is honoured)")
    p.add_argument("--verbose", "-v", action="store_true", help="also say how each database was opened")
    if export:
        p.add_argument("--events", action="store_true", help="'all' also exports the event log")

    def error(message: str) -> NoReturn:
        print(f"{p.prog}: {message} (see {p.prog} --help)", file=sys.stderr)
        sys.exit(2)

    p.error = error  # type: ignore[method-assign]  # one line, not argparse's usage block
    parse_known = p.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = parse_known(args, namespace)
        if extras:  # said here: the top-level parser would print its usage block instead
            error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras

    p.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def _get(ns: Any, name: str, default: Any = None) -> Any:
    value = getattr(ns, name, default)
    return default if value is None else value


def _paths(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _choice(kind: str, value: str, allowed: tuple[str, ...] | list[str]) -> NoReturn:
    close = difflib.get_close_matches(value, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (one of: {', '.join(allowed)})"
    raise UsageError(f"unknown {kind} {value!r}{hint}")


def parse_limit(value: Any) -> int:
    text = str(value).strip()
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"--limit must be a whole number of 1 or more, not {text!r}") from None
    if n < 1:
        raise UsageError(f"--limit must be 1 or more, not {n}")
    return n


def parse_time(value: str, option: str, *, today: dt.date | None = None) -> TimeSpec:
    """``--since``/``--until`` text -> :class:`TimeSpec` (``--until`` with a date alone is the
    end of that day)."""
    text = value.strip()
    until = option == "--until"
    age = _AGE.match(text)
    if age:
        return TimeSpec(text, age=float(age.group(1)) * _UNIT[age.group(2)[0].lower()])
    day = today or dt.date.today()
    word = text.lower()
    if word == "now":
        return TimeSpec(text, age=0.0)
    if word in ("today", "yesterday"):
        d = day if word == "today" else day - dt.timedelta(days=1)
        return TimeSpec(text, local=_day(d, until))
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return TimeSpec(text, local=_day(dt.date.fromisoformat(text), until))
        except ValueError:
            pass
    elif re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
        try:
            t = dt.time.fromisoformat(text if len(text.split(":")[0]) == 2 else "0" + text)
            return TimeSpec(text, local=f"{day.isoformat()} {t.strftime('%H:%M:%S')}")
        except ValueError:
            pass
    else:
        try:
            when = dt.datetime.fromisoformat(text.replace("T", " ", 1))
            return TimeSpec(text, local=when.strftime("%Y-%m-%d %H:%M:%S"))
        except ValueError:
            pass
    raise UsageError(f"{option} {text!r} is not a time: use a date (2026-11-25), a date and time "
                     "('2026-11-25 14:30'), a time today (14:30), today, yesterday, or an age (90m, 2h, 3d)")


def _day(d: dt.date, end: bool) -> str:
    if end:
        d += dt.timedelta(days=1)
    return f"{d.isoformat()} 00:00:00"


def options(ns: Any) -> Options:
    """The checked options of a parsed ``inspect``/``export`` command line."""
    command = _get(ns, "command", "inspect")
    export = command == "export"
    views = EXPORT_VIEWS if export else VIEWS
    what = _get(ns, "what")
    view = str(what) if what else ("all" if export else "transcript")
    if view not in views:
        _choice("view", view, list(views))
    fmt = str(_get(ns, "format", "jsonl" if export else "text")).lower()
    if fmt not in _FORMAT_NAMES:
        _choice("format", fmt, list(FORMATS))
    role = _get(ns, "role")
    if role is not None:
        if str(role).lower() not in ROLES:
            _choice("role", str(role), list(ROLES))
        role = ROLES[str(role).lower()]
        if view == "memories":
            raise UsageError("--role does not apply to memories (they have no speaker)")
    limit = _get(ns, "limit")
    opts = Options(
        command=command, view=view, explicit_view=bool(what),
        dbs=_paths(getattr(ns, "db", None)), tf_roots=_paths(getattr(ns, "tf_root", None)),
        config=_get(ns, "config"), fallback=_get(ns, "fallback"),
        session=_session(_get(ns, "session")), role=role,
        grep=_grep(_get(ns, "grep")),
        limit=parse_limit(limit) if limit is not None else (None if export else DEFAULT_LIMITS[view]),
        format=_FORMAT_NAMES[fmt], output=_get(ns, "output"), verbose=bool(_get(ns, "verbose", False)),
        color=str(_get(ns, "color", "auto")), events=bool(_get(ns, "events", False)),
    )
    since, until = _get(ns, "since"), _get(ns, "until")
    opts.since = parse_time(str(since), "--since") if since is not None else None
    opts.until = parse_time(str(until), "--until") if until is not None else None
    if opts.since and opts.until and opts.since.local and opts.until.local and opts.since.local >= opts.until.local:
        raise UsageError(f"--since {opts.since.text!r} is not before --until {opts.until.text!r}")
    if opts.since and opts.until and opts.since.age is not None and opts.until.age is not None \
            and opts.since.age <= opts.until.age:
        raise UsageError(f"--since {opts.since.text!r} is not before --until {opts.until.text!r}")
    return opts


def _session(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        raise UsageError("--session needs a session id, a prefix of one, or 'last'")
    return text


def _grep(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text.strip():
        raise UsageError("--grep needs some text to look for")
    return text
