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

from .base import (
    DERIVED,
    INVALID,
    MASK,
    REQUIRED,
    Errors,
    Invalid,
    Option,
    closest,
    did_you_mean,
    dump_table,
    number_text,
    parse_table,
    schema_of,
    setting,
    unknown_key,
)
from .types import (
    SERIAL_URL_SCHEMES,
    Boolean,
    Choice,
    Colour,
    Device,
    Duration,
    Float,
    Integer,
    List,
    Map,
    OneOf,
    Path,
    Pin,
    Secret,
    String,
)

__all__ = [
    "DERIVED", "INVALID", "MASK", "REQUIRED", "SERIAL_URL_SCHEMES",
    "Boolean", "Choice", "Colour", "Device", "Duration", "Errors", "Float", "Integer", "Invalid", "List", "Map",
    "OneOf", "Option", "Path", "Pin", "Secret", "String",
    "closest", "did_you_mean", "dump_table", "number_text", "parse_table", "schema_of", "setting", "unknown_key",
]
