"""The memory routes' place in the HTTP API, light: their handlers (:mod:`.routes`) load with
the first request to one of them, and are given ``app[MEMORIES]()``, the agent's
:class:`~.api.Memories` (``None``: storage is off).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .api import Memories

MemoriesFn = Callable[[], "Memories | None"]
MEMORIES: web.AppKey[MemoriesFn] = web.AppKey("memories")
Route = Callable[[web.Request, "Memories | None"], Awaitable[web.Response]]


def add_routes(app: web.Application, memories: MemoriesFn) -> None:
    """Serve the memory routes from ``memories()`` (``None``: storage is off, they answer 503)."""
    app[MEMORIES] = memories
    app.router.add_get("/v1/memories", _lazy("get_memories"))
    app.router.add_post("/v1/memories", _lazy("post_memory"))
    app.router.add_delete("/v1/memories/{id}", _lazy("delete_memory"))


def _lazy(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler that loads :mod:`.routes` and hands the request to its ``name``."""
    async def handle(request: web.Request) -> web.Response:
        from . import routes

        route: Route = getattr(routes, name)
        return await route(request, request.app[MEMORIES]())

    handle.__name__ = handle.__qualname__ = name
    return handle
