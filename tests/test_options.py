"""The config vocabulary (ticos_agent.options) and the TOML writer, type by type."""

from __future__ import annotations

import math
import tomllib

import pytest

from ticos_agent.config import toml
from ticos_agent.options import (
    INVALID,
    MASK,
    Boolean,
    Choice,
    Colour,
    Device,
    Duration,
    Errors,
    Float,
    Integer,
    List,
    Map,
    OneOf,
    Path,
    Pin,
    Secret,
    String,
    parse_table,
)


def check(option, value):
    """(converted value or INVALID, [(key, value, expected)])"""
    errors = Errors()
    out = option.parse("k", value, errors)
    return out, [(e.key, e.value, e.expected) for e in errors]


@pytest.mark.parametrize("option, good, bad", [
    (Boolean(), [True, False], [1, "yes", None]),
    (Integer(minimum=1, maximum=10), [1, 10], [0, 11, 2.0, True, "3"]),
    (Integer(0, minimum=8000, maximum=192000, also={0: "automatic"}), [0, 8000], [1, 44100.5]),
    (Float(minimum=0, maximum=1), [0, 0.5, 1], [-0.1, 1.01, float("nan"), float("inf"), True, "1"]),
    (Duration(minimum=0, maximum=0.04, exclusive_minimum=True), [0.04, 0.001], [0, 0.05]),
    (String(nonempty=True), ["x"], ["", "  ", 3]),
    (Choice(("low", "high")), ["low"], ["Low", "medium", 1]),
    (Choice((0, 1)), [0, 1], [False, True, 0.0]),  # a bool is not the number 0 or 1
    (Path(filename=True), ["ticos.db"], ["a/b.db", "..", "", "x\\y"]),
    (Device(), ["/dev/ttyUSB0", "loop://", "socket://127.0.0.1:7000", "rfc2217://host:1"], ["ttyUSB0", "lop://", "", 3]),
    (Pin(), [17, "GPIO17", "BOARD11", "J8:11"], [-1, True, "GPIO 17", 1.5]),
    (Colour(), ["#FF0000", "00ff00", [0, 128, 255]], ["#FF00", "#GG0000", [0, 0, 256], [1, 2]]),
])
def test_each_type_takes_what_it_says_and_refuses_the_rest(option, good, bad):
    for value in good:
        assert check(option, value)[0] is not INVALID, value
    for value in bad:
        out, errors = check(option, value)
        assert out is INVALID and errors == [("k", value, errors[0][2])], value
        assert errors[0][2].startswith(option.describe()), errors


def test_did_you_mean_for_choices_and_device_urls():
    assert check(Choice(("solid", "pulse", "blink")), "pluse")[1][0][2].endswith("(did you mean 'pulse'?)")
    assert "did you mean 'loop://'?" in check(Device(), "lop://")[1][0][2]
    assert "did you mean '/dev/ttyUSB0'?" in check(Device(), "ttyUSB0")[1][0][2]
    assert check(Choice(("debug", "info"), casefold=True), "INFO") == ("info", [])


def test_lists_and_maps_name_each_bad_item():
    ids = List(Integer(minimum=0, maximum=253))
    out, errors = check(ids, [1, 300, "x"])
    assert out is INVALID and [e[:2] for e in errors] == [("k[1]", 300), ("k[2]", "x")]
    assert check(ids, [])[1][0][:2] == ("k", [])
    out, errors = check(Map(Duration(minimum=0), what="tag"), {"wave": 2.0, "spin": -1})
    assert out is INVALID and [e[:2] for e in errors] == [("k.spin", -1)]
    assert "a table of tag = seconds >= 0" in check(Map(Duration(minimum=0), what="tag"), [])[1][0][2]


def test_one_of_tries_each_type_in_turn():
    latency = OneOf([Choice(("low", "high")), Duration(minimum=0, maximum=0.04, exclusive_minimum=True)])
    assert check(latency, "high") == ("high", []) and check(latency, 0.02) == (0.02, [])
    out, errors = check(latency, "lwo")
    assert errors[0][2] == "one of 'low', 'high' or seconds above 0 up to 0.04 (did you mean 'low'?)"


def test_a_secret_is_masked_whatever_its_type():
    assert check(Secret(""), ["hunter2"])[1] == [("k", MASK, "a string (kept secret)")]
    assert check(Secret(""), "") == ("", [])


def test_parse_table_reports_every_key_fills_defaults_and_keeps_misspelt_secrets_secret():
    schema = {"port": Integer(9999, minimum=0, maximum=65535), "token": Secret(""), "ids": List(Integer())}
    errors = Errors()
    out = parse_table("server", {"port": "x", "tokne": "hunter2", "extra": 1}, schema, errors, context="the test")
    assert out == {"port": 9999, "token": "", "ids": None}
    got = {e.key: (e.value, e.expected) for e in errors}
    assert got["server.port"][0] == "x"
    assert got["server.tokne"] == (MASK, "a known key for the test; allowed: port, token, ids (did you mean 'token'?)")
    assert got["server.extra"][0] == 1 and "did you mean" not in got["server.extra"][1]
    assert got["server.ids"] == (None, "a non-empty list, each a whole number (required by the test)")
    assert errors.touched("server.port") and not errors.touched("server.po")
    parse_table("audio", [1], schema, errors)
    assert list(errors)[-1].key == "audio" and list(errors)[-1].expected == "a table"


def test_defaults_are_fresh_copies():
    option = List(Integer(), [1, 2])
    a, b = option.default_value(), option.default_value()
    a.append(3)
    assert b == [1, 2] and option.default == [1, 2]


TRICKY = {
    "plain": {"s": 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f', "u": "Grüße ☺",
              "i": -3, "f": 0.1, "big": 1e300, "tiny": 1e-7, "inf": math.inf, "ninf": -math.inf, "t": True},
    "lists": {"mixed": [[0.3, 70], [0.4, [10, 5]]], "empty": [], "dicts": [{"t": 0.5, "target": [1, 2]}]},
    "keys need quotes": {"look around": {"a.b": 1, "": 2, "ok-key_1": 3}},
    "empty": {},
    "nested": {"deep": {"deeper": {"x": 1}, "flat": {"y": 2}}, "after": "scalar after tables"},
}


def test_toml_writer_round_trips_what_tomllib_reads():
    text = toml.dumps(TRICKY, header="line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    back = tomllib.loads(text)
    assert math.isnan(tomllib.loads(toml.dumps({"x": {"n": math.nan}}))["x"]["n"])
    assert back == TRICKY
    assert "[empty]" in text  # present-but-empty survives (an empty [actuators] means no actuators)
    with pytest.raises(TypeError):
        toml.value(object())


def test_the_base_class_is_not_an_option_type():
    """``Option("int", ...)`` (the drivers' old spelling) must fail loudly, not accept anything."""
    from ticos_agent.options import Option

    with pytest.raises(TypeError, match="Integer"):
        Option("int", doc="GPIO")
