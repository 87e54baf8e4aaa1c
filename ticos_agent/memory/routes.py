"""The memory routes of the HTTP API.

==============================  ====================================================================
route                           what
==============================  ====================================================================
``GET /v1/memories``            the newest memories (``limit``, ``offset``); with ``q``: a search,
                                ``{"query", "limit", "hits": [Hit, ...]}``, memories only unless
                                ``messages=true``
``POST /v1/memories``           store one: a JSON object ``{"content", "kind", "subject", "key",
                                "value", "confidence", "importance", "title", "source",
                                "user_id"}`` (only ``content`` required); 201 with the memory
``DELETE /v1/memories/{id}``    delete one: 200 ``{"forgotten": 1, "id": id}``, 404 when absent
==============================  ====================================================================

Every request passes :mod:`ticos_agent.guard` first, as on every route: a foreign ``Origin``
or ``Host`` is refused, a set ``server.token`` is required (from loopback peers too, unless
``server.trust_loopback``), and a POST body must be ``application/json``. A body is at most
:data:`MAX_BODY` bytes (413). Bad JSON or a bad field is a 400 with
``{"error": {"code", "message", "field"}}``; storage that is off or failing, a 503.

Thread and timing: handlers run on the loop and await the store. This module loads with the
first request to a memory route (:mod:`.http` registers them).
"""

from __future__ import annotations

import json
import logging
from typing import Any, NoReturn

from aiohttp import web

from ..errors import BadMemory, StorageError
from .api import MAX_LIMIT, Memories

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_PAGE = 500


def _error(status: type[web.HTTPException], code: str, message: str, field: str | None = None) -> NoReturn:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    raise status(text=json.dumps({"error": body}), content_type="application/json")


def _memories(memories: Memories | None) -> Memories:
    if memories is None:
        _error(web.HTTPServiceUnavailable, "storage_disabled", "storage is disabled")
    return memories


def _whole(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        _error(web.HTTPBadRequest, "bad_query", f"{name} must be a whole number, got {raw[:40]!r}", name)
    if not lo <= value <= hi:
        _error(web.HTTPBadRequest, "bad_query", f"{name} must be from {lo} to {hi}, got {value}", name)
    return value


async def _storage(coro: Any) -> Any:
    try:
        return await coro
    except BadMemory as exc:
        _error(web.HTTPBadRequest, "bad_field", str(exc), exc.field)
    except StorageError as exc:
        log.warning("memory route: storage failed: %s", exc)
        _error(web.HTTPServiceUnavailable, "storage_error", f"storage: {exc}")


async def get_memories(request: web.Request, given: Memories | None) -> web.Response:
    memories = _memories(given)
    query = request.query.get("q")
    if query is None:
        limit = min(_whole(request, "limit", 50, 1, 1 << 31), MAX_PAGE)
        offset = _whole(request, "offset", 0, 0, 1 << 62)
        rows = await _storage(memories.list(limit=limit, offset=offset))
        return web.json_response({"memories": rows, "limit": limit, "offset": offset})
    limit = _whole(request, "limit", 5, 1, MAX_LIMIT)
    with_messages = request.query.get("messages", "false").lower() in ("1", "true", "yes")
    hits = await _storage(memories.recall(query, limit, messages=with_messages))
    return web.json_response({"query": query, "limit": limit, "hits": [h.as_dict() for h in hits]})


def _too_large(size: int) -> NoReturn:
    text = json.dumps({"error": {"code": "too_large", "message": f"body is larger than {MAX_BODY} bytes"}})
    raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=size, text=text,
                                        content_type="application/json")


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        _too_large(request.content_length)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            _too_large(size)
    return b"".join(chunks)


async def post_memory(request: web.Request, given: Memories | None) -> web.Response:
    memories = _memories(given)
    body = await _body(request)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        _error(web.HTTPBadRequest, "bad_json", f"body is not valid JSON: {exc}")
    if not isinstance(data, dict):
        _error(web.HTTPBadRequest, "bad_json", "body must be a JSON object such as {\"content\": \"...\"}")
    memory = await _storage(memories.store(data, via="http"))
    return web.json_response(memory.as_dict(), status=201)


async def delete_memory(request: web.Request, given: Memories | None) -> web.Response:
    memories = _memories(given)
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²".isdigit() is true, int("²") fails
        _error(web.HTTPBadRequest, "bad_id", f"a memory id is a whole number, got {raw[:40]!r}", "id")
    count = await _storage(memories.forget(ids=[int(raw)], via="http"))
    if not count:
        _error(web.HTTPNotFound, "not_found", f"no memory {raw}")
    return web.json_response({"forgotten": count, "id": int(raw)})
