"""The memory routes' place in the HTTP API, light: their handlers (:mod:`.routes`) load with
the first request to one of them, and are given ``app[MEMORIES]()``, the agent's
:class:`~.api.Memories` (``None``: storage is off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .api import Memories

MemoriesFn = Callable[[], "Memories | None"]
MEMORIES: web.AppKey[MemoriesFn] = web.AppKey("memories")


def add_routes(app: web.Application, memories: MemoriesFn) -> None:
    """Serve the memory routes from ``memories()`` (``None``: storage is off, they answer 503)."""
    app[MEMORIES] = memories
    app.router.add_get("/v1/memories", get_memories)
    app.router.add_post("/v1/memories", post_memory)
    app.router.add_delete("/v1/memories/{id}", delete_memory)


async def get_memories(request: web.Request) -> web.Response:
    from . import routes

    return await routes.get_memories(request, request.app[MEMORIES]())


async def post_memory(request: web.Request) -> web.Response:
    from . import routes

    return await routes.post_memory(request, request.app[MEMORIES]())


async def delete_memory(request: web.Request) -> web.Response:
    from . import routes

    return await routes.delete_memory(request, request.app[MEMORIES]())
