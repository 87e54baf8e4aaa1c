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
import sys
from typing import Any, TextIO

from .layout import markdown_transcript, summary_lines, table_lines, transcript_lines
from .table import Table, Term, md, safe


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


class DataWriter(Writer):
    """A machine-readable format: its output holds rows only; notes and problems go to
    standard error."""

    def card(self, label: str, path: str | None, info: list[str], many: bool) -> None:
        for line in info:
            print(f"note: {line}", file=sys.stderr)

    def problem(self, label: str, text: str) -> None:
        print(f"ticos-agent: {label}: {text}", file=sys.stderr)


class JsonLinesWriter(DataWriter):
    """One JSON object per row: ``kind`` first, then the row's fields."""

    def table(self, table: Table) -> None:
        write, encode = self.out.write, _JSON.encode
        columns = [c for c in table.columns if c != "kind"]
        for row in table.rows:
            obj = {"kind": row.get("kind", table.kind)}
            for k in columns:
                if k in row:
                    obj[k] = row[k]
            write(encode(obj) + "\n")


class CsvWriter(DataWriter):
    """One header (the export columns), then one line per row; a table with other columns
    starts a new header after a blank line."""

    def __init__(self, out: TextIO):
        super().__init__(out)
        self._csv = csv.writer(out, lineterminator="\n")
        self._columns: tuple[str, ...] | None = None

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
