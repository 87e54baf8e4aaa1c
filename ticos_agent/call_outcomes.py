"""Carrying out one function call: built-in actuators, integrator handlers, one outcome.

``motion``/``emotion``/``motion_and_emotion`` go to the ``motion``/``emotion`` handlers (a dict
of the validated arguments, as ticos-client passed them), to ``expression`` handlers as
``(name, args)``, and to the actuators; every other
name goes to the ``function:<name>`` and ``function:*`` handlers, whose first non-``None``
return value is the call's result. The outcome is a plain dict::

    {"status": "done" | "failed" | "busy" | "not_shown" | "dropped", "reason": str | None, ...}

A tag the actuators do not know comes back with the tags they do, by argument, so the model
can correct itself::

    {"status": "failed", "reason": "unknown motion tag 'backflip'; known: bow, ...",
     "allowed": {"motion_tag": ["bow", "dance", "nod", "shake", "wave"]}, ...}

Everything here runs on the event loop thread, in the task :class:`ticos_agent.calls.CallIntake`
spawned for the call; :func:`run_call` never raises. Integrator handlers run as they were
subscribed (see :mod:`ticos_agent.dispatch`); those not finished after ``HANDLER_TIMEOUT``
seconds are cancelled and named in the outcome. Its log lines are the calls' own
(logger ``ticos_agent.calls``), as before this module was split out of that one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from .arguments import EmotionArgs, FunctionCall, MotionArgs
from .call_needs import ActuatorOutcome, Expressive
from .dispatch import Dispatcher, handler_name
from .logs import peer_text

log = logging.getLogger(__name__)

HANDLER_TIMEOUT = 30.0
_RANK = {"done": 0, "not_shown": 1, "dropped": 2, "busy": 3, "failed": 4}


def tell_outcome(call: FunctionCall, motion: MotionArgs | None, emotion: EmotionArgs | None, result: dict[str, Any],
                 seconds: float) -> None:
    """One line of the robot's story per call: what it did, how it ended, how long it took."""
    parts = []
    if motion is not None:
        parts.append(f"motion {peer_text(motion.motion_tag, 64)}"
                     + (f" x{motion.repeat}" if motion.repeat != 1 else "")
                     + (f" at speed {motion.speed:g}" if motion.speed != 1 else "")
                     + ("" if motion.wait else " (interrupting)"))
    if emotion is not None:
        parts.append(f"emotion {peer_text(emotion.emotion_tag, 64)}"
                     + (f" at {emotion.intensity:g}" if emotion.intensity != 1 else "")
                     + (f" for {emotion.duration:g} s" if emotion.duration is not None else ""))
    what = " + ".join(parts) or f"function {peer_text(call.name, 64)}"
    status = result.get("status", "done")
    reason = result.get("reason")
    level = logging.WARNING if status == "failed" else logging.INFO
    log.log(level, "%s: %s in %.2f s%s", what, status, seconds, f" ({reason})" if reason else "")


async def run_call(dispatcher: Dispatcher, actuators: Expressive | None, call: FunctionCall,
                   motion: MotionArgs | None, emotion: EmotionArgs | None) -> dict[str, Any]:
    """Carry out one call and return its outcome; never raises."""
    try:
        if motion is None and emotion is None:
            return await _run_function(dispatcher, call)
        return await _run_expression(dispatcher, actuators, call, motion, emotion)
    except asyncio.CancelledError:
        return {"status": "dropped", "reason": "agent stopping"}
    except Exception as exc:  # never let one call's bug escape into the loop
        log.exception("function call %s (%s) failed", peer_text(call.name), peer_text(call.call_id))
        return {"status": "failed", "reason": f"internal error: {type(exc).__name__}: {exc}"}


async def _run_expression(dispatcher: Dispatcher, actuators: Expressive | None, call: FunctionCall,
                          motion: MotionArgs | None, emotion: EmotionArgs | None) -> dict[str, Any]:
    handler_args = dict(call.arguments)
    notes: list[str] = []
    jobs: list[Awaitable[ActuatorOutcome]] = []
    kinds: list[str] = []
    if motion is not None:
        handler_args.update(motion.as_dict())
        notes.extend(motion.notes)
    if emotion is not None:
        handler_args.update(emotion.as_dict())
        notes.extend(emotion.notes)
    handled = 0
    if motion is not None:
        handled += dispatcher.emit("motion", dict(handler_args))
    if emotion is not None:
        handled += dispatcher.emit("emotion", dict(handler_args))
    handled += dispatcher.emit("expression", call.name, dict(handler_args))
    if actuators is not None:
        if motion is not None:
            jobs.append(actuators.motion(motion, response_id=call.response_id, call_id=call.call_id))
            kinds.append("motion")
        if emotion is not None:
            jobs.append(actuators.emotion(emotion, response_id=call.response_id, call_id=call.call_id))
            kinds.append("emotion")
    result: dict[str, Any] = {"status": "done", "reason": None}
    if jobs:
        outcomes = await asyncio.gather(*jobs)
        worst = max(outcomes, key=lambda o: _RANK.get(o.status, 2))
        result["status"] = worst.status
        result["reason"] = worst.reason
        for kind, outcome in zip(kinds, outcomes):
            result[kind] = outcome.as_dict()
    elif not handled:
        result = {"status": "failed", "reason": f"no actuators and no {call.name} handler"}
    allowed = _allowed_tags(result)
    if allowed:
        result["allowed"] = allowed
    if handled:
        result["handlers"] = handled
    if notes:
        result["notes"] = notes
    return result


def _allowed_tags(result: dict[str, Any]) -> dict[str, list[str]]:
    """``{"motion_tag": [...]}`` (and/or ``emotion_tag``) for each tag the actuators did not know
    (their outcome ``failed`` with the tags they know, as ``UnknownTag`` names them)."""
    allowed = {}
    for kind in ("motion", "emotion"):
        outcome = result.get(kind)
        detail = outcome.get("detail") if isinstance(outcome, dict) and outcome.get("status") == "failed" else None
        if isinstance(detail, dict) and isinstance(detail.get("known"), list):
            allowed[f"{kind}_tag"] = list(detail["known"])
    return allowed


async def _run_function(dispatcher: Dispatcher, call: FunctionCall) -> dict[str, Any]:
    topic = f"function:{call.name}"
    handlers = [(topic, fn) for fn in dispatcher.handlers(topic)]
    handlers += [("function:*", fn) for fn in dispatcher.handlers("function:*")]
    if not handlers:
        log.warning("no handler for function %s (call %s)", peer_text(call.name), peer_text(call.call_id))
        return {"status": "failed", "reason": f"no handler registered for function {call.name!r}"}
    # each runs as it was subscribed (a "*" handler subscribed inline runs inline, too)
    futures = [dispatcher.call(topic, fn, call, registered=under) for under, fn in handlers]
    done, pending = await asyncio.wait(futures, timeout=HANDLER_TIMEOUT)
    for fut in pending:
        fut.cancel()
    result: Any = None
    errors = []
    for (_, fn), fut in zip(handlers, futures):
        if fut not in done or fut.cancelled():
            errors.append(f"{handler_name(fn)} timed out after {HANDLER_TIMEOUT:g}s")
        elif fut.exception() is not None:
            exc = fut.exception()
            errors.append(f"{handler_name(fn)} raised {type(exc).__name__}: {exc}")
        elif result is None:
            result = fut.result()
    if errors and result is None:
        return {"status": "failed", "reason": "; ".join(errors)}
    out: dict[str, Any] = {"status": "done", "reason": None, "result": result}
    if errors:
        out["errors"] = errors
    return out
