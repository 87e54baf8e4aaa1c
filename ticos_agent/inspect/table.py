"""What the views hand to the writers: a :class:`Table` of rows with its :class:`Col` layout,
and the terminal (:class:`Term`) and text helpers every layout uses (down to how a session id
and a duration are shortened)."""

from __future__ import annotations

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


_MD = str.maketrans({c: "\\" + c for c in "\\`*_[]<|#"})


def md(value: Any) -> str:
    """Text safe inside Markdown: control characters shown, markup characters escaped."""
    return safe(value).translate(_MD).replace("\n", "<br>")


def short_session(sid: Any, width: int = 18) -> str:
    if sid is None:
        return "(none)"
    text = str(sid)
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
