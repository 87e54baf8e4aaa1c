"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for memory generation tests.

``ChatServer`` answers ``POST /v1/chat/completions`` (so ``base_url`` is ``server.base_url``,
ending in ``/v1``) from a script of behaviours, one per request, the last one repeated:

* ``("ok", text)``: 200 with a chat-completions body whose answer is ``text`` (``None``: a
  summary naming every message of the request, so a test can see what was summarised);
* ``("slow", seconds)``: waits that long before a normal answer (a client timeout fires first);
* ``("status", code)``: that status with a JSON error body;
* ``("garbage", None)``: 200 with a body that is not JSON;
* ``("shape", None)``: 200 with JSON that is not the chat-completions shape;
* ``("reset", None)``: starts a 200 response, sends part of the body, then drops the TCP
  connection (a reset in the middle of the answer).

Every request is kept in ``requests`` (``{"json", "headers", "behaviour"}``), also the ones
answered with a failure.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


def completion(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def summary_of(body: dict[str, Any]) -> str:
    """The default answer: 'summary of: <the user message's conversation lines>'."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return "summary of: " + user.split("Latest conversation:\n", 1)[-1].split("\n\nWrite the new", 1)[0]


class ChatServer:
    def __init__(self, *behaviours: tuple[str, Any]):
        self.script: list[tuple[str, Any]] = list(behaviours) or [("ok", None)]
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def then(self, *behaviours: tuple[str, Any]) -> None:
        """Replace what the next requests get."""
        self.script = list(behaviours)

    async def start(self) -> ChatServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ChatServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _next(self) -> tuple[str, Any]:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        kind, arg = self._next()
        self.requests.append({"json": body, "headers": dict(request.headers), "behaviour": kind})
        if kind == "slow":
            await asyncio.sleep(arg)
            return web.json_response(completion(summary_of(body)))
        if kind == "status":
            return web.json_response({"error": {"message": "the model is not loaded", "code": arg}}, status=arg)
        if kind == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="application/json")
        if kind == "shape":
            return web.json_response({"object": "list", "data": []})
        if kind == "reset":
            whole = json.dumps(completion(summary_of(body))).encode()
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                           "Content-Length": str(len(whole))})
            await resp.prepare(request)
            await resp.write(whole[: len(whole) // 2])
            assert request.transport is not None
            request.transport.abort()  # drops the connection without finishing the body
            return resp
        assert kind == "ok", kind
        return web.json_response(completion(arg if arg is not None else summary_of(body)))
