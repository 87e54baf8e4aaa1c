"""Carrying out one function call: built-in actuators, integrator handlers, one outcome.

``motion``/``emotion``/``motion_and_emotion`` go to the ``motion``/``emotion`` handlers (a dict
of the validated arguments, as ticos-client passed them), to ``expression`` handlers as
``(name, args)``, and to the actuators; every other
name goes to the ``function:<name>`` and ``function:*`` handlers, whose first non-``None``
return value is the call's result. The outcome is a plain dict::

    {"status": "done" | "failed" | "dropped", "reason": str | None, ...}
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from . import events
from .connection import function_call_output
from .dispatch import handler_name
from .errors import BadArguments, BadEvent
from .events import EMOTION_FUNCTIONS, MOTION_FUNCTIONS, EmotionArgs, FunctionCall, MotionArgs

if TYPE_CHECKING:
    from .agent import Agent
    from .connection import Connection

log = logging.getLogger("ticos_agent.calls")

HANDLER_TIMEOUT = 30.0
MAX_TRACKED_CALLS = 4096
MAX_STREAMED = 256
MAX_STREAMED_BYTES = 64 * 1024
_RANK = {"done": 0, "dropped": 1, "failed": 2}


class CallIntake:
    """Turns ``function_call`` items into one run each, whatever repeats them.

    A ``call_id`` is dispatched once: a repeated ``response.output_item.done``, the copy
    inside ``response.done`` and ``response.function_call_arguments.done`` never dispatch it
    again. Items cut off by barge-in (status ``incomplete``) and unusable arguments are
    recorded, logged and answered with an error instead.
    """

    def __init__(self, agent: Agent):
        self.agent = agent
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._streamed: OrderedDict[str, str] = OrderedDict()  # call_id -> arguments.done

    def streamed(self, call_id: str, arguments: str) -> None:
        """Remember ``function_call_arguments.done`` for an output item that may lack them."""
        if len(arguments) > MAX_STREAMED_BYTES:
            return
        self._streamed[call_id] = arguments
        if len(self._streamed) > MAX_STREAMED:
            self._streamed.popitem(last=False)

    def take(self, item: dict, response_id: str | None, conn: Connection) -> BadEvent | None:
        """Dispatch a ``function_call`` item once per ``call_id``; returns the error to answer."""
        agent = self.agent
        call_id = item.get("call_id")
        if isinstance(call_id, str) and call_id in self._seen:
            agent.counters["duplicate_calls"] += 1
            return None
        if isinstance(call_id, str):
            self._seen[call_id] = None
            if len(self._seen) > MAX_TRACKED_CALLS:
                self._seen.popitem(last=False)
        name = item.get("name")
        if item.get("status") == "incomplete":
            log.warning("function call %s (%s) was cut off (status incomplete); not dispatched", name, call_id)
            self._record(item, response_id, conn, "not_dispatched")
            return BadEvent(f"function call {name} ({call_id}) is incomplete; not dispatched",
                            code="incomplete_function_call")
        streamed = self._streamed.pop(call_id, None) if isinstance(call_id, str) else None
        if streamed is not None and not item.get("arguments"):
            item = {**item, "arguments": streamed}
        try:
            call = events.function_call(item, response_id)
            motion = events.motion_args(call.arguments) if call.name in MOTION_FUNCTIONS else None
            emotion = events.emotion_args(call.arguments) if call.name in EMOTION_FUNCTIONS else None
        except BadArguments as exc:
            agent.counters["rejected_calls"] += 1
            self._record(item, response_id, conn, "failed", {"status": "failed", "reason": str(exc)})
            log.warning("function call %s (%s) rejected: %s", name, call_id, exc)
            return exc
        why = agent.interrupted.get(response_id) if response_id is not None else None
        if why is not None:
            log.info("function call %s (%s) of response %s not run: %s", name, call_id, response_id, why)
            self._record(item, response_id, conn, "dropped", {"status": "dropped", "reason": f"response {why}"},
                         raw=call.raw_arguments)
            return None
        agent.counters["dispatches"] += 1
        self._record(item, response_id, conn, "received", raw=call.raw_arguments)
        agent.spawn(self._run(call, motion, emotion, conn))
        return None

    def _record(self, item, response_id, conn, status, outcome=None, raw=None) -> None:
        store = self.agent.store
        call_id = item.get("call_id")
        if store is None or not isinstance(call_id, str):
            return
        arguments = raw if raw is not None else item.get("arguments")
        store.record_call(call_id=call_id, name=str(item.get("name")),
                          arguments=arguments if isinstance(arguments, str) else "",
                          session_id=conn.conversation.session, response_id=response_id,
                          item_id=item.get("id") if isinstance(item.get("id"), str) else None, status=status)
        if outcome is not None:
            store.set_call_outcome(call_id, status, outcome)

    async def _run(self, call: FunctionCall, motion, emotion, conn: Connection) -> None:
        agent = self.agent
        why = agent.interrupted.get(call.response_id) if call.response_id is not None else None
        if why is not None:  # interrupted between intake and this task's first step
            result = {"status": "dropped", "reason": f"response {why}"}
        else:
            result = await run_call(agent, call, motion, emotion)
        if agent.store is not None:
            agent.store.set_call_outcome(call.call_id, result.get("status", "done"), result)
        if agent.config.replies.function_call_output:
            await agent.send(function_call_output(call.call_id, result), conn)


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
    handled += agent.dispatcher.emit("expression", call.name, dict(handler_args))
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
