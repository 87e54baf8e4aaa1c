"""The agent: owns registration, the lifecycle and the wiring of every part.

Native asyncio API::

    from ticos_agent import Agent

    agent = Agent({"server": {"port": 9999}})

    @agent.on_function("get_weather")
    async def weather(call):            # call.name, call.call_id, call.arguments
        return {"sky": "clear"}         # becomes the call's outcome

    @agent.on("response.done")
    def done(event):                    # the event's JSON object
        print(event["response"]["status"])

    async def main():
        async with agent:               # start in order, stop in reverse
            await agent.wait_closed()

What the robot remembers: ``await agent.remember(...)``, ``agent.recall(...)``,
``agent.forget(...)`` (:mod:`ticos_agent.memory.methods`), and ``agent.on_memory(fn)``.

Every registration returns its unsubscribe function (the decorator form returns the
function itself; use ``agent.subscribe(...)`` for the unsubscribe function). Sync handlers
run on one worker thread in arrival order, async ones as tasks; a handler that raises is
logged with the event and its name and never stops intake. ``inline=True`` runs a sync
handler on the event loop itself (about 0.1 ms sooner; only for handlers that return at
once, since a slow one then delays the socket: see :mod:`ticos_agent.dispatch`).

Lifecycle: each step of :meth:`Agent.start` registers its own undo on an
``AsyncExitStack``, so :meth:`Agent.stop` is exactly the reverse, and a start that fails
half-way closes only what it opened. Order: handler thread, loop watch, **the listening port** (bound
before any hardware is touched: a second instance fails here), storage, actuators (safe
state), audio, the intake's consumers, then serving. Stop: close the sockets (what they left
open is stored as ``incomplete``), stop the robot and let running calls end, audio,
actuators (safe state), storage (flushed), the handler thread.

The path of one frame: :mod:`~ticos_agent.server` (socket) -> :mod:`~ticos_agent.intake`
(parse, route) -> consumers in this order: first what the robot does,
:mod:`~ticos_agent.turns` (barge-in, cancellation), :mod:`~ticos_agent.life` (the robot's
state and looks), the audio feed (player), :mod:`~ticos_agent.calls` (function calls ->
actuators and handlers); then the integrators' event handlers (their handler thread may
start on the event at once); then what is only kept: :mod:`~ticos_agent.conversation`
(messages -> storage), the voice agent's errors, the event log; the tool announcer
(``session.created``) and the memory rounds (:mod:`ticos_agent.memory`) come last.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from . import __version__, events
from .background import Background
from .calls import CallIntake
from .config import Config, from_dict, load
from .connection import Peer, Peers
from .consumers import AudioFeed, EventLog, IntegratorEvents, PeerErrors
from .conversation import Conversations
from .dispatch import Dispatcher
from .guard import CappedSite
from .health import build_health
from .intake import Intake
from .life.states import RobotLife
from .memory import NAMES as MEMORY_TOOLS
from .memory.methods import MemoryMethods
from .memory.router import MemoryToolRouter
from .server import bind, make_app
from .stall import LoopWatch
from .tools import Toolbox
from .turns import Turns

if TYPE_CHECKING:
    from .actuators import ActuatorSystem
    from .audio import AudioPlayer
    from .memory.generation import MemoryGeneration
    from .memory.summariser import Summariser
    from .storage import Store

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class Agent(MemoryMethods):
    def __init__(self, config: Config | dict[str, Any] | str | Path | None = None):
        if isinstance(config, Config):
            self.config = config
        elif isinstance(config, dict):
            self.config = from_dict(config)
        else:
            self.config = load(config)
        self.dispatcher = Dispatcher()
        self.toolbox = Toolbox(self.config.actuators, self.dispatcher.has,  # what the voice agent may call
                               memory=self.config.storage.enabled)
        self.counters: Counter[str] = Counter(events=0, errors=0, ignored=0, dispatches=0)
        self.peers = Peers(self.counters)
        self.store: Store | None = None
        self.actuators: ActuatorSystem | None = None
        self.audio: AudioPlayer | None = None
        self.intake: Intake | None = None
        self.turns: Turns | None = None
        self.conversations: Conversations | None = None
        self.life: RobotLife | None = None
        self.memory: MemoryGeneration | None = None
        self._summariser: Summariser | None = None
        self.port: int | None = None
        self._background = Background()
        self._stack: AsyncExitStack | None = None
        self.loop_watch: LoopWatch | None = None  # while started, unless [log] loop_stall = 0
        self._started_at: float | None = None
        self._closed = asyncio.Event()

    # --- registration -------------------------------------------------------------------

    def subscribe(self, topic: str, fn: Callable[..., Any], *, inline: bool = False) -> Callable[[], None]:
        """Low-level registration; topics: ``event:<type>``, ``event:*``, ``function:<name>``,
        ``function:*``, ``motion``, ``emotion``, ``expression`` (``(name, args)`` of every
        motion/emotion/motion_and_emotion call), ``conversation``, ``state``, ``storage``, ``memory``."""
        return self.dispatcher.subscribe(topic, fn, inline=inline)

    def _register(self, topic: str, fn: Callable[..., Any] | None, inline: bool) -> Any:
        if fn is not None:
            return self.subscribe(topic, fn, inline=inline)

        def decorator(func: F) -> F:
            self.subscribe(topic, func, inline=inline)
            return func

        return decorator

    def on(self, event_type: str = "*", fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
        """Handler ``fn(event: dict)`` for one event type (either spelling) or ``"*"`` for all."""
        return self._register(f"event:{events.GA_ALIASES.get(event_type, event_type)}", fn, inline)

    def on_function(self, name: str = "*", fn: Callable[..., Any] | None = None, *, inline: bool = False,
                    description: str | None = None, schema: dict[str, Any] | None = None) -> Any:
        """Handler ``fn(call: FunctionCall) -> result`` for a function name, or ``"*"``.

        With a ``schema`` (the JSON Schema of its arguments, ``{"type": "object", ...}``) or a
        ``description``, the function is also offered to the voice agent as a tool while a
        handler for it is registered (``GET /v1/tools``, ``[tools] announce``; see
        :mod:`ticos_agent.tools`). A schema that is not an object's raises ``ValueError``.
        A handler for ``remember``, ``recall`` or ``forget`` takes those calls from the built-in
        memory tools (a warning says so)."""
        if name in MEMORY_TOOLS and self.config.storage.enabled:
            log.warning("on_function(%r): this handler takes the calls of the built-in memory tool %r", name, name)
        if schema is not None or description is not None:
            self.toolbox.add(name, schema, description)
        return self._register(f"function:{name}", fn, inline)

    def on_motion(self, fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
        """Handler ``fn(args: dict)`` for every validated ``motion`` (and ``motion_and_emotion``)."""
        return self._register("motion", fn, inline)

    def on_emotion(self, fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
        """Handler ``fn(args: dict)`` for every validated ``emotion`` (and ``motion_and_emotion``)."""
        return self._register("emotion", fn, inline)

    def on_conversation(self, fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
        """Handler ``fn(item_id, role, content)`` as ticos-client called it."""
        return self._register("conversation", fn, inline)

    def on_storage(self, fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
        """Handler ``fn(state, reason)`` when storage turns ``"degraded"`` (the card missing,
        pulled, read-only or full and rows going to the fallback database, writes failing)
        and ``"ok"`` again (``reason`` is then ``None``); told at start when it opened degraded."""
        return self._register("storage", fn, inline)

    def on_state(self, fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
        """Handler ``fn(state, previous)`` for every change of the robot's state (idle, listening,
        thinking, speaking, sleeping)."""
        return self._register("state", fn, inline)

    def _memory_off(self) -> str:
        return "storage is disabled" if not self.config.storage.enabled else "the agent is not running"

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._stack is not None:
            raise RuntimeError("the agent is already running")
        self._closed = asyncio.Event()
        log.info("starting ticos-agent %s (config: %s)", __version__, self.config.source)
        stack = AsyncExitStack()
        try:
            self.dispatcher.start(asyncio.get_running_loop())
            stack.push_async_callback(self._step, "handlers: stopped", self.dispatcher.stop)
            self._watch_loop(stack)
            sockets = self._listen(stack)
            await self._start_storage(stack)
            await self._start_actuators(stack)
            await self._start_audio(stack)
            self._wire(stack)
            await self._start_memory(stack)
            await self._serve(sockets, stack)
        except BaseException:
            log.error("start failed; undoing what was started")
            await stack.aclose()
            self._closed.set()
            raise
        self._stack = stack
        self._started_at = time.monotonic()
        log.info("ready on ws://%s:%s/realtime", self.config.server.host, self.port)

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            log.info("stopping")
            await stack.aclose()
            log.info("stopped")
        self._started_at = None
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @staticmethod
    async def _step(done: str, stop: Callable[[], Any]) -> None:
        """One undo of the stop sequence, then its log line (``done``)."""
        result = stop()
        if asyncio.iscoroutine(result):
            await result
        log.info("%s", done)

    def _watch_loop(self, stack: AsyncExitStack) -> None:
        threshold = self.config.log.loop_stall
        if not threshold:
            return
        watch = LoopWatch(threshold)
        watch.start(asyncio.get_running_loop())
        self.loop_watch = watch
        stack.callback(setattr, self, "loop_watch", None)
        stack.callback(watch.stop)

    def _listen(self, stack: AsyncExitStack) -> list[socket.socket]:
        scfg = self.config.server
        sockets = bind(scfg.host, scfg.port)
        for sock in sockets:
            stack.callback(sock.close)
        self.port = sockets[0].getsockname()[1]
        log.info("server: listening on %s:%s (serving once every part is up)", scfg.host, self.port)
        return sockets

    async def _start_storage(self, stack: AsyncExitStack) -> None:
        scfg = self.config.storage
        if not scfg.enabled:
            log.info("storage: disabled by config")
            return
        from .storage import SaveMode, open_store

        store = await open_store(
            SaveMode(scfg.mode),
            tf_root=scfg.tf_root or None,
            internal_dir=scfg.internal_dir,
            db_filename=scfg.db_filename,
            event_retention_days=scfg.event_log_days or None,
            event_log_delay=scfg.event_log_delay,
        )
        self.store = store
        stack.callback(setattr, self, "store", None)
        stack.push_async_callback(self._step, "storage: flushed and closed", store.close)
        store.on_state = partial(self.dispatcher.emit, "storage")  # told now when it opened degraded
        h = store.health()
        log.info("storage: %s (%s%s)", h["path"], h["mode"], f", degraded: {h['reason']}" if h.get("reason") else "")

    async def _start_actuators(self, stack: AsyncExitStack) -> None:
        if self.config.actuators is None:
            return
        from .actuators import ActuatorSystem

        actuators = ActuatorSystem(self.config.actuators)
        stack.callback(setattr, self, "actuators", None)
        stack.push_async_callback(self._step, "actuators: stopped (safe state)", actuators.stop)
        self.actuators = actuators
        await actuators.start()  # logs each actuator, and says SIMULATED loudly when it is

    async def _start_audio(self, stack: AsyncExitStack) -> None:
        if self.config.audio is None or not self.config.audio.enabled:
            log.info("audio: disabled by config")
            return
        from .audio import AudioPlayer

        mouth = self.actuators.mouth_level if self.actuators is not None else None
        audio = AudioPlayer(self.config.audio, on_level=mouth)
        stack.callback(setattr, self, "audio", None)
        stack.push_async_callback(self._step, "audio: stopped", audio.stop)
        self.audio = audio
        await audio.start()

    def _wire(self, stack: AsyncExitStack) -> None:
        """The intake and its consumers, each given only what it uses."""
        store, audio, actuators, counters = self.store, self.audio, self.actuators, self.counters
        intake = Intake(counters)
        send, spawn = self.peers.send, self._background.spawn
        self.turns = Turns(audio=audio, actuators=actuators, send=send, spawn=spawn, counters=counters,
                           send_truncate=bool(audio is not None and audio.config.send_truncate))
        self.conversations = Conversations(store, partial(self.dispatcher.emit, "conversation"),
                                           grace=self.config.conversation.reconnect_grace,
                                           aside=self.turns.aside, interrupted=self.turns.interrupted)
        intake.add(self.turns)
        record = None
        if store is not None and self.config.storage.event_log:
            record = store.log_event
        storage = self.config.storage
        mood = storage.internal_dir / "mood.json" if storage.enabled else None
        self.life = life = RobotLife(self.config.life, self.config.states, actuators=actuators, audio=audio,
                                     emit=partial(self.dispatcher.emit, "state"), record=record,
                                     spawn=spawn, side_task=self.turns.side_task, mood_path=mood)
        intake.add(life)
        if actuators is not None:
            actuators.on_emotion = life.felt
        life.start()
        stack.callback(life.stop)
        if audio is not None:
            intake.add(AudioFeed(audio))
        memory = None
        if store is not None:
            self._memories_from(store)  # the memory API (self.memories) is made when first used
            stack.callback(self._memories_from, None)
            memory = MemoryToolRouter(self._memories,
                                      taken=lambda name: self.dispatcher.has(f"function:{name}"),
                                      respond_after_recall=self.config.replies.respond_after_recall)
        intake.add(CallIntake(store=store, dispatcher=self.dispatcher, actuators=actuators,
                              interrupted=self.turns.interrupted, send=send, spawn=spawn, counters=counters,
                              reply_outcomes=self.config.replies.function_call_output, memory=memory,
                              speaking=self.turns.active_response))
        # What the robot does comes first, then the integrators hear of the event (their handler
        # thread may start on it at once), then what is only kept: the rows, the event log.
        intake.add(IntegratorEvents(self.dispatcher))
        intake.add(self.conversations)
        intake.add(PeerErrors())
        if store is not None and self.config.storage.event_log:
            intake.add(EventLog(store))
        if self.config.tools.announce:
            from .announce import ToolAnnouncer

            intake.add(ToolAnnouncer(self.toolbox.tools, send=send, spawn=spawn, api=self.config.tools.api))
        self.intake = intake
        stack.push_async_callback(self._step, "calls: stopped", self._stop_calls)

    async def _start_memory(self, stack: AsyncExitStack) -> None:
        """Memory rounds (summaries, session_config) and priming: see :mod:`ticos_agent.memory`."""
        if self.intake is None or self.turns is None:
            return
        from .memory.wiring import start_memory

        self.memory = await start_memory(
            self.store, self.config.memory, self.intake, stack, send=self.peers.send, spawn=self._background.spawn,
            emit=self.emit_memory, side_task=self.turns.side_task, summariser=self._summariser)
        stack.callback(setattr, self, "memory", None)

    async def _stop_calls(self) -> None:
        """The robot stops what it does and takes its safe state; running calls end (outcome
        ``dropped``: the agent is stopping, not a barge-in) and are stored."""
        if self.actuators is not None:
            self.actuators.halt()
        await self._background.drain(grace=2.0)

    async def _serve(self, sockets: list[socket.socket], stack: AsyncExitStack) -> None:
        assert self.intake is not None
        app = make_app(intake=self.intake, peers=self.peers, health=self.health, reader=self.store,
                       settings=self.config.server, counters=self.counters, tools=self.toolbox.tools,
                       memories=lambda: self.memories)
        settings = self.config.server
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0,
                               keepalive_timeout=settings.request_timeout)
        await runner.setup()
        stack.push_async_callback(self._stop_serving, runner)
        for sock in sockets:
            await CappedSite(runner, sock, limit=settings.max_connections, counters=self.counters).start()

    async def _stop_serving(self, runner: web.AppRunner) -> None:
        await runner.cleanup()  # closes the sockets
        if self.intake is not None:
            self.intake.peer_closed(self.peers.http)
        if self.conversations is not None:
            self.conversations.close()  # what is still open is stored (incomplete) before storage closes
        log.info("server: stopped")

    # --- talking to the voice agent -------------------------------------------------------

    async def send(self, event: dict[str, Any], connection: Peer | None = None) -> int:
        """Send an event to the voice agent: to ``connection``, or to every open one when it is
        ``None``. A reply for a connection that has gone is not sent elsewhere. Returns how many."""
        return await self.peers.send(event, connection)

    def ingest(self, frame: str | bytes | dict[str, Any], peer: Peer | None = None) -> dict[str, Any] | None:
        """Handle one frame as if it came from ``peer`` (default: the HTTP intake's peer).
        Returns the ``error`` event to send back, or ``None``."""
        if self.intake is None:
            raise RuntimeError("the agent is not running")
        return self.intake.ingest(frame, peer or self.peers.http)

    # --- health -------------------------------------------------------------------------

    def alive(self) -> bool:
        """What the systemd watchdog asks: the loop runs (this is called on it) and the
        handler thread is alive."""
        return self.dispatcher.alive()

    def health(self) -> dict[str, Any]:
        audio_cfg = self.config.audio
        started = self._started_at
        return build_health(
            store=self.store, actuators=self.actuators, audio=self.audio,
            audio_off_reason="audio.enabled is false" if audio_cfg is not None else "not configured",
            uptime_s=time.monotonic() - started if started is not None else 0.0, port=self.port,
            connections=len(self.peers), counters=self.counters, handlers=self.dispatcher.stats(),
            life=self.life, loop=self.loop_watch,
        )


__all__ = ["Agent", "Peer"]
