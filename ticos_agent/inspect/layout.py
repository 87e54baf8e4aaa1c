"""Terminal and Markdown layouts of a :class:`~.render.Table`: aligned columns, the
conversation layout of a transcript, and the day blocks of a summary."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .table import Col, Table, Term, md, safe, wrap

_GAP = "  "
_MIN_WRAP = 24


def _style(col: Col, row: dict[str, Any]) -> str | None:
    return col.style(row) if callable(col.style) else col.style


def _cell(row: dict[str, Any], col: Col) -> str:
    value = row.get(col.key)
    text = safe(value) if not isinstance(value, float) else f"{value:g}"
    if col.max is not None and len(text) > col.max:
        text = text[: col.max - 1] + "…"
    return text


def grid(rows: list[dict[str, Any]], cols: tuple[Col, ...], term: Term, *, header: bool = True,
         indent: str = "") -> Iterator[str]:
    """``rows`` as aligned columns; the last column, when it wraps, takes the rest of the line."""
    if not rows:
        return
    cells = [[_cell(r, c) for c in cols] for r in rows]
    widths = [max([len(c.header) if header else 0] + [len(line[i]) for line in cells]) for i, c in enumerate(cols)]
    last = len(cols) - 1
    room: int | None = None
    if cols[last].wrap:
        used = len(indent) + sum(widths[:last]) + len(_GAP) * last
        room = max(_MIN_WRAP, term.width - used) if term.width is not None else None
        widths[last] = min(widths[last], room) if room is not None else widths[last]
    if header:
        heads = [(c.header.rjust(w) if c.right else c.header.ljust(w)) for c, w in zip(cols, widths)]
        yield indent + term.paint(_GAP.join(heads).rstrip(), "dim")
    for row, line in zip(rows, cells):
        parts = []
        for i, (col, text, w) in enumerate(zip(cols, line, widths)):
            if i == last:
                break
            padded = text.rjust(w) if col.right else text.ljust(w)
            parts.append(term.paint(padded, _style(col, row)) if text else padded)
        col = cols[last]
        pieces = wrap(line[last], room) if col.wrap else [line[last]]
        lead = indent + _GAP.join(parts) + (_GAP if parts else "")
        style = _style(col, row)
        yield (lead + term.paint(pieces[0], style)).rstrip()
        pad = " " * len(lead)
        for more in pieces[1:]:
            yield pad + term.paint(more, style)


def table_lines(table: Table, term: Term) -> Iterator[str]:
    yield from grid(list(table.rows), table.show, term, header=table.header)


# --- the transcript -----------------------------------------------------------------------------

_WHO_STYLE = {"user": "user", "robot": "robot", "system": "system"}
_LEVEL_STYLE = {"fault": "fault", "note": "note", "cut": "cut"}


def _mark(row: dict[str, Any], term: Term) -> str:
    mark = row.get("mark")
    if mark == "call":
        return term.glyph("↳ ", "-> ")
    if mark == "cut":
        return term.glyph("✂ ", "X ")
    if mark == "fault":
        return term.glyph("⚠ ", "! ")
    return ""


def transcript_lines(table: Table, term: Term) -> Iterator[str]:
    """Who said what, in order: one block per line of the conversation, the robot's calls and
    cut-offs under what it said, faults where they happened."""
    rows = list(table.rows)
    tagged = table.tagged
    day = None
    src_w = max((len(safe(r.get("source"))) for r in rows), default=0) if tagged else 0
    who_w = 6
    for row in rows:
        if row.get("kind") == "session":
            day = str(row.get("time") or "")[:10]
            for piece in wrap(safe(row.get("text")), term.width):
                yield term.paint(piece, "bold")
            continue
        when = str(row.get("time") or "")
        if when[:10] and when[:10] != day and not row.get("attached"):
            day = when[:10]
            yield term.paint(f"-- {day} --", "dim")
        clock = "" if row.get("attached") else when[11:19]
        lead = clock.ljust(8) + _GAP
        if tagged:
            lead += safe(row.get("source")).ljust(src_w) + _GAP
        who = "" if row.get("attached") else safe(row.get("who"))
        lead_plain = lead + who.ljust(who_w) + _GAP
        painted = term.paint(lead, "dim") + term.paint(who.ljust(who_w), _WHO_STYLE.get(who)) + _GAP
        text = _mark(row, term) + safe(row.get("text"))
        room = max(_MIN_WRAP, term.width - len(lead_plain)) if term.width is not None else None
        style = _LEVEL_STYLE.get(str(row.get("level")))
        if row.get("placeholder"):
            style = style or "dim"
        pieces = wrap(text, room)
        yield (painted + term.paint(pieces[0], style)).rstrip()
        for more in pieces[1:]:
            yield " " * len(lead_plain) + term.paint(more, style)


def markdown_transcript(table: Table) -> Iterator[str]:
    """The transcript for a bug report: a bullet per line of the conversation."""
    for row in table.rows:
        text = md(row.get("text"))
        if row.get("kind") == "session":
            yield f"**{text}**\n"
            continue
        if row.get("level") == "fault":
            text = f"⚠ **{text}**"
        elif row.get("placeholder"):
            text = f"_{text}_"
        src = f" [{md(row.get('source'))}]" if row.get("source") == "fallback" else ""
        if row.get("attached"):
            glyph = {"call": "↳ ", "cut": "✂ "}.get(str(row.get("mark")), "")
            yield f"  - {glyph}{text}"
        else:
            who = f" **{md(row.get('who'))}:**" if row.get("who") else ""
            yield f"- `{safe(str(row.get('time') or '')[11:19])}`{src}{who} {text}"


# --- the summary --------------------------------------------------------------------------------

def summary_lines(table: Table, term: Term) -> Iterator[str]:
    """A block per day: its totals, its commands by tag and outcome, then its sessions."""
    rows = list(table.rows)
    i = 0
    while i < len(rows):
        day = rows[i]
        i += 1
        sessions = []
        while i < len(rows) and rows[i].get("level") == "session":
            sessions.append(rows[i])
            i += 1
        yield term.paint(safe(day.get("headline")), "bold")
        for line in day.get("lines") or []:
            for piece in wrap(safe(line), (term.width - 2) if term.width else None):
                yield "  " + piece
        yield from grid(sessions, table.show, term, indent="  ")
        if i < len(rows):
            yield ""
