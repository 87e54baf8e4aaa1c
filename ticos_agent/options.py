"""The config vocabulary: typed option declarations that every config section is made of.

An :class:`Option` is one key of the TOML config: which values it takes, its default and one
line of documentation (in the spirit of Mopidy's ``config/types.py``). Every section uses
them: ``[server]``, ``[storage]``, ``[replies]``, ``[log]``, ``[audio]``, ``[robot]``, the keys
every actuator has, each driver's own options, and the tables of ``[motions.*]`` and
``[emotions.*]``. ``ticos-agent config --example`` is generated from these declarations.

=====================  ========================================================================
type                   takes
=====================  ========================================================================
:class:`Boolean`       ``true`` / ``false``
:class:`Integer`       a whole number, optionally within ``minimum``..``maximum`` (plus ``also``)
:class:`Float`         a finite number within a range; :class:`Duration` is one in seconds
:class:`String`        text (``optional``: ``""`` means none; ``nonempty``; ``ascii``)
:class:`Choice`        one of fixed values, "did you mean" for a near miss
:class:`Path`          a file or directory path (``filename``: a plain file name)
:class:`Secret`        text that is never shown: masked in errors and in printed configs
:class:`Device`        a serial device path or a pyserial URL (``loop://``, ``socket://``)
:class:`Pin`           a GPIO number or a pin name (``GPIO17``, ``BOARD11``)
:class:`Colour`        ``"#RRGGBB"`` or ``[r, g, b]`` (0..255), as 0..1 floats
:class:`List`          a list of one item type (each item checked, ``key[i]`` in errors)
:class:`Map`           a table of name = one value type (``key.name`` in errors)
:class:`OneOf`         the first of several types that accepts the value
=====================  ========================================================================

A section is either a dataclass whose fields are declared with :func:`setting` (the field's
default *is* the option's, so each default is written once) or a plain ``{key: Option}``
mapping (a driver's ``options``). :func:`parse_table` checks a TOML table against a schema and
puts every problem into an :class:`Errors` collector, each a
:class:`~ticos_agent.errors.ConfigError` naming the dotted key, the value (masked for a
secret) and what is allowed, with "did you mean ..." for a misspelt key or choice. Nothing
raises until :meth:`Errors.raise_if_any`, so one run explains a whole broken file.

A new type subclasses :class:`Option` and overrides :meth:`Option.convert` (raise
:class:`Invalid` for a bad value), :meth:`Option.describe` and, when its converted form is not
plain TOML data, :meth:`Option.dump`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .errors import ConfigError, ConfigErrors

MASK = "********"


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The default of an option that must be given.
REQUIRED: Any = _Marker("REQUIRED")
#: The default of an option computed from other keys (the section's parser fills it in).
DERIVED: Any = _Marker("DERIVED")
#: What :meth:`Option.parse` returns for a value it reported as wrong.
INVALID: Any = _Marker("INVALID")


def closest(word: object, candidates: Iterable[object]) -> str | None:
    """The candidate closest to ``word`` (difflib, or the same letters in another case)."""
    if not isinstance(word, str):
        return None
    names = [str(c) for c in candidates]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close:
        close = [n for n in names if n.lower() == word.lower()][:1]
    return close[0] if close else None


def did_you_mean(word: object, candidates: Iterable[object]) -> str:
    """``" (did you mean 'port'?)"`` for the closest candidate, or ``""``."""
    guess = closest(word, candidates)
    return f" (did you mean {guess!r}?)" if guess is not None else ""


def number_text(x: float) -> str:
    """``300``, ``0.5``, ``4000000`` (never ``4e+06`` for a whole number)."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"


class Invalid(Exception):
    """Raised by :meth:`Option.convert` for a value it does not take; ``hint`` is appended to
    what is allowed (e.g. " (did you mean 'pulse'?)")."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


class Errors:
    """Collects :class:`ConfigError` from every section; raises them together at the end."""

    def __init__(self) -> None:
        self._items: list[ConfigError] = []

    def add(self, key: str, value: Any, expected: str) -> None:
        self._items.append(ConfigError(key, value, expected))

    def extend(self, exc: ConfigError) -> None:
        """Add a raised :class:`ConfigError` (all of them for a :class:`ConfigErrors`)."""
        self._items.extend(exc.errors if isinstance(exc, ConfigErrors) else [exc])

    def __iter__(self) -> Iterator[ConfigError]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def touched(self, *keys: str) -> bool:
        """Whether an error was reported at one of ``keys`` or inside it (``key.x``, ``key[i]``)."""
        return any(e.key == k or e.key.startswith((k + ".", k + "[")) for e in self._items for k in keys)

    def raise_if_any(self, source: str = "config") -> None:
        if self._items:
            raise ConfigErrors(list(self._items), source)


class Option:
    """One config key: what it takes, its default (``REQUIRED``/``DERIVED`` when it has none of
    its own), one line of ``doc``, and an ``example`` value for ``config --example`` when the
    default cannot show one. ``secret`` values are masked in errors and printed configs."""

    expected = "a value"

    def __init__(self, default: Any = REQUIRED, doc: str = "", *, example: Any = REQUIRED, secret: bool = False):
        self.default = default
        self.doc = doc
        self.example = example
        self.secret = secret

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """What is allowed, for error messages and the example file."""
        return self.expected

    def convert(self, value: Any) -> Any:
        """The typed value of a TOML value; raise :class:`Invalid` when it is not allowed."""
        return value

    def parse(self, key: str, value: Any, errors: Errors) -> Any:
        """:meth:`convert`, reporting a bad value under ``key``; returns ``INVALID`` then."""
        try:
            return self.convert(value)
        except Invalid as exc:
            errors.add(key, self.shown(value), self.describe() + exc.hint)
            return INVALID

    def default_value(self) -> Any:
        """The default, converted (a fresh copy, so mutable defaults are never shared)."""
        if self.default is REQUIRED or self.default is DERIVED:
            return None
        return self.convert(copy.deepcopy(self.default))

    def dump(self, value: Any) -> Any:
        """The plain TOML form of a converted value."""
        return value

    def shown(self, value: Any) -> Any:
        """The value as an error may show it (a secret's never is)."""
        return MASK if self.secret and value != "" else value

    def sample(self) -> Any:
        """The value ``config --example`` writes: the default, else the example."""
        if self.default is not REQUIRED and self.default is not DERIVED:
            value = self.dump(self.default_value())
            if not (value is None or value == "" or value == {} or value == []) or self.example is REQUIRED:
                return value
        return self.example


def setting(option: Option) -> Any:
    """A dataclass field declared by ``option``: its default is the option's (written once)."""
    return dataclasses.field(default_factory=option.default_value, metadata={"option": option})


def schema_of(cls: type) -> dict[str, Option]:
    """``{key: Option}`` of a dataclass whose fields use :func:`setting`."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(cls) if "option" in f.metadata}


def unknown_key(key: str, allowed: Sequence[str], context: str = "") -> str:
    where = f" for {context}" if context else ""
    return f"a known key{where}; allowed: {', '.join(allowed) or '(none)'}{did_you_mean(key, allowed)}"


def parse_table(prefix: str, table: Any, schema: Mapping[str, Option], errors: Errors, *,
                context: str = "", skip: Iterable[str] = ()) -> dict[str, Any]:
    """Check ``table`` against ``schema``; every key of the schema -> its value.

    A missing key gets its default (``None`` for ``DERIVED``); a wrong or missing required
    one is reported under ``prefix.key`` and gets its default too, so the caller can go on
    checking (use :meth:`Errors.touched` before a cross-field check). Keys in ``skip`` are
    left to the caller."""
    out: dict[str, Any] = {}
    whole = isinstance(table, Mapping)
    if not whole:
        errors.add(prefix, table, "a table")  # and nothing about its keys
        table = {}
    skipped = set(skip)
    for key, value in table.items():
        if key in skipped:
            continue
        full = f"{prefix}.{key}" if prefix else str(key)
        option = schema.get(key)
        if option is None:
            guess = schema.get(closest(key, schema) or "")
            shown = MASK if guess is not None and guess.secret else value  # a misspelt secret stays secret
            errors.add(full, shown, unknown_key(key, list(schema), context))
            continue
        parsed = option.parse(full, value, errors)
        if parsed is not INVALID:
            out[key] = parsed
    for key, option in schema.items():
        if key in out or key in skipped:
            continue
        if key not in table and option.required and whole:
            why = f"required by {context}" if context else "required"
            errors.add(f"{prefix}.{key}" if prefix else key, None,
                       f"{option.describe()} ({why}{': ' + option.doc if option.doc else ''})")
        out[key] = option.default_value()
    return out


def dump_table(values: Mapping[str, Any] | object, schema: Mapping[str, Option], *,
               mask_secrets: bool = True) -> dict[str, Any]:
    """Plain TOML data of a section (a mapping or a dataclass), secrets masked unless told."""
    out: dict[str, Any] = {}
    for key, option in schema.items():
        value = values[key] if isinstance(values, Mapping) else getattr(values, key)
        plain = option.dump(value)
        if plain is None:
            continue
        out[key] = MASK if mask_secrets and option.secret and plain != "" else plain
    return out


# --- the types -----------------------------------------------------------------------------


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
