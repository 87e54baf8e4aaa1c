"""The aiohttp application: ``/realtime`` for the voice agent, ``/health`` and a small read API.

=======================  ==================================================================
route                    what
=======================  ==================================================================
``GET /realtime``        WebSocket; JSON events in text or binary frames, replies out
``GET /health``          JSON status: ok/degraded, storage, actuators, audio, counters
``GET /v1/messages``     stored messages, newest first (``limit``, ``offset``, ``session``: an id
                         as the voice agent gave it, also one stored shortened)
``GET /v1/memories``     stored memories, newest first (``limit``, ``offset``); ``q``: a search
``POST /v1/memories``    store one memory; ``DELETE /v1/memories/{id}`` forgets one
                         (:mod:`ticos_agent.memory.routes`)
``GET /v1/calls``        stored function calls and their outcomes
``GET /v1/tools``        ``{"tools": [...]}``: the tools the voice agent can use (:mod:`~ticos_agent.tools`)
``POST /v1/events``      one event, handled exactly as if it came over the socket
=======================  ==================================================================

Frames larger than ``server.max_frame_bytes`` close that socket with 1009; new sockets are
still accepted. Every request first passes :mod:`ticos_agent.guard` (Host, Origin, token,
JSON bodies); no CORS headers are sent. Limits: ``server.max_connections`` open connections,
``server.request_timeout`` to send a request (and to idle between requests), and a WebSocket
heartbeat (``server.heartbeat``): a peer that answers nothing is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from .connection import Peers, stored_session_id
from .guard import Guard, GuardSettings
from .intake import Intake
from .memory.http import MemoriesFn
from .memory.http import add_routes as add_memory_routes

log = logging.getLogger(__name__)

MAX_PAGE = 500
#: Seconds of handling one socket's frames after which it lets the loop run the others: while
#: frames are buffered ``receive()`` returns without yielding, and a flood on one socket must
#: not keep ``/health``, the other sockets and the timers waiting.
SOCKET_TURN = 0.002
_TEXT, _BINARY = WSMsgType.TEXT, WSMsgType.BINARY
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)  # where ``async for msg in ws`` ends


class Reader(Protocol):
    """The store's read queries the HTTP API serves."""

    def messages(self, *, limit: int, offset: int,
                 session_id: str | None = None) -> Awaitable[list[dict[str, Any]]]: ...

    def calls(self, *, limit: int, offset: int) -> Awaitable[list[dict[str, Any]]]: ...


class ServerSettings(GuardSettings, Protocol):
    """The ``[server]`` options the application reads."""

    @property
    def max_frame_bytes(self) -> int: ...

    @property
    def heartbeat(self) -> float: ...


INTAKE = web.AppKey("intake", Intake)
PEERS = web.AppKey("peers", Peers)
HealthFn = Callable[[], dict[str, Any]]
HEALTH: web.AppKey[HealthFn] = web.AppKey("health")
READER = web.AppKey("reader", object)  # a Reader, or None when storage is disabled
SETTINGS = web.AppKey("settings", ServerSettings)
COUNTERS = web.AppKey("counters", Counter)
ToolsFn = Callable[[], list[dict[str, Any]]]
TOOLS: web.AppKey[ToolsFn] = web.AppKey("tools")


def make_app(*, intake: Intake, peers: Peers, health: Callable[[], dict[str, Any]], reader: Reader | None,
             settings: ServerSettings, counters: Counter[str], tools: ToolsFn | None = None,
             memories: MemoriesFn | None = None) -> web.Application:
    """The application; ``reader`` is ``None`` when storage is disabled (the read API says 503);
    ``tools`` gives what ``GET /v1/tools`` lists (none: an empty list); ``memories`` gives what
    serves the memory routes (``None``, or it gives ``None``: storage is disabled, they say 503)."""
    app = web.Application(client_max_size=settings.max_frame_bytes, middlewares=[Guard(settings, counters).middleware])
    app[INTAKE] = intake
    app[PEERS] = peers
    app[HEALTH] = health
    app[READER] = reader
    app[SETTINGS] = settings
    app[COUNTERS] = counters
    app[TOOLS] = tools or list
    app.router.add_get("/realtime", realtime)
    app.router.add_get("/health", health_route)
    app.router.add_get("/v1/messages", messages)
    app.router.add_get("/v1/calls", calls)
    app.router.add_get("/v1/tools", tools_route)
    app.router.add_post("/v1/events", post_event)
    add_memory_routes(app, memories or _no_memories)
    app.on_shutdown.append(_close_sockets)
    return app


def _no_memories() -> None:
    return None


async def realtime(request: web.Request) -> web.StreamResponse:
    app = request.app
    intake, peers = app[INTAKE], app[PEERS]
    settings = app[SETTINGS]
    # aiohttp refuses a message of max_msg_size bytes already; one of max_frame_bytes is allowed
    ws = web.WebSocketResponse(max_msg_size=settings.max_frame_bytes + 1, heartbeat=settings.heartbeat or None,
                               compress=False)
    await ws.prepare(request)
    transport = request.transport
    peer = peers.add(ws, request.remote or "local", transport.abort if transport is not None else None)
    ingest, receive = intake.ingest, ws.receive
    clock = asyncio.get_running_loop().time
    busy = 0.0  # seconds this socket's frames held the loop since it last let the others in
    try:
        intake.peer_opened(peer)  # before the first frame is read (a greeting, e.g. the tools)
        while True:  # ``async for msg in ws``, without its extra coroutine per frame
            msg = await receive()
            kind = msg.type
            if kind is _TEXT or kind is _BINARY:
                started = clock()
                reply = ingest(msg.data, peer)
                busy += clock() - started  # (not the waits in receive() or a reply's send)
                if reply is not None:
                    await peer.send(reply)
                if busy >= SOCKET_TURN:
                    await asyncio.sleep(0)
                    busy = 0.0
            elif kind in _CLOSED:
                break
            elif kind is WSMsgType.ERROR:
                log.warning("connection %s: %s; closing it (code %s)", peer.name, ws.exception(), ws.close_code)
                app[COUNTERS]["errors"] += 1
    finally:
        peers.remove(peer)
        intake.peer_closed(peer)  # what the connection left open is stored as incomplete
    return ws


async def _close_sockets(app: web.Application) -> None:
    await app[PEERS].close_all()


async def health_route(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEALTH]())


def _page(request: web.Request, default: int = 50) -> tuple[int, int]:
    try:
        limit = int(request.query.get("limit", default))
        offset = int(request.query.get("offset", 0))
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": "limit and offset must be whole numbers"}),
                                 content_type="application/json") from None
    if limit < 1 or not 0 <= offset <= 1 << 62:
        raise web.HTTPBadRequest(text=json.dumps({"error": "limit must be >= 1 and offset between 0 and 2**62"}),
                                 content_type="application/json")
    return min(limit, MAX_PAGE), offset


def _reader_or_503(request: web.Request) -> Reader:
    reader: Reader | None = request.app[READER]  # type: ignore[assignment]
    if reader is None:
        raise web.HTTPServiceUnavailable(text=json.dumps({"error": "storage is disabled"}),
                                         content_type="application/json")
    return reader


async def messages(request: web.Request) -> web.Response:
    limit, offset = _page(request)
    store = _reader_or_503(request)
    session = request.query.get("session") or None
    stored = stored_session_id(session) if session is not None else None  # a long id is stored shortened
    rows = await store.messages(limit=limit, offset=offset, session_id=stored)
    return web.json_response({"messages": rows, "limit": limit, "offset": offset, "session": session})


async def calls(request: web.Request) -> web.Response:
    limit, offset = _page(request)
    rows = await _reader_or_503(request).calls(limit=limit, offset=offset)
    return web.json_response({"calls": rows, "limit": limit, "offset": offset})


async def tools_route(request: web.Request) -> web.Response:
    return web.json_response({"tools": request.app[TOOLS]()})


async def post_event(request: web.Request) -> web.Response:
    body = await request.read()
    reply = request.app[INTAKE].ingest(body, request.app[PEERS].http)
    if reply is not None:
        return web.json_response(reply, status=400)
    return web.json_response({"ok": True}, status=202)


def bind(host: str, port: int, backlog: int = 16) -> list[socket.socket]:
    """Listen on every address of ``host:port`` now, before any other part starts, so a
    second instance fails here having touched nothing. ``port`` 0 picks one free port for all.
    Raises ``OSError`` naming the address (``EADDRINUSE``: another agent runs)."""
    # an ASCII name goes as bytes: a str one goes through the "idna" codec, whose module (and
    # stringprep's tables) would stay loaded for the rest of the run for nothing
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            try:
                sock.bind(addr)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
