"""Writing what a view found: a terminal table, JSON lines, CSV or Markdown.

A view hands over :class:`Table` blocks: ``columns`` are the stable export columns, ``rows``
dicts (an iterable: exports stream), ``show`` how a terminal lays the rows out. The terminal
writer aligns columns and wraps the last one at the terminal's width (the width of the terminal
behind a pipe such as ``| less``; no wrapping into a file), colours only a terminal
(``--color``, ``NO_COLOR``), and never lets stored text drive the terminal (control characters
are shown escaped). The JSON-lines writer prints exactly one object per row (``| jq`` clean).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c != 9} | {127: "\\x7f"}
_CONTROL.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})
_CONTROL.update({0x2028: "\\u2028", 0x2029: "\\u2029", 0x202E: "\\u202e", 0x202D: "\\u202d"})

STYLES = {"dim": "2", "bold": "1", "user": "36", "robot": "32", "system": "35", "note": "33", "fault": "31",
          "cut": "35", "head": "1;4"}


def safe(value: Any) -> str:
    """Stored text came from the network: control characters are shown, never obeyed."""
    return "" if value is None else str(value).translate(_CONTROL)


@dataclass(frozen=True)
class Col:
    """A terminal column: the row's ``key``, a ``header``, ``right``-aligned, or ``wrap``
    (the last column may take the rest of the line), and a ``style`` for its text
    (a :data:`STYLES` name, or a function of the row giving one)."""

    key: str
    header: str
    right: bool = False
    wrap: bool = False
    style: str | Callable[[dict[str, Any]], str | None] | None = None
    max: int | None = None


@dataclass
class Table:
    kind: str                     # the JSON-lines "kind" of its rows (unless a row has one)
    columns: tuple[str, ...]      # export columns, in order
    rows: Iterable[dict[str, Any]]
    show: tuple[Col, ...] = ()    # the terminal's columns
    title: str | None = None
    header: bool = True
    style: str = "table"          # "transcript" and "summary" have layouts of their own
    footer: list[str] = field(default_factory=list)
    empty: str = "nothing found"
    tagged: bool = False          # rows come from a card and its fallback: show which


class Term:
    """Where text goes: ``width`` to wrap at (``None``: never wrap), ``color``, ``unicode``."""

    def __init__(self, out: TextIO, color: str = "auto"):
        self.out = out
        tty = _isatty(out)
        self.color = color == "always" or (color == "auto" and tty and not os.environ.get("NO_COLOR")
                                           and os.environ.get("TERM") != "dumb")
        self.width = _width(out)
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self.unicode = encoding in ("utf8", "utf16", "utf32")

    def paint(self, text: str, style: str | None) -> str:
        if not self.color or not style or not text:
            return text
        return f"\x1b[{STYLES.get(style, style)}m{text}\x1b[0m"

    def glyph(self, fancy: str, plain: str) -> str:
        return fancy if self.unicode else plain


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _width(out: TextIO) -> int | None:
    """The terminal's width: stdout's, or the terminal a pipe leads back to (``| less``);
    ``None`` when writing to a file with no terminal around."""
    for stream in (out, sys.stderr):
        if _isatty(stream):
            try:
                return max(40, os.get_terminal_size(stream.fileno()).columns)
            except (OSError, ValueError):
                return max(40, shutil.get_terminal_size().columns)
    return None


def wrap(text: str, width: int | None) -> list[str]:
    """``text`` in lines of at most ``width`` (its own line breaks kept)."""
    lines: list[str] = []
    for para in text.split("\n") or [""]:
        if width is None or len(para) <= width:
            lines.append(para)
        else:
            lines += textwrap.wrap(para, width, break_long_words=True, break_on_hyphens=False) or [""]
    return lines or [""]


class Writer:
    """What every format does: a card's heading, its tables, closing."""

    def __init__(self, out: TextIO):
        self.out = out

    def card(self, label: str, path: str | None, info: list[str], many: bool) -> None: ...

    def table(self, table: Table) -> None: ...

    def problem(self, label: str, text: str) -> None: ...

    def close(self) -> None:
        self.out.flush()


class TextWriter(Writer):
    def __init__(self, out: TextIO, color: str = "auto"):
        super().__init__(out)
        self.term = Term(out, color)
        self._first = True

    def _line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def card(self, label: str, path: str | None, info: list[str], many: bool) -> None:
        if many:
            if not self._first:
                self._line()
            self._line(self.term.paint(f"== {safe(label)} ==", "bold") + (f"  {safe(path)}" if path else ""))
        self._first = False
        for line in info:
            self._line(safe(line))

    def problem(self, label: str, text: str) -> None:
        self._line(self.term.paint(safe(text), "fault"))

    def table(self, table: Table) -> None:
        from .layout import summary_lines, table_lines, transcript_lines

        draw = {"transcript": transcript_lines, "summary": summary_lines}.get(table.style, table_lines)
        if table.title:
            self._line(self.term.paint(safe(table.title), "bold"))
        wrote = False
        for line in draw(table, self.term):
            self._line(line)
            wrote = True
        if not wrote:
            self._line(self.term.paint(f"({table.empty})", "dim"))
        for line in table.footer:
            self._line(self.term.paint(safe(line), "dim"))


_JSON = json.JSONEncoder(ensure_ascii=False, default=str)  # one encoder: json.dumps(...) makes one per call


class JsonLinesWriter(Writer):
    """One JSON object per row: ``kind`` first, then the row's fields."""

    def card(self, label: str, path: str | None, info: list[str], many: bool) -> None:
        for line in info:
            print(f"note: {line}", file=sys.stderr)

    def problem(self, label: str, text: str) -> None:
        print(f"ticos-agent: {label}: {text}", file=sys.stderr)

    def table(self, table: Table) -> None:
        write, encode = self.out.write, _JSON.encode
        columns = [c for c in table.columns if c != "kind"]
        for row in table.rows:
            obj = {"kind": row.get("kind", table.kind)}
            for k in columns:
                if k in row:
                    obj[k] = row[k]
            write(encode(obj) + "\n")


class CsvWriter(Writer):
    """One header (the export columns), then one line per row; a table with other columns
    starts a new header after a blank line."""

    def __init__(self, out: TextIO):
        super().__init__(out)
        self._csv = csv.writer(out, lineterminator="\n")
        self._columns: tuple[str, ...] | None = None

    def card(self, label: str, path: str | None, info: list[str], many: bool) -> None:
        for line in info:
            print(f"note: {line}", file=sys.stderr)

    def problem(self, label: str, text: str) -> None:
        print(f"ticos-agent: {label}: {text}", file=sys.stderr)

    def table(self, table: Table) -> None:
        columns = table.columns
        if columns != self._columns:
            if self._columns is not None:
                self.out.write("\n")
            self._csv.writerow(columns)
            self._columns = columns
        for row in table.rows:
            self._csv.writerow(["" if row.get(c) is None else _cell(row.get(c)) for c in columns])


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


_MD = str.maketrans({c: "\\" + c for c in "\\`*_[]<|#"})


def md(value: Any) -> str:
    """Text safe inside Markdown: control characters shown, markup characters escaped."""
    return safe(value).translate(_MD).replace("\n", "<br>")


class MarkdownWriter(Writer):
    def __init__(self, out: TextIO):
        super().__init__(out)
        self._many = False

    def card(self, label: str, path: str | None, info: list[str], many: bool) -> None:
        self._many = many
        if many:
            self.out.write(f"## {md(label)}\n\n" + (f"`{safe(path)}`\n\n" if path else ""))
        for line in info:
            self.out.write(f"> {md(line)}\n\n")

    def problem(self, label: str, text: str) -> None:
        self.out.write(f"> **{md(text)}**\n\n")

    def table(self, table: Table) -> None:
        from .layout import markdown_transcript

        level = "###" if self._many else "##"
        if table.title:
            self.out.write(f"{level} {md(table.title)}\n\n")
        if table.style == "transcript":
            wrote = False
            for line in markdown_transcript(table):
                self.out.write(line + "\n")
                wrote = True
            if not wrote:
                self.out.write(f"_{md(table.empty)}_\n")
        else:
            self._grid(table)
        for line in table.footer:
            self.out.write(f"\n_{md(line)}_\n")
        self.out.write("\n")

    def _grid(self, table: Table) -> None:
        columns = tuple(c.key for c in table.show) or table.columns
        heads = tuple(c.header for c in table.show) or table.columns
        kind_columns: tuple[str, ...] | None = None
        wrote = False
        for row in table.rows:
            cols = _kind_columns(table, row) if not table.show else columns
            if cols != kind_columns:
                if kind_columns is not None:
                    self.out.write("\n")
                names = heads if table.show else cols
                self.out.write("| " + " | ".join(md(h) for h in names) + " |\n")
                self.out.write("|" + "|".join("---:" if c in _NUMERIC else "---" for c in cols) + "|\n")
                kind_columns = cols
            self.out.write("| " + " | ".join(md(_cell(row.get(c, ""))) for c in cols) + " |\n")
            wrote = True
        if not wrote:
            self.out.write(f"_{md(table.empty)}_\n")


_NUMERIC = {"messages", "calls", "count", "turns", "barge_ins", "failed", "rows"}


def _kind_columns(table: Table, row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(c for c in table.columns if c in row)


def writer(fmt: str, out: TextIO, color: str = "auto") -> Writer:
    if fmt == "jsonl":
        return JsonLinesWriter(out)
    if fmt == "csv":
        return CsvWriter(out)
    if fmt == "markdown":
        return MarkdownWriter(out)
    return TextWriter(out, color)
