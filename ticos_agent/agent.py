"""The agent: owns config, storage, handlers, actuators, audio and the server.

Native asyncio API::

    from ticos_agent import Agent

    agent = Agent({"server": {"port": 9999}})

    @agent.on_function("get_weather")
    async def weather(call):            # call.name, call.call_id, call.arguments
        return {"sky": "clear"}         # becomes the call's outcome

    @agent.on("response.done")
    def done(event):                    # the event's JSON object
        print(event["response"]["status"])

    async with agent:                   # start in order, stop in reverse
        await agent.wait_closed()

Every registration returns its unsubscribe function (the decorator form returns the
function itself; use ``agent.subscribe(...)`` for the unsubscribe function). Sync handlers
run on one worker thread in arrival order, async ones as tasks; a handler that raises is
logged with the event and its name and never stops intake.

Start order: handlers, storage, actuators, audio, server. Stop: the reverse; storage is
flushed last, after open conversations have been stored as ``incomplete``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from . import __version__, events
from .config import Config, default_internal_dir, from_dict, load
from .calls import CallIntake
from .connection import Connection, error_event, reply_id
from .conversation import response_id_of as _rid
from .dispatch import Dispatcher
from .errors import BadEvent, TicosError
from .events import Event

log = logging.getLogger("ticos_agent")



class Agent:
    def __init__(self, config: Config | dict | str | Path | None = None):
        if isinstance(config, Config):
            self.config = config
        elif isinstance(config, dict):
            self.config = from_dict(config)
        else:
            self.config = load(config)
        self.dispatcher = Dispatcher()
        self.store = None
        self.actuators = None
        self.audio = None
        self.counters: defaultdict[str, int] = defaultdict(int)
        for key in ("events", "errors", "ignored", "dispatches"):
            self.counters[key] = 0
        self.http_connection: Connection | None = None
        self._connections: set[Connection] = set()
        self.calls = CallIntake(self)
        self.interrupted: OrderedDict[str, str] = OrderedDict()  # response id -> why (bounded)
        self._call_tasks: set[asyncio.Task] = set()
        self._audio_response: str | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._started_at: float | None = None
        self._closed = asyncio.Event()
        self.port: int | None = None
        self.storage_error: str | None = None

    # --- registration -------------------------------------------------------------------

    def subscribe(self, topic: str, fn: Callable) -> Callable[[], None]:
        """Low-level registration; topics: ``event:<type>``, ``event:*``, ``function:<name>``,
        ``function:*``, ``motion``, ``emotion``, ``expression`` (``(name, args)`` of every
        motion/emotion/motion_and_emotion call), ``conversation``."""
        return self.dispatcher.subscribe(topic, fn)

    def _register(self, topic: str, fn: Callable | None):
        if fn is not None:
            return self.subscribe(topic, fn)

        def decorator(func: Callable) -> Callable:
            self.subscribe(topic, func)
            return func

        return decorator

    def on(self, event_type: str = "*", fn: Callable | None = None):
        """Handler ``fn(event: dict)`` for one event type (either spelling) or ``"*"`` for all."""
        return self._register(f"event:{events.GA_ALIASES.get(event_type, event_type)}", fn)

    def on_function(self, name: str = "*", fn: Callable | None = None):
        """Handler ``fn(call: FunctionCall) -> result`` for a function name, or ``"*"``."""
        return self._register(f"function:{name}", fn)

    def on_motion(self, fn: Callable | None = None):
        """Handler ``fn(args: dict)`` for every validated ``motion`` (and ``motion_and_emotion``)."""
        return self._register("motion", fn)

    def on_emotion(self, fn: Callable | None = None):
        return self._register("emotion", fn)

    def on_conversation(self, fn: Callable | None = None):
        """Handler ``fn(item_id, role, content)`` as ticos-client called it."""
        return self._register("conversation", fn)

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        cfg = self.config
        self._closed = asyncio.Event()
        self.dispatcher.start(asyncio.get_running_loop())
        log.info("starting ticos-agent %s (config: %s)", __version__, cfg.source)
        try:
            await self._start_storage()
            await self._start_actuators()
            await self._start_audio()
            self.http_connection = Connection(self, None, "http")
            await self._start_server()
        except BaseException:
            await self.stop()
            raise
        self._started_at = time.monotonic()
        log.info("ready on ws://%s:%s/realtime", cfg.server.host, self.port)

    async def _start_storage(self) -> None:
        scfg = self.config.storage
        if not scfg.enabled:
            log.info("storage: disabled by config")
            return
        from .storage import SaveMode, open_store

        self.store = await open_store(
            SaveMode(scfg.mode),
            tf_root=scfg.tf_root or None,
            internal_dir=scfg.dir or default_internal_dir(),
            db_filename=scfg.db_filename,
            event_retention_days=scfg.event_log_days or None,
        )
        h = self.store.health()
        log.info("storage: %s (%s%s)", h["path"], h["mode"], f", degraded: {h['reason']}" if h.get("reason") else "")

    async def _start_actuators(self) -> None:
        if self.config.actuators is None:
            return
        from .actuators import ActuatorSystem

        self.actuators = ActuatorSystem(self.config.actuators)
        await self.actuators.start()
        if self.actuators.simulated:
            log.warning("actuators: SIMULATED (no hardware configured or found); motions run on mock drivers")

    async def _start_audio(self) -> None:
        if self.config.audio is None or not self.config.audio.enabled:
            log.info("audio: disabled by config")
            return
        from .audio import AudioPlayer

        mouth = self.actuators.mouth_level if self.actuators is not None else None
        self.audio = AudioPlayer(self.config.audio, on_level=mouth)
        await self.audio.start()

    async def _start_server(self) -> None:
        from .server import make_app

        scfg = self.config.server
        self._runner = web.AppRunner(make_app(self), handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, scfg.host, scfg.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        self.port = server.sockets[0].getsockname()[1] if server and server.sockets else scfg.port

    async def stop(self) -> None:
        log.info("stopping")
        if self._runner is not None:
            await self._runner.cleanup()  # closes sockets; their conversations are stored
            self._runner = None
            log.info("server: stopped")
        if self.http_connection is not None:
            self.http_connection.conversation.close()
        if self.audio is not None:
            await self.audio.stop()
            log.info("audio: stopped")
        if self.actuators is not None:
            self.actuators.interrupt(None)
        if self._call_tasks:
            _, pending = await asyncio.wait(list(self._call_tasks), timeout=2.0)
            for task in pending:  # their outcome is stored as dropped before storage closes
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        if self.actuators is not None:
            await self.actuators.stop()
            log.info("actuators: stopped (safe state)")
        if self.store is not None:
            await self.store.close()
            log.info("storage: flushed and closed")
        await self.dispatcher.stop()
        self._closed.set()
        log.info("stopped")

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # --- connections --------------------------------------------------------------------

    def connect(self, ws: web.WebSocketResponse, peer: str) -> Connection:
        conn = Connection(self, ws, peer)
        self._connections.add(conn)
        self.counters["connections_total"] += 1
        log.info("connection %s opened", conn.name)
        return conn

    def disconnect(self, conn: Connection) -> None:
        self._connections.discard(conn)
        conn.conversation.close()
        log.info("connection %s closed", conn.name)

    async def close_connections(self) -> None:
        for conn in list(self._connections):
            if conn.ws is not None:
                await conn.ws.close(code=1001, message=b"agent shutting down")

    async def send(self, event: dict, connection: Connection | None = None) -> int:
        """Send an event to the voice agent: to ``connection``, or to every open one when it is
        ``None``. A reply for a connection that has gone is not sent elsewhere. Returns how many."""
        if connection is not None and not connection.open:
            log.info("not sending %s: connection %s is closed", event.get("type"), connection.name)
            return 0
        targets = [connection] if connection is not None else list(self._connections)
        sent = 0
        for conn in targets:
            sent += await conn.send_now(event)
        return sent

    # --- intake -------------------------------------------------------------------------

    def ingest(self, frame: Any, conn: Connection) -> dict | None:
        """Handle one frame. Returns an ``error`` event to send back, or ``None``."""
        counters = self.counters
        counters["events"] += 1
        try:
            event = events.parse(frame)
        except BadEvent as exc:
            return self._bad(exc, conn)
        try:
            self.dispatch(event, conn)
        except BadEvent as exc:
            return self._bad(exc, conn)
        except Exception as exc:  # a bug must not take the socket down with it
            log.exception("internal error handling %r from %s", event, conn.name)
            return self._bad(BadEvent(f"internal error: {type(exc).__name__}", code="internal_error",
                                      event_id=event.event_id), conn)
        return None

    def _bad(self, exc: BadEvent, conn: Connection) -> dict:
        self.counters["errors"] += 1
        log.warning("%s: rejected frame: %s (%s)", conn.name, exc, exc.code)
        return error_event(exc.code, str(exc), exc.event_id)

    def dispatch(self, event: Event, conn: Connection) -> None:
        """Route one event: conversation, audio, calls, barge-in, event log, handlers.

        Raises :class:`BadEvent` after everything else was done when a part of the event
        could not be used (a bad audio delta, an unusable function call).
        """
        etype = event.type
        if not event.known:
            self.counters["ignored"] += 1
        conv = conn.conversation
        error: BadEvent | None = None
        try:
            conv.handle(event)
            if etype == "response.audio.delta":
                self._audio_delta(event)
            elif etype == "response.output_item.done":
                item = event.data["item"]
                if item.get("type") == "function_call":
                    error = self.calls.take(item, _rid(event), conn)
            elif etype == "response.done":
                error = self._response_done(event, conn)
            elif etype == "response.function_call_arguments.done":
                self.calls.streamed(event.data["call_id"], event.data["arguments"])
            elif etype == "input_audio_buffer.speech_started":
                self._speech_started(conn)
            elif etype == "error":
                detail = event.data.get("error")
                log.warning("%s reported an error: %s", conn.name,
                            str(detail.get("message") if isinstance(detail, dict) else detail)[:200])
        except BadEvent as exc:
            error = exc
        if self.store is not None and self.config.storage.event_log and not etype.endswith(".delta"):
            self._log_event(event, conv.session)
        dispatcher = self.dispatcher
        if dispatcher.has("event:*"):
            dispatcher.emit("event:*", event.data)
        if dispatcher.has("event:" + etype):
            dispatcher.emit("event:" + etype, event.data)
        if error is not None:
            if error.event_id is None:
                error.event_id = event.event_id
            raise error

    def _log_event(self, event: Event, session: str) -> None:
        data = event.data
        item_id = data.get("item_id")
        if item_id is None and isinstance(data.get("item"), dict):
            item_id = data["item"].get("id")
        response_id = data.get("response_id")
        if response_id is None and isinstance(data.get("response"), dict):
            response_id = data["response"].get("id")
        self.store.log_event(event.type, session_id=session, event_id=event.event_id,
                             item_id=_str(item_id), response_id=_str(response_id))

    # --- audio and barge-in -------------------------------------------------------------

    def _audio_delta(self, event: Event) -> None:
        if self.audio is None:
            return
        rid = _rid(event)
        self._audio_response = rid
        self.audio.feed(event.data["delta"], response_id=rid, item_id=event.data["item_id"])

    def _speech_started(self, conn: Connection) -> None:
        rid = conn.conversation.active_response
        playing = self.audio is not None and self.audio.playing
        if rid is None and not playing:
            return
        self.interrupt(rid or self._audio_response, conn, reason="barge-in")

    def interrupt(self, response_id: str | None, conn: Connection | None = None, *, reason: str) -> None:
        """Stop the robot talking and moving for ``response_id`` (barge-in, cancel); calls of
        that response that arrive later are dropped, not run."""
        self.counters["interruptions"] += 1
        if response_id is not None:
            self.interrupted[response_id] = reason
            if len(self.interrupted) > 256:
                self.interrupted.popitem(last=False)
        item_id = played = None
        if self.audio is not None:
            item_id = self.audio.current_item_id
            played = self.audio.played_ms(item_id) if item_id else None
            if reason == "barge-in":  # everything playing stops, and the response's later audio too
                self.audio.flush(None, also=response_id)
            else:
                self.audio.flush(response_id)
        dropped = self.actuators.interrupt(response_id) if self.actuators is not None else 0
        log.info("%s: stopped response %s (audio at %s ms of %s, %d queued command(s) dropped)",
                 reason, response_id, played, item_id, dropped)
        if (conn is not None and item_id and played is not None and self.audio is not None
                and getattr(self.audio.config, "send_truncate", False)):
            truncate = {"type": "conversation.item.truncate", "event_id": reply_id(),
                        "item_id": item_id, "content_index": 0, "audio_end_ms": int(played)}
            self.spawn(conn.send_now(truncate))

    def _response_done(self, event: Event, conn: Connection) -> BadEvent | None:
        response = event.data["response"]
        status = response.get("status")
        if status in ("cancelled", "failed"):
            self.interrupt(_str(response.get("id")), None, reason=f"response {status}")
        first_error = None
        output = response.get("output")
        if isinstance(output, list):  # calls seen only here are dispatched once; repeats are skipped
            for item in output:
                if isinstance(item, dict) and item.get("type") == "function_call":
                    error = self.calls.take(item, _str(response.get("id")), conn)
                    first_error = first_error or error
        return first_error

    def spawn(self, coro) -> asyncio.Task:
        """Run ``coro`` as a task the agent waits for (briefly) when it stops."""
        task = asyncio.get_running_loop().create_task(coro)
        self._call_tasks.add(task)
        task.add_done_callback(self._call_done)
        return task

    def _call_done(self, task: asyncio.Task) -> None:
        self._call_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %s", task.exception(), exc_info=task.exception())

    # --- health -------------------------------------------------------------------------

    def alive(self) -> bool:
        """What the systemd watchdog asks: the loop runs (this is called on it) and the
        handler thread is alive."""
        return self.dispatcher.alive()

    def health(self) -> dict[str, Any]:
        from .health import build_health

        return build_health(self)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


__all__ = ["Agent", "Connection", "TicosError"]
