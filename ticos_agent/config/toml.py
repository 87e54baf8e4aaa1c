"""A small TOML writer: the plain data :mod:`tomllib` reads -> TOML text.

Enough for configs: tables become ``[a.b]`` sections (an empty table is kept, so "present but
empty" survives), small flat tables inside those and dicts inside lists become inline tables, ``None`` values are left out,
floats keep ``inf``/``nan``, strings are basic strings with escapes. ``tomllib.loads(dumps(d))
== d`` for such data (tuples come back as lists).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def key(name: object) -> str:
    """A key as written: bare when it can be, else a quoted string."""
    text = str(name)
    return text if _BARE_KEY.fullmatch(text) else string(text)


def string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def value(v: Any) -> str:
    """One value in TOML syntax (lists and tables inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        items = [f"{key(k)} = {value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def dumps(doc: Mapping[str, Any], *, header: str = "") -> str:
    """TOML text of ``doc``; ``header`` lines become ``#`` comments at the top."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _table(lines, [], doc)
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines) + "\n"


def _inline(path: list[str], v: Any) -> bool:
    """Small flat tables below section level read better inline: ``pose = { head = [0, 8] }``."""
    return (len(path) >= 2 and isinstance(v, Mapping) and bool(v)
            and not any(isinstance(x, Mapping) for x in v.values()) and len(value(v)) <= 80)


def _table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    scalars = [(k, v) for k, v in table.items() if (not isinstance(v, Mapping) or _inline(path, v)) and v is not None]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping) and not _inline(path, v)]
    if path and (scalars or not tables):
        lines += ["", "[" + ".".join(key(p) for p in path) + "]"]
    lines += [f"{key(k)} = {value(v)}" for k, v in scalars]
    for k, v in tables:
        _table(lines, [*path, k], v)
