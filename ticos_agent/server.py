"""The aiohttp application: ``/realtime`` for the voice agent, ``/health`` and a small read API.

=======================  ==================================================================
route                    what
=======================  ==================================================================
``GET /realtime``        WebSocket; JSON events in text or binary frames, replies out
``GET /health``          JSON status: ok/degraded, storage, actuators, audio, counters
``GET /v1/messages``     stored messages, newest first (``limit``, ``offset``, ``session``)
``GET /v1/memories``     stored memories, newest first (``limit``, ``offset``)
``GET /v1/calls``        stored function calls and their outcomes
``POST /v1/events``      one event, handled exactly as if it came over the socket
=======================  ==================================================================

Frames larger than ``server.max_frame_bytes`` close that socket with 1009; new sockets are
still accepted. Peers that are not on loopback must send ``Authorization: Bearer <token>``
(or ``?token=``) when ``server.token`` is set; the config refuses a non-loopback bind without
one. No CORS headers are sent.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("ticos_agent.server")

AGENT = web.AppKey("agent", object)
MAX_PAGE = 500


def make_app(agent: Agent) -> web.Application:
    cfg = agent.config.server
    app = web.Application(client_max_size=cfg.max_frame_bytes, middlewares=[_auth_middleware])
    app[AGENT] = agent
    app.router.add_get("/realtime", realtime)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/messages", messages)
    app.router.add_get("/v1/memories", memories)
    app.router.add_get("/v1/calls", calls)
    app.router.add_post("/v1/events", post_event)
    app.on_shutdown.append(_close_sockets)
    return app


def _peer_is_loopback(request: web.Request) -> bool:
    peer = request.remote
    if not peer:
        return True  # unix socket
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


@web.middleware
async def _auth_middleware(request: web.Request, handler):
    token = request.app[AGENT].config.server.token
    if token and not _peer_is_loopback(request):
        given = request.headers.get("Authorization", "")
        given = given[7:] if given.startswith("Bearer ") else request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            log.warning("refused %s %s from %s: missing or wrong token", request.method, request.path, request.remote)
            return web.json_response({"error": "unauthorized"}, status=401)
    return await handler(request)


async def realtime(request: web.Request) -> web.StreamResponse:
    agent: Agent = request.app[AGENT]
    ws = web.WebSocketResponse(max_msg_size=agent.config.server.max_frame_bytes, heartbeat=None, compress=False)
    await ws.prepare(request)
    conn = agent.connect(ws, peer=request.remote or "local")
    ingest = agent.ingest
    try:
        async for msg in ws:
            kind = msg.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                reply = ingest(msg.data, conn)
                if reply is not None:
                    await conn.send_now(reply)
            elif kind is WSMsgType.ERROR:
                log.warning("connection %s: %s; closing it (code %s)", conn.name, ws.exception(), ws.close_code)
                agent.counters["errors"] += 1
    finally:
        agent.disconnect(conn)
    return ws


async def _close_sockets(app: web.Application) -> None:
    await app[AGENT].close_connections()


async def health(request: web.Request) -> web.Response:
    return web.json_response(request.app[AGENT].health())


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


def _store_or_503(agent: Agent):
    if agent.store is None:
        raise web.HTTPServiceUnavailable(text=json.dumps({"error": "storage is disabled"}),
                                         content_type="application/json")
    return agent.store


async def messages(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    limit, offset = _page(request)
    store = _store_or_503(agent)
    session = request.query.get("session") or None
    rows = await store.messages(limit=limit, offset=offset, session_id=session)
    return web.json_response({"messages": rows, "limit": limit, "offset": offset, "session": session})


async def memories(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    limit, offset = _page(request)
    rows = await _store_or_503(agent).memories(limit=limit, offset=offset)
    return web.json_response({"memories": rows, "limit": limit, "offset": offset})


async def calls(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    limit, offset = _page(request)
    rows = await _store_or_503(agent).calls(limit=limit, offset=offset)
    return web.json_response({"calls": rows, "limit": limit, "offset": offset})


async def post_event(request: web.Request) -> web.Response:
    agent: Agent = request.app[AGENT]
    body = await request.read()
    reply = agent.ingest(body, agent.http_connection)
    if reply is not None:
        return web.json_response(reply, status=400)
    return web.json_response({"ok": True}, status=202)
