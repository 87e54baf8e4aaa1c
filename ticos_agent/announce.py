"""``[tools] announce = true``: give each voice agent that connects every tool the agent knows.

A ``session.update`` carrying only the tools (:func:`ticos_agent.tools.session_update`) goes to
a voice agent's socket when it opens, and again after each ``session.created`` on it (a voice
agent may open a new upstream session on the same socket). A tool list replaces the session's,
so it holds every tool: the robot's and the integrator's registered with a schema; an empty
list is never sent (it would take the voice agent's own tools away).

Its shape follows ``[tools] api``: ``beta`` sends ``{"session": {"tools": [...]}}``, ``ga``
adds ``"type": "realtime"`` to the session (the GA API requires it, the beta one does not know
it), and ``auto`` uses what the last ``session.created`` showed (a GA session has
``session.type``), beta until one arrived. A ``transcription`` session gets no tools.

Thread and timing: the handlers run on the loop in the intake's path; they only spawn the send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from .connection import Peer, Send, Spawn
from .events import Event
from .intake import Handler
from .replies import reply_id
from .tools import Tool, session_update

log = logging.getLogger(__name__)


class ToolAnnouncer:
    """Sends the tools (``tools()``) to each socket peer; ``api`` is ``auto``, ``beta`` or ``ga``."""

    def __init__(self, tools: Callable[[], list[Tool]], *, send: Send, spawn: Spawn,
                 api: str = "auto"):
        self._tools = tools
        self._send = send
        self._spawn = spawn
        self._api = api
        self._seen = "beta"  # what the last session.created showed (for api = "auto")

    def routes(self) -> Mapping[str, Handler]:
        return {"session.created": self._session_created}

    def peer_opened(self, peer: Peer) -> None:
        self._announce(peer, "connected")

    def _session_created(self, event: Event, peer: Peer) -> None:
        kind = event.data["session"].get("type")
        if kind == "transcription":
            return
        if self._api == "auto":
            self._seen = "ga" if kind == "realtime" else "beta"
        self._announce(peer, "session.created")

    def _announce(self, peer: Peer, why: str) -> None:
        if peer.ws is None:  # POST /v1/events: nobody to answer
            return
        tools = self._tools()
        if not tools:
            log.info("tools: none to announce to %s", peer.name)
            return
        api = self._seen if self._api == "auto" else self._api
        event = session_update(tools, api, event_id=reply_id())
        log.info("tools: %s %s: session.update with %d tools (%s: %s)", why, peer.name, len(tools), api,
                 ", ".join(t["name"] for t in tools))
        self._spawn(self._send(event, peer))
