"""Carrying out one function call: built-in actuators, integrator handlers, one outcome.

``motion``/``emotion``/``motion_and_emotion`` go to the ``motion``/``emotion`` handlers (a dict
of the validated arguments, as ticos-client passed them) and to the actuators; every other
name goes to the ``function:<name>`` and ``function:*`` handlers, whose first non-``None``
return value is the call's result. The outcome is a plain dict::

    {"status": "done" | "failed" | "dropped", "reason": str | None, ...}
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .dispatch import handler_name
from .events import EmotionArgs, FunctionCall, MotionArgs

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("ticos_agent.calls")

HANDLER_TIMEOUT = 30.0
_RANK = {"done": 0, "dropped": 1, "failed": 2}


async def run_call(agent: Agent, call: FunctionCall, motion: MotionArgs | None,
                   emotion: EmotionArgs | None) -> dict[str, Any]:
    try:
        if motion is None and emotion is None:
            return await _run_function(agent, call)
        return await _run_expression(agent, call, motion, emotion)
    except asyncio.CancelledError:
        return {"status": "dropped", "reason": "agent stopping"}
    except Exception as exc:  # never let one call's bug escape into the loop
        log.exception("function call %s (%s) failed", call.name, call.call_id)
        return {"status": "failed", "reason": f"internal error: {type(exc).__name__}: {exc}"}


async def _run_expression(agent, call, motion, emotion) -> dict[str, Any]:
    handler_args = dict(call.arguments)
    notes: list[str] = []
    jobs = []
    kinds = []
    if motion is not None:
        handler_args.update(motion.as_dict())
        notes.extend(motion.notes)
    if emotion is not None:
        handler_args.update(emotion.as_dict())
        notes.extend(emotion.notes)
    handled = 0
    if motion is not None:
        handled += agent.dispatcher.emit("motion", dict(handler_args))
    if emotion is not None:
        handled += agent.dispatcher.emit("emotion", dict(handler_args))
    actuators = agent.actuators
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
    if handled:
        result["handlers"] = handled
    if notes:
        result["notes"] = notes
    return result


async def _run_function(agent, call: FunctionCall) -> dict[str, Any]:
    dispatcher = agent.dispatcher
    handlers = dispatcher.handlers(f"function:{call.name}") + dispatcher.handlers("function:*")
    if not handlers:
        log.warning("no handler for function %r (call %s)", call.name, call.call_id)
        return {"status": "failed", "reason": f"no handler registered for function {call.name!r}"}
    futures = [dispatcher.call(f"function:{call.name}", fn, call) for fn in handlers]
    done, pending = await asyncio.wait(futures, timeout=HANDLER_TIMEOUT)
    for fut in pending:
        fut.cancel()
    result: Any = None
    errors = []
    for fn, fut in zip(handlers, futures):
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
