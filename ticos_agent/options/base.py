"""The core of the config vocabulary: :class:`Option`, the :class:`Errors` collector,
:func:`parse_table` / :func:`dump_table` and :func:`setting` (see :mod:`ticos_agent.options`)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, ConfigErrors

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
    import difflib  # only errors need it

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
        if type(self) is Option:
            raise TypeError("Option is the base of the option types: declare a key with one of them, e.g. "
                            "Integer(115200, 'bits per second', minimum=300) (see ticos_agent.options)")
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
