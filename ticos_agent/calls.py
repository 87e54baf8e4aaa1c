"""Function call intake: each ``function_call`` item run once, its outcome stored and answered.

What one call does (actuators, integrator handlers) and the shape of its outcome are
:mod:`ticos_agent.call_outcomes`; what the intake needs of the store, the actuators and the
memory tools, :mod:`ticos_agent.call_needs` (``HANDLER_TIMEOUT`` is there, in
:mod:`~ticos_agent.call_outcomes`). The outcome is stored
with the call, logged, and sent back as a ``function_call_output`` item when
``replies.function_call_output`` is set. ``remember``/``recall``/``forget`` go to the memory
calls (:mod:`ticos_agent.memory.router`: their checks, outcomes and answers) unless an
integrator registered a handler for that very name. ``busy`` (the robot's queues are full, or more than
``MAX_IN_FLIGHT`` calls are being carried out) is always sent back, so the model learns to
wait instead of repeating itself. So is a tag the library does not know, with the tags it
does (``allowed``), so the model can correct itself.

Events are taken on the event loop thread (see :mod:`ticos_agent.intake`): taking a call only
records it and spawns its run as a task, so the intake never waits for a call.

State is bounded by count, however long the session (each bound's oldest entry forgotten
first):

* call ids dispatched: the latest ``MAX_TRACKED_CALLS`` ids, each in its latest
  ``MAX_SESSIONS_PER_CALL`` sessions. That is the window a repeat is refused in: the repeats
  the protocol makes (the copy inside ``response.done``, a reconnect going on with its response)
  come within their response, thousands of calls before their id is forgotten; a repeat of a
  forgotten one would run again;
* streamed arguments (``function_call_arguments.done``) wait for their call's item: at most
  ``MAX_STREAMED`` of ``MAX_STREAMED_BYTES`` each; the item takes them, also one cut off
  (``incomplete``), so only those whose item never comes wait until pushed out;
* calls being carried out: ``MAX_IN_FLIGHT``; more are answered ``busy``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from .arguments import (
    EMOTION_FUNCTIONS,
    MOTION_FUNCTIONS,
    EmotionArgs,
    FunctionCall,
    MotionArgs,
    emotion_args,
    function_call,
    motion_args,
)
from .call_needs import INTERRUPTED, CallLog, Expressive, MemoryArguments, MemoryRouter
from .call_outcomes import run_call, tell_outcome
from .connection import Peer, Send, Spawn, note_per_session, other_sessions
from .dispatch import Dispatcher
from .errors import BadArguments, BadEvent, StorageError
from .events import Event, response_id_of
from .intake import Handler
from .logs import peer_text
from .replies import function_call_output, response_create

log = logging.getLogger(__name__)

MAX_TRACKED_CALLS = 4096
MAX_SESSIONS_PER_CALL = 8  # sessions a call id is remembered in (a restarted voice agent reuses ids)
MAX_STREAMED = 256
MAX_STREAMED_BYTES = 64 * 1024
MAX_IN_FLIGHT = 256  # calls being carried out at once; more are answered busy at once


def _stopped_by(why: str) -> str:
    """A dropped call's reason: ``response barge-in``, ``response cancelled`` ... (``why`` is
    what :meth:`Turns.interrupted` says: ``barge-in``, ``response cancelled``)."""
    return why if why.startswith("response ") else f"response {why}"


class CallIntake:
    """Turns ``function_call`` items into one run each, whatever repeats them.

    A ``call_id`` is dispatched once per session: a repeated ``response.output_item.done``, the
    copy inside ``response.done`` and ``response.function_call_arguments.done`` never dispatch
    it again, on any socket. The same call id in another session, both named by the voice agent
    (:meth:`Peer.other_session`: a restarted voice agent numbering its calls anew), is a new
    call: it runs, and is stored as a row of its own. Items cut off by barge-in (status
    ``incomplete``) and unusable arguments are recorded, logged and answered with an error
    instead (unusable arguments of the robot's own tools also with a failed output naming the
    field, so the model can call again; a memory tool's only with that output, which a response
    talked over does not get, as its outcome would not: such a refusal is recorded and logged
    only); calls of a
    response that was interrupted (``interrupted(response_id, session)`` names why; the session
    is the peer's as the voice agent named it, so a restarted voice agent's ``resp_1`` is not
    an earlier session's interrupted one) are recorded as dropped. A call item that names no
    response (a relay that leaves ``response_id`` out) is taken as the response's this socket
    is giving (``speaking(peer)``), so that a barge-in stops it with the rest of that answer.
    """

    def __init__(self, *, store: CallLog | None, dispatcher: Dispatcher, actuators: Expressive | None,
                 interrupted: Callable[[str | None, str | None], str | None], send: Send,
                 spawn: Spawn, counters: Counter[str], reply_outcomes: bool = False,
                 memory: MemoryRouter | None = None, speaking: Callable[[Peer], str | None] = lambda peer: None):
        self._store = store
        self._speaking = speaking
        self._memory = memory
        self._dispatcher = dispatcher
        self._actuators = actuators
        self._interrupted = interrupted
        self._send = send
        self._spawn = spawn
        self._counters = counters
        self._reply_outcomes = reply_outcomes
        # call_id -> the sessions it came in (the latest MAX_SESSIONS_PER_CALL), latest last
        self._seen: OrderedDict[str, dict[str | None, None]] = OrderedDict()
        self._in_flight = 0
        self._streamed: OrderedDict[tuple[str, str | None], str] = OrderedDict()  # (call_id, session) -> arguments

    def routes(self) -> Mapping[str, Handler]:
        return {
            "response.function_call_arguments.done": self._arguments_done,
            "response.output_item.done": self._output_item_done,
            "response.done": self._response_done,
        }

    # --- events ---------------------------------------------------------------------------

    def _arguments_done(self, event: Event, peer: Peer) -> None:
        """Remember ``function_call_arguments.done`` for an output item that may lack them."""
        arguments = event.data["arguments"]
        if len(arguments) > MAX_STREAMED_BYTES:
            return
        self._streamed[(event.data["call_id"], peer.session_id)] = arguments
        if len(self._streamed) > MAX_STREAMED:
            self._streamed.popitem(last=False)

    def _output_item_done(self, event: Event, peer: Peer) -> None:
        item = event.data["item"]
        if item.get("type") == "function_call":
            # a relay may leave response_id out: the call is the response's this socket is giving
            self.take(item, response_id_of(event) or self._speaking(peer), peer)

    def _response_done(self, event: Event, peer: Peer) -> None:
        """Calls seen only in ``response.done`` are dispatched once; repeats are skipped."""
        response = event.data["response"]
        output = response.get("output")
        if not isinstance(output, list):
            return
        first: BadEvent | None = None
        for item in output:
            if isinstance(item, dict) and item.get("type") == "function_call":
                try:
                    self.take(item, response["id"], peer)
                except BadEvent as exc:
                    first = first or exc
        if first is not None:
            raise first

    # --- one call -------------------------------------------------------------------------

    def take(self, item: dict[str, Any], response_id: str | None, peer: Peer) -> None:
        """Dispatch a ``function_call`` item once per session and ``call_id``; raises the error to answer."""
        counters = self._counters
        call_id = item.get("call_id")
        session = peer.session_id
        if isinstance(call_id, str):
            if any(not other_sessions(session, seen) for seen in self._seen.get(call_id, ())):
                counters["duplicate_calls"] += 1  # seen in this session, or in one not named
                return
            note_per_session(self._seen, call_id, session, None, per_key=MAX_SESSIONS_PER_CALL,
                             keys=MAX_TRACKED_CALLS)
        name = item.get("name")
        # its streamed arguments are taken now, also when they are of no use (cut off): else they
        # would stay until MAX_STREAMED others pushed them out; the session may have been named
        # since they came
        streamed = None
        if isinstance(call_id, str):
            named, unnamed = self._streamed.pop((call_id, session), None), self._streamed.pop((call_id, None), None)
            streamed = named if named is not None else unnamed
        memory = self._memory if self._memory is not None and isinstance(name, str) and \
            self._memory.handles(name) else None
        if item.get("status") == "incomplete":
            # cut off by a barge-in that had stopped its response: the expected flow, a drop like
            # any call of that response (a memory call that would have survived it excepted)
            stopped = self._why(str(name), response_id, memory, peer)
            if stopped is not None:
                log.info("function call %s (%s) of response %s was cut off: %s", peer_text(name),
                         peer_text(call_id), peer_text(response_id), stopped)
                self._record(item, response_id, peer, "dropped", {"status": "dropped", "reason": _stopped_by(stopped)})
                return
            log.warning("function call %s (%s) was cut off (status incomplete); not dispatched",
                        peer_text(name), peer_text(call_id))
            self._record(item, response_id, peer, "not_dispatched")
            raise BadEvent(f"function call {name} ({call_id}) is incomplete; not dispatched",
                           code="incomplete_function_call")
        if streamed is not None and not item.get("arguments"):
            item = {**item, "arguments": streamed}
        remembering: MemoryArguments | None = None
        try:
            call = function_call(item, response_id)
            motion = motion_args(call.arguments) if call.name in MOTION_FUNCTIONS else None
            emotion = emotion_args(call.arguments) if call.name in EMOTION_FUNCTIONS else None
            if memory is not None:
                remembering = memory.arguments(call)
        except BadArguments as exc:
            counters["rejected_calls"] += 1
            failed: dict[str, Any] = {"status": "failed", "reason": str(exc), "field": exc.field}
            self._record(item, response_id, peer, "failed", failed)
            log.warning("function call %s (%s) rejected: %s", peer_text(name), peer_text(call_id), exc)
            # the robot's own tools tell the model what to correct (as for an unknown tag), other
            # functions as their outcomes go; the voice agent gets the error event as well
            ours = memory is not None or (isinstance(name, str) and (name in MOTION_FUNCTIONS or
                                                                     name in EMOTION_FUNCTIONS))
            if isinstance(call_id, str) and (ours or self._reply_outcomes) and \
                    self._why(str(name), response_id, memory, peer) is None:
                self._spawn(self._answer(call_id, failed, peer,
                                         memory is not None and memory.respond_after(str(name))))
            if memory is None or not isinstance(call_id, str):
                raise
            return
        why = self._why(call.name, response_id, memory, peer)
        if why is not None:
            log.info("function call %s (%s) of response %s not run: %s", peer_text(name), peer_text(call_id),
                     peer_text(response_id), why)
            self._record(item, response_id, peer, "dropped", {"status": "dropped", "reason": _stopped_by(why)},
                         raw=call.raw_arguments)
            return
        if self._in_flight >= MAX_IN_FLIGHT:
            counters["busy_calls"] += 1
            busy = {"status": "busy", "reason": f"{self._in_flight} calls are being carried out; try again later"}
            self._record(item, response_id, peer, "busy", busy, raw=call.raw_arguments)
            log.warning("function call %s (%s) answered busy: %s", peer_text(name), peer_text(call_id), busy["reason"])
            self._spawn(self._send(function_call_output(call.call_id, busy), peer))
            return
        counters["dispatches"] += 1
        self._in_flight += 1
        self._record(item, response_id, peer, "received", raw=call.raw_arguments)
        self._spawn(self._run(call, motion, emotion, peer, remembering, peer.session))

    def _record(self, item: dict[str, Any], response_id: str | None, peer: Peer, status: str,
                outcome: dict[str, Any] | None = None, raw: str | None = None) -> None:
        store = self._store
        call_id = item.get("call_id")
        if store is None or not isinstance(call_id, str):
            return
        arguments = raw if raw is not None else item.get("arguments")
        item_id = item.get("id")
        try:  # a store that cannot take it (closed) must not keep the call from running and answering
            store.record_call(call_id=call_id, name=str(item.get("name")),
                              arguments=arguments if isinstance(arguments, str) else "",
                              session_id=peer.session, response_id=response_id,
                              item_id=item_id if isinstance(item_id, str) else None, status=status)
            if outcome is not None:
                store.set_call_outcome(call_id, status, outcome, session_id=peer.session)
        except StorageError as exc:
            log.warning("function call %s: not recorded: %s", peer_text(call_id), exc)

    async def _run(self, call: FunctionCall, motion: MotionArgs | None, emotion: EmotionArgs | None,
                   peer: Peer, remembering: MemoryArguments | None, session: str) -> None:
        """Carry out one call; ``session`` is the one it was stored under (the peer's may be
        named meanwhile)."""
        memory = self._memory if remembering is not None else None
        try:
            why = self._why(call.name, call.response_id, memory, peer)
            started = time.monotonic()
            if why is not None:  # interrupted between intake and this task's first step
                result: dict[str, Any] = {"status": "dropped", "reason": _stopped_by(why)}
            elif memory is not None:
                result = await memory.run(remembering)
                why = self._why(call.name, call.response_id, memory, peer)
                if why is not None:  # a barge-in while it ran: nobody waits for this answer any more
                    result = {"status": "dropped", "reason": f"{_stopped_by(why)} while it ran"}
            else:
                result = await run_call(self._dispatcher, self._actuators, call, motion, emotion)
                if result.get("status") == "dropped" and INTERRUPTED in str(result.get("reason")) and \
                        (why := self._why(call.name, call.response_id, None, peer)) is not None:
                    # which stop it was (the actuators cannot tell); a drop for another reason stays
                    result = {**result, "reason": str(result["reason"]).replace(INTERRUPTED, _stopped_by(why))}
        finally:
            self._in_flight -= 1
        tell_outcome(call, motion, emotion, result, time.monotonic() - started)
        if self._store is not None:
            try:
                self._store.set_call_outcome(call.call_id, result.get("status", "done"), result, session_id=session)
            except StorageError as exc:
                log.warning("function call %s: outcome not recorded: %s", peer_text(call.call_id), exc)
        answered = memory is not None and result.get("status") != "dropped" and \
            memory.always_answered(call.name, result)
        if answered or self._reply_outcomes or result.get("status") == "busy" or "allowed" in result:
            respond = memory is not None and result.get("status") != "dropped" and memory.respond_after(call.name)
            await self._answer(call.call_id, result, peer, respond)

    def _why(self, name: str, response_id: str | None, memory: MemoryRouter | None, peer: Peer) -> str | None:
        """Why a call of this response (of ``peer``'s session) is not to run, or be answered,
        now: its response was interrupted (a memory call that survives that excepted); ``None``
        when it is."""
        if memory is not None and memory.survives_interruption(name):
            return None
        return self._interrupted(response_id, peer.session_id)

    async def _answer(self, call_id: str, outcome: dict[str, Any], peer: Peer, respond: bool) -> None:
        await self._send(function_call_output(call_id, outcome), peer)
        if respond:
            await self._send(response_create(), peer)

