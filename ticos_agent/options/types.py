"""The types of the config vocabulary (see :mod:`ticos_agent.options`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import INVALID, REQUIRED, Errors, Invalid, Option, closest, did_you_mean, number_text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Boolean(Option):
    expected = "true or false"

    def convert(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid
        return value


class _Number(Option):
    noun = "a number"

    def __init__(self, default: Any = REQUIRED, doc: str = "", *, minimum: float | None = None,
                 maximum: float | None = None, exclusive_minimum: bool = False,
                 also: Mapping[Any, str] | None = None, **kw: Any):
        self.minimum, self.maximum, self.exclusive_minimum = minimum, maximum, exclusive_minimum
        self.also = dict(also or {})
        super().__init__(default, doc, **kw)

    def describe(self) -> str:
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            rng = f" above {number_text(lo)} up to {number_text(hi)}" if self.exclusive_minimum else \
                f" from {number_text(lo)} to {number_text(hi)}"
        elif lo is not None:
            rng = f" > {number_text(lo)}" if self.exclusive_minimum else f" >= {number_text(lo)}"
        elif hi is not None:
            rng = f" <= {number_text(hi)}"
        else:
            rng = ""
        extra = [f"{number_text(v)} ({meaning})" for v, meaning in self.also.items()]
        return " or ".join([*extra, self.noun + rng])

    def in_range(self, value: float) -> bool:
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.exclusive_minimum else value < lo):
            return False
        return hi is None or value <= hi


class Integer(_Number):
    noun = "a whole number"

    def convert(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid
        if value not in self.also and not self.in_range(value):
            raise Invalid
        return value


class Float(_Number):
    """A finite number (TOML's ``inf`` and ``nan`` are refused); ints become floats."""

    noun = "a number"

    def convert(self, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise Invalid
        if value not in self.also and not self.in_range(value):
            raise Invalid
        return float(value)


class Duration(Float):
    """Seconds, as a float."""

    noun = "seconds"


class String(Option):
    def __init__(self, default: Any = REQUIRED, doc: str = "", *, optional: bool = False, nonempty: bool = False,
                 ascii: bool = False, **kw: Any):
        self.optional, self.nonempty, self.ascii = optional, nonempty, ascii
        super().__init__(default, doc, **kw)

    def describe(self) -> str:
        what = "ASCII text" if self.ascii else "a string"
        if self.nonempty:
            return f"a non-empty {'string of ASCII text' if self.ascii else 'string'}"
        return f"{what} (empty for none)" if self.optional else what

    def convert(self, value: Any) -> str | None:
        if self.optional and (value is None or value == ""):
            return None
        if not isinstance(value, str) or (self.ascii and not value.isascii()):
            raise Invalid
        if self.nonempty and not value.strip():
            raise Invalid
        return value

    def dump(self, value: Any) -> Any:
        return "" if value is None else value


class Secret(String):
    """Text never shown: masked in errors (even of the wrong type) and in printed configs."""

    def __init__(self, default: Any = REQUIRED, doc: str = "", **kw: Any):
        super().__init__(default, doc, secret=True, **kw)

    def describe(self) -> str:
        return "a string (kept secret)"


class Choice(Option):
    """One of fixed values (``choices`` may be a callable, e.g. the registered drivers)."""

    def __init__(self, choices: Sequence[Any] | Callable[[], Sequence[Any]], default: Any = REQUIRED, doc: str = "",
                 *, casefold: bool = False, **kw: Any):
        self._choices = choices
        self.casefold = casefold
        super().__init__(default, doc, **kw)

    @property
    def choices(self) -> list[Any]:
        return list(self._choices() if callable(self._choices) else self._choices)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def convert(self, value: Any) -> Any:
        choices = self.choices
        for c in choices:
            if type(c) is type(value) and c == value:
                return c
            if self.casefold and isinstance(value, str) and isinstance(c, str) and c.lower() == value.lower():
                return c
        raise Invalid(did_you_mean(value, choices))


class Path(String):
    """A file or directory path; ``""`` means "the default". ``filename``: a plain file name."""

    def __init__(self, default: Any = REQUIRED, doc: str = "", *, filename: bool = False, **kw: Any):
        self.filename = filename
        super().__init__(default, doc, **kw)

    def describe(self) -> str:
        return "a plain file name (no directory)" if self.filename else "a path (empty: the default)"

    def convert(self, value: Any) -> str:
        if not isinstance(value, str) or "\x00" in value:
            raise Invalid
        if self.filename and (value in ("", ".", "..") or any(c in value for c in "/\\")):
            raise Invalid
        return value


#: The URL schemes pyserial's ``serial_for_url`` knows.
SERIAL_URL_SCHEMES = ("loop", "socket", "rfc2217", "spy", "alt", "hwgrep", "cp2110")


class Device(String):
    """A serial port: an absolute device path, or a pyserial URL such as ``loop://``."""

    def describe(self) -> str:
        return ("a serial device path (/dev/serial/by-id/..., /dev/ttyUSB0, /dev/ttyAMA0) or a pyserial URL "
                "(" + ", ".join(f"{s}://" for s in SERIAL_URL_SCHEMES[:3]) + " ...)")

    def convert(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            raise Invalid
        value = value.strip()
        if "://" in value:
            scheme = value.split("://", 1)[0]
            if scheme not in SERIAL_URL_SCHEMES:
                guess = closest(scheme, SERIAL_URL_SCHEMES)
                raise Invalid(f" (did you mean '{guess}://'?)" if guess else "")
        elif not value.startswith("/"):
            raise Invalid(f" (did you mean '/dev/{value}'?)" if "/" not in value else "")
        return value


class Pin(Option):
    expected = 'a GPIO number (17) or a pin name ("GPIO17", "BOARD11", "J8:11")'

    def convert(self, value: Any) -> int | str:
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9:_]+", value.strip()):
            return value.strip()
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise Invalid
        return value


class Colour(Option):
    """``"#RRGGBB"`` or ``[r, g, b]`` with 0..255 values -> ``(r, g, b)`` in 0..1 (optional: ``""``)."""

    expected = 'a colour "#RRGGBB" or [r, g, b] with 0..255 values'

    def convert(self, value: Any) -> tuple[float, float, float] | None:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            s = value.strip().lstrip("#")
            if len(s) != 6 or not all(c in "0123456789abcdefABCDEF" for c in s):
                raise Invalid
            rgb = [float(int(s[i:i + 2], 16)) for i in (0, 2, 4)]
        elif isinstance(value, list) and len(value) == 3 and all(_is_number(v) and 0 <= v <= 255 for v in value):
            rgb = [float(v) for v in value]
        else:
            raise Invalid
        return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)

    def dump(self, value: Any) -> Any:
        if value is None:
            return ""
        rgb = [c * 255 for c in value]
        if all(abs(v - round(v)) < 1e-9 for v in rgb):
            return "#%02X%02X%02X" % tuple(round(v) for v in rgb)
        return rgb


class List(Option):
    """A list of ``item`` values (``min_items``..``max_items``); each item is checked."""

    def __init__(self, item: Option, default: Any = REQUIRED, doc: str = "", *, min_items: int = 1,
                 max_items: int | None = None, **kw: Any):
        self.item, self.min_items, self.max_items = item, min_items, max_items
        super().__init__(default, doc, **kw)

    def describe(self) -> str:
        size = "a non-empty list" if self.min_items == 1 and self.max_items is None else "a list"
        if self.max_items is not None:
            size += f" of {self.min_items} to {self.max_items} items"
        return f"{size}, each {self.item.describe()}"

    def _sized(self, value: Any) -> bool:
        return isinstance(value, list) and self.min_items <= len(value) <= (self.max_items or len(value))

    def convert(self, value: Any) -> list[Any]:
        if not self._sized(value):
            raise Invalid
        return [self.item.convert(v) for v in value]

    def parse(self, key: str, value: Any, errors: Errors) -> Any:
        if not self._sized(value):
            errors.add(key, self.shown(value), self.describe())
            return INVALID
        items = [self.item.parse(f"{key}[{i}]", v, errors) for i, v in enumerate(value)]
        return INVALID if any(v is INVALID for v in items) else items

    def dump(self, value: Any) -> Any:
        return [self.item.dump(v) for v in value]


class Map(Option):
    """A table of ``name = value`` (names are free: tags, actuators); each value is checked."""

    def __init__(self, value: Option, default: Any = REQUIRED, doc: str = "", *, what: str = "name", **kw: Any):
        self.value, self.what = value, what
        super().__init__(default, doc, **kw)

    def describe(self) -> str:
        return f"a table of {self.what} = {self.value.describe()}"

    def convert(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise Invalid
        return {str(k): self.value.convert(v) for k, v in value.items()}

    def parse(self, key: str, value: Any, errors: Errors) -> Any:
        if not isinstance(value, Mapping):
            errors.add(key, self.shown(value), self.describe())
            return INVALID
        out = {str(k): self.value.parse(f"{key}.{k}", v, errors) for k, v in value.items()}
        return INVALID if any(v is INVALID for v in out.values()) else out

    def dump(self, value: Any) -> Any:
        return {k: self.value.dump(v) for k, v in value.items()}


class OneOf(Option):
    """The first of ``options`` that takes the value (e.g. ``"low"``/``"high"`` or seconds)."""

    def __init__(self, options: Sequence[Option], default: Any = REQUIRED, doc: str = "", **kw: Any):
        self.options = list(options)
        super().__init__(default, doc, **kw)

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)

    def convert(self, value: Any) -> Any:
        hints = []
        for option in self.options:
            try:
                return option.convert(value)
            except Invalid as exc:
                hints.append(exc.hint)
        raise Invalid(next((h for h in hints if h), ""))

    def dump(self, value: Any) -> Any:
        for option in self.options:
            try:
                option.convert(value)
            except Invalid:
                continue
            return option.dump(value)
        return value
