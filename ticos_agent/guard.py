"""Who may talk to the agent: the checks every request and WebSocket handshake passes.

A web page in a browser on the robot (or on the LAN through DNS rebinding) must not move a
motor or read a transcript. In order, a request is refused when:

1. its ``Host`` names neither an IP address, ``localhost``, ``server.host`` nor one of
   ``server.names`` (421: a rebinding name such as ``evil.example`` resolving to 127.0.0.1);
2. it carries an ``Origin`` that is not in ``server.allowed_origins`` (403). Voice agents and
   scripts send no ``Origin``; browsers always do on WebSocket handshakes and cross-origin
   requests, ``null`` included;
3. ``server.token`` is set and the request lacks it (401), from **every** peer: a reverse
   proxy on the robot is a loopback peer. ``server.trust_loopback = true`` lets loopback
   peers in without the token, on purpose;
4. it posts a body that is not ``application/json`` (415): browsers send ``text/plain`` and
   form bodies cross-origin without a preflight.

Refusals are logged (rate-limited by the log set-up), counted, and answered with a JSON
error; no CORS header is ever sent.

:class:`CappedSite` caps open TCP connections (``server.max_connections``): one over the cap
is answered 503 and closed at once, before any request is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiohttp import web

from .logs import peer_text

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GuardSettings(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def token(self) -> str: ...

    @property
    def trust_loopback(self) -> bool: ...

    @property
    def allowed_origins(self) -> Sequence[str]: ...

    @property
    def names(self) -> Sequence[str]: ...


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without its port or IPv6 brackets, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback_peer(request: web.BaseRequest) -> bool:
    peer = request.remote
    if not peer:
        return True  # a unix socket
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


class Guard:
    """The aiohttp middleware applying the rules above."""

    _same: Callable[[bytes, bytes], bool]  # a constant-time comparison, set when there is a token

    def __init__(self, settings: GuardSettings, counters: Counter[str]):
        self._settings = settings
        self._counters = counters
        names = {"localhost", *(n.lower().rstrip(".") for n in settings.names)}
        if settings.host not in ("0.0.0.0", "::", ""):
            names.add(settings.host.lower())
        self._names = frozenset(names)
        self._origins = frozenset(o.rstrip("/").lower() for o in settings.allowed_origins)
        self._token = settings.token.encode()
        if self._token:  # hmac loads only when there is a token to compare
            from hmac import compare_digest

            self._same = compare_digest

    def _refuse(self, request: web.Request, status: int, code: str, why: str) -> web.Response:
        self._counters["refused_requests"] += 1
        log.warning("refused %s %s from %s: %s", request.method, peer_text(request.path, 80), request.remote, why)
        return web.json_response({"error": {"code": code, "message": why}}, status=status)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is not None:
            name = host_name(host)
            if name not in self._names and not _is_ip(name):
                return self._refuse(request, 421, "bad_host",
                                    f"Host {peer_text(host, 80)} is not this robot (add it to server.names)")
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/").lower() not in self._origins:
            return self._refuse(request, 403, "foreign_origin",
                                f"Origin {peer_text(origin, 80)} is not allowed (server.allowed_origins)")
        if self._token and not (self._settings.trust_loopback and is_loopback_peer(request)):
            given = request.headers.get("Authorization", "")
            given = given[7:] if given.startswith("Bearer ") else request.query.get("token", "")
            if not self._same(given.encode(), self._token):
                return self._refuse(request, 401, "unauthorized", "missing or wrong token")
        if request.method == "POST" and request.content_type != "application/json":
            return self._refuse(request, 415, "not_json",
                                f"body must be application/json, got {peer_text(request.content_type, 80)}")
        return await handler(request)


class _Refused(asyncio.Protocol):
    """A connection over the cap: one 503 and closed, nothing read."""

    BODY = b'{"error": {"code": "too_many_connections", "message": "too many open connections"}}'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(self.BODY), self.BODY))
        transport.close()


class CappedSite(web.SockSite):
    """A ``SockSite`` that refuses connections beyond ``limit`` open ones.

    A connection registers with the server (``server.connections``) only in the loop turn after
    it was accepted, and a busy loop accepts a whole burst in one turn: the accepted ones not
    registered yet are counted here (``_arriving``, until the turn after their registration),
    so a burst does not pass the limit either.
    """

    BACKLOG = 16

    def __init__(self, runner: web.BaseRunner, sock: object, *, limit: int, counters: Counter[str]):
        super().__init__(runner, sock, backlog=self.BACKLOG)  # type: ignore[arg-type]
        self._limit = limit
        self._counters = counters
        self._last_log = 0.0
        self._arriving = 0

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def arrived() -> None:
            self._arriving -= 1

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) + self._arriving >= self._limit:
                self._counters["refused_connections"] += 1
                now = loop.time()
                if now - self._last_log > 10:
                    self._last_log = now
                    log.warning("refusing connections: %d open (server.max_connections); %d refused so far",
                                len(server.connections), self._counters["refused_connections"])
                return _Refused()
            self._arriving += 1
            # the transport made with this protocol registers it in the next loop turn (its
            # connection_made is scheduled after this returns): count it until the turn after
            loop.call_soon(loop.call_soon, arrived)
            return server()

        self._server = await loop.create_server(factory, sock=self._sock, backlog=self._backlog)
