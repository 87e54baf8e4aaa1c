"""One line per function call: what was asked and how it ended.

The agent stores each call's arguments as sent (a JSON string) and its outcome as JSON in
``function_calls.result`` (see :mod:`ticos_agent.calls` and
:mod:`ticos_agent.actuators.system`)::

    {"status": "done" | "failed" | "busy" | "dropped", "reason": ...,
     "motion": {"status", "reason", "detail": {"tag", "elapsed_s", "actuators", ...}},
     "emotion": {... "detail": {"actuators": [], "note": "no actuator shows emotions"}},
     "result": <a handler's return value>, "errors": [...], "notes": [...clamps...]}

with the row's own ``status`` also ``not_dispatched`` (cut off before its arguments were
complete) or ``received`` (no outcome was stored: the agent stopped first); ``not_shown`` is an emotion no
actuator could show (older cards store it as ``done`` with no actuators). :func:`describe`
turns that into ``("wave x2", "done 2.4 s", "ok")``; :func:`reason_key` folds reasons that
differ only in numbers and ids into one group for the faults view.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

MOTIONS = ("motion", "motion_and_emotion")
EMOTIONS = ("emotion", "motion_and_emotion")
_GENERIC = "interrupted (barge-in or cancelled response)"  # the actuators' reason, in rows before 2026-11-27
_ACTUATOR = re.compile(r"actuator '([^']+)' \(([^)]+)\) (is (\w+)|lost its device)")
_ID = re.compile(r"\b(resp|call|item|event|sess)_[A-Za-z0-9_-]+")
_NUMBER = re.compile(r"(?<![\w'/.])\d+(?:\.\d+)?(?![\w'])")


@dataclass(frozen=True)
class Outcome:
    """``what`` was asked (``wave x2``), ``text`` how it ended (``done 2.4 s``), and
    ``level``: ``ok``, ``note`` (not shown, dropped: nothing went wrong) or ``fault``."""

    what: str
    text: str
    level: str
    status: str
    reason: str | None


def loads(text: Any) -> Any:
    """Stored JSON text -> its value (``None`` when it is not JSON)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:g}"


def what(name: str | None, arguments: Any) -> str:
    """``wave x2``, ``happy``, ``wave + happy``, or ``get_weather(city=Paris)``."""
    args = loads(arguments) if not isinstance(arguments, dict) else arguments
    args = args if isinstance(args, dict) else {}
    parts: list[str] = []
    if name in MOTIONS:
        tag = args.get("motion_tag", "?")
        text = str(tag)
        repeat, speed = args.get("repeat"), args.get("speed")
        if repeat not in (None, 1):
            text += f" x{_number(repeat)}"
        if speed not in (None, 1, 1.0):
            text += f" at speed {_number(speed)}"
        if args.get("wait") is False:
            text += " (interrupting)"
        parts.append(text)
    if name in EMOTIONS:
        text = str(args.get("emotion_tag", "?"))
        intensity, duration = args.get("intensity"), args.get("duration")
        if intensity not in (None, 1, 1.0):
            text += f" at {_number(intensity)}"
        if duration is not None:
            text += f" for {_number(duration)} s"
        parts.append(text)
    if parts:
        return " + ".join(parts)
    shown = ", ".join(f"{k}={_short(v, 24)}" for k, v in args.items())
    return f"{name or '?'}({_short(shown, 60)})"


def _short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def dropped_reason(reason: str | None) -> str:
    """Why a call was dropped, in a few words (``barge-in``, ``response cancelled``,
    ``response failed``, ``agent stopping`` ...), alike for the rows of every version: ``response
    barge-in``, ``response response cancelled`` (older), ``... while it ran``, the actuators'
    generic ``interrupted (barge-in or cancelled response)`` (older; taken as a barge-in)."""
    text = (reason or "").strip().removesuffix(" while it ran")
    if text.startswith("response response "):
        text = text[len("response "):]
    if text in ("barge-in", _GENERIC) or text.endswith(" barge-in"):
        return "barge-in"
    if "agent" in text and "stopping" in text:
        return "agent stopping"
    return text or "no reason given"


def describe(name: str | None, arguments: Any, status: str | None, result: Any,
             *, barge_in: bool = False) -> Outcome:
    """The call's one line; ``barge_in``: its response is known to have been cut off by the
    user speaking (a drop that only says "interrupted" is then called a barge-in)."""
    asked = what(name, arguments)
    outcome = loads(result) if not isinstance(result, dict) else result
    outcome = outcome if isinstance(outcome, dict) else {}
    state = str(outcome.get("status") or status or "?")
    reason = outcome.get("reason") if isinstance(outcome.get("reason"), str) else None
    if status == "not_dispatched":
        return Outcome(asked, "not run: cut off before its arguments were complete", "fault", "not_dispatched", None)
    if status == "received" and not outcome:
        return Outcome(asked, "no outcome recorded (the agent stopped first?)", "fault", "received", None)
    if state == "done" or (state == "not_shown" and "motion" in outcome
                           and _part(outcome, "motion").get("status") == "done"):
        return Outcome(asked, _done(name, outcome), _done_level(outcome), state, reason)
    if state == "not_shown":  # an emotion no actuator can show (a light, an MCU's emotion line, a pose)
        return Outcome(asked, "not shown: no actuator", "note", "not_shown", reason)
    if state == "dropped":
        # an older row's generic reason is a barge-in only when the response is known to be one
        why = "interrupted" if (reason or "").strip() == _GENERIC and not barge_in else dropped_reason(reason)
        return Outcome(asked, f"dropped: {why}", "note", "dropped", reason)
    if state == "busy":
        return Outcome(asked, f"busy: {reason or 'the robot was busy'}", "fault", "busy", reason)
    if state == "failed":
        return Outcome(asked, f"failed: {reason or 'no reason given'}", "fault", "failed", reason)
    return Outcome(asked, state + (f": {reason}" if reason else ""), "note", state, reason)


def _part(outcome: dict[str, Any], kind: str) -> dict[str, Any]:
    part = outcome.get(kind)
    return part if isinstance(part, dict) else {}


def _detail(outcome: dict[str, Any], kind: str) -> dict[str, Any]:
    detail = _part(outcome, kind).get("detail")
    return detail if isinstance(detail, dict) else {}


def _unshown(outcome: dict[str, Any]) -> bool:
    """The emotion reached no actuator: ``not_shown`` now, ``done`` with no actuator before."""
    emotion = _detail(outcome, "emotion")
    return "emotion" in outcome and (_part(outcome, "emotion").get("status") == "not_shown"
                                     or emotion.get("actuators") == [] or "note" in emotion)


def _done_level(outcome: dict[str, Any]) -> str:
    return "note" if _unshown(outcome) or outcome.get("errors") else "ok"


def _done(name: str | None, outcome: dict[str, Any]) -> str:
    notes = [str(n) for n in outcome.get("notes") or [] if n]
    if _unshown(outcome) and "motion" not in outcome:
        text = "not shown: no actuator"
    else:
        seconds = [d.get("elapsed_s") for d in (_detail(outcome, "motion"), _detail(outcome, "emotion"))]
        took = max((s for s in seconds if isinstance(s, (int, float))), default=None)
        text = "done" + (f" {took:.1f} s" if took is not None and "motion" in outcome else "")
        if _unshown(outcome):
            text += " (emotion not shown: no actuator)"
        elif "motion" not in outcome and "emotion" not in outcome and name in MOTIONS + EMOTIONS:
            handlers = outcome.get("handlers")
            text += f" by {handlers} handler(s)" if handlers else ""
        if name not in MOTIONS + EMOTIONS and outcome.get("result") is not None:
            text += f" -> {_short(outcome['result'], 60)}"
    for error in outcome.get("errors") or []:
        text += f"; {error}"
    if notes:
        text += f" ({'; '.join(notes)})"
    return text


def reason_key(reason: str | None) -> str:
    """``reason`` with numbers and ids folded (``N``, ``<id>``) and the list of known tags cut:
    reasons that differ only there count as one."""
    text = (reason or "no reason given").strip()
    text = text.split("; known:")[0]
    text = _ID.sub(lambda m: f"{m.group(1)}_<id>", text)
    return _NUMBER.sub("N", text)


def actuator_fault(reason: str | None) -> tuple[str, str] | None:
    """``(actuator, what)`` when ``reason`` says an actuator's device was down or lost."""
    found = _ACTUATOR.search(reason or "")
    if found is None:
        return None
    return found.group(1), found.group(2)
