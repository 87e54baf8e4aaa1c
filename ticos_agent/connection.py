"""The voice agent's connections: one :class:`Peer` per ``/realtime`` socket, plus the HTTP intake.

A peer carries what belongs to the connection itself: its name for the log, its socket, and
the realtime session it speaks for (``session.created`` sets it; until then a local id groups
its messages). Per-connection state of the consumers (conversation assembly, turn state) is
kept by each consumer, keyed by the peer, and dropped when the intake says the peer closed.
A peer may outlive its connection (the owner of rows still to be completed): once closed it
lets its socket and transport go, so only its name and session stay.

:class:`Peers` is the set of open sockets and the one way to send to the voice agent: a
reply to one peer, or a broadcast to all. Sending never raises; a closed peer is skipped.
A peer that stops reading cannot hold the agent up: a send that has not gone out after
``SEND_TIMEOUT`` seconds drops that connection (its socket is aborted), and closing all
sockets at stop waits at most ``CLOSE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

from .logs import peer_text

log = logging.getLogger(__name__)

_local_sessions = itertools.count(1)

SEND_TIMEOUT = 5.0  # a peer whose socket takes no more data for this long is dropped
CLOSE_TIMEOUT = 2.0  # closing a socket at stop waits this long for the peer, then aborts it
MAX_SESSION_ID = 128  # characters of a session id kept as is; it goes into every row the session writes


def stored_session_id(sid: str) -> str:
    """The session id as it is stored: as given, or one longer than ``MAX_SESSION_ID`` as its
    first 96 characters and a digest of the whole (what ``/v1/messages?session=`` looks up)."""
    if len(sid) <= MAX_SESSION_ID:
        return sid
    return f"{sid[:96]}\u2026{hashlib.sha256(sid.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"



def other_sessions(one: str | None, two: str | None) -> bool:
    """Whether two sessions are both named by the voice agent and not the same (``None``: not
    named, which is taken as any): an id met in both is two things."""
    return one is not None and two is not None and one != two


V = TypeVar("V")


def note_per_session(table: OrderedDict[str, dict[str | None, V]], key: str, session: str | None, value: V, *,
                     per_key: int, keys: int) -> None:
    """``table[key][session] = value``, latest last in both, keeping the latest ``per_key``
    sessions of a key and the latest ``keys`` keys (what turns and calls remember of an id that
    a restarted voice agent may use again in each session)."""
    sessions = table.setdefault(key, {})
    sessions.pop(session, None)
    sessions[session] = value
    if len(sessions) > per_key:
        del sessions[next(iter(sessions))]
    table.move_to_end(key)
    if len(table) > keys:
        table.popitem(last=False)

class Socket(Protocol):
    """What a peer needs of its WebSocket (``aiohttp.web.WebSocketResponse`` has it)."""

    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class _Gone:
    """The socket of a connection that is over (:meth:`Peer.let_go`): closed, takes nothing."""

    closed = True

    async def send_str(self, data: str) -> None:
        raise ConnectionResetError("the connection is closed")

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        return False


_GONE = _Gone()


class Peer:
    """One voice-agent connection (``ws is None`` for the HTTP intake)."""

    _ids = itertools.count(1)

    def __init__(self, ws: Socket | None, remote: str, abort: Callable[[], None] | None = None):
        self.id = next(self._ids)
        self._abort = abort  # drops the TCP connection at once (the transport's abort)
        self.name = f"{'ws' if ws is not None else 'http'}#{self.id}({remote})"
        self.ws = ws
        self.session_id: str | None = None
        self.local_session = f"local-{int(time.time())}-{next(_local_sessions)}"

    @property
    def session(self) -> str:
        """The realtime session's id, or a local one until the voice agent names it."""
        return self.session_id or self.local_session

    def name_session(self, sid: str) -> None:
        """Take the voice agent's session id. One longer than ``MAX_SESSION_ID`` is kept as its
        head and a digest of the whole (still one id per session): stored with every message,
        call and logged event, a hostile megabyte id would otherwise be written each time."""
        kept = stored_session_id(sid)
        if len(sid) > MAX_SESSION_ID:
            log.warning("%s: session id of %d characters kept as its first 96 and a digest",
                        self.name, len(sid))
        self.session_id = kept

    def same_session(self, other: Peer) -> bool:
        """Whether ``other`` speaks for the session this peer does, as the voice agent named it
        (a reconnect, or an old socket still half-open)."""
        return self.session_id is not None and other.session_id == self.session_id

    def other_session(self, other: Peer) -> bool:
        """Whether ``other`` speaks for another session than this peer, both named by the voice
        agent (item and response ids are a conversation's: the same id there is another one)."""
        return other_sessions(self.session_id, other.session_id)

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def send(self, event: dict[str, Any]) -> bool:
        ws = self.ws
        if ws is None or ws.closed:
            return False
        # Shielded: a send given up (its task cancelled, or the timeout) must not cancel the
        # drain future aiohttp's writers to this socket share (see _cancelled_here).
        sending = asyncio.ensure_future(ws.send_str(json.dumps(event)))
        try:
            await asyncio.wait_for(asyncio.shield(sending), SEND_TIMEOUT)
            return True
        except asyncio.CancelledError:
            sending.add_done_callback(_retrieved)  # it ends with the drain, or the socket
            if _cancelled_here():
                raise
            log.warning("%s: a write to it was cancelled while its socket was full; its flow control is "
                        "gone, dropping the connection", self.name)
            self.abort()
            return False
        except TimeoutError:
            sending.add_done_callback(_retrieved)
            log.warning("%s takes no data for %g s (it does not read); dropping the connection", self.name,
                        SEND_TIMEOUT)
            self.abort()
            return False
        except (ConnectionError, RuntimeError) as exc:
            log.warning("could not send %s to %s: %s", peer_text(event.get("type")), self.name, exc)
            return False

    def let_go(self) -> None:
        """The connection is over: drop its socket and transport. Consumers may keep the peer
        for long (the owner of rows a late transcript completes, up to thousands of them over
        many sessions): the socket's buffers, request and transport need not stay with it."""
        if self.ws is not None:
            self.ws = _GONE
        self._abort = None

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake."""
        if self._abort is not None:
            self._abort()

    async def close(self, message: bytes) -> None:
        """Close with 1001 (going away); a peer that does not take the close frame is aborted."""
        if self.ws is None:
            return
        try:
            await asyncio.wait_for(self.ws.close(code=1001, message=message), CLOSE_TIMEOUT)
        except asyncio.CancelledError:
            if _cancelled_here():
                raise
            self.abort()
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def __repr__(self) -> str:
        return f"Peer({self.name})"


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _cancelled_here() -> bool:
    """Whether the running task itself is being cancelled. aiohttp's writers to one socket wait
    on one shared drain future while its buffer is full: cancelling any of them (a close given
    up, a write of aiohttp's own) cancels that future for good (it is replaced only when the
    buffer drains), and every other writer gets a ``CancelledError`` that is not theirs."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


#: How consumers talk back: ``send(event, peer)`` to one peer, ``send(event, None)`` to all.
Send = Callable[[dict[str, Any], "Peer | None"], Coroutine[Any, Any, int]]
#: How consumers start work that must not hold up the intake: the agent's task set, which keeps
#: each task alive and logs what it raises.
Spawn = Callable[[Coroutine[Any, Any, Any]], object]


class Peers:
    """The open sockets, and sending to them."""

    def __init__(self, counters: Counter[str]):
        self._open: set[Peer] = set()
        self._counters = counters
        #: the one peer standing for ``POST /v1/events`` (its events share one conversation)
        self.http = Peer(None, "http")

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._open))

    def add(self, ws: Socket, remote: str, abort: Callable[[], None] | None = None) -> Peer:
        peer = Peer(ws, remote, abort)
        self._open.add(peer)
        self._counters["connections_total"] += 1
        log.info("connection %s opened", peer.name)
        return peer

    def remove(self, peer: Peer) -> None:
        self._open.discard(peer)
        peer.let_go()
        log.info("connection %s closed", peer.name)

    async def send(self, event: dict[str, Any], peer: Peer | None = None) -> int:
        """Send to ``peer``, or to every open peer when it is ``None``; returns how many got it.
        A reply for a peer that has gone is not sent elsewhere."""
        if peer is not None:
            if not peer.open:
                log.info("not sending %s: connection %s is closed", peer_text(event.get("type")), peer.name)
                return 0
            return int(await peer.send(event))
        sent = 0
        for target in list(self._open):
            sent += await target.send(event)
        return sent

    async def close_all(self, message: bytes = b"agent shutting down") -> None:
        await asyncio.gather(*(peer.close(message) for peer in list(self._open)))
