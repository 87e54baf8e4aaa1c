"""Turn state: which response each connection is hearing, and the one place that stops it.

Barge-in and response cancellation are decided here and nowhere else:

* ``response.created`` makes a response the connection's active one; ``response.done`` ends it.
  A response created before the last one is done (an out-of-band response) becomes the active
  one, and the earlier one stays open until its own ``response.done``: a barge-in stops both;
  an out-of-band response (``conversation_id: null``) declared without audio is never the
  active one: the robot does not say it, and turn detection does not cancel it when the user
  talks (it interrupts responses of the conversation only), so no barge-in stops it and its
  calls run (its ``response.done`` cancelled or failed still does). Such a **side task** is
  told here once, per session, for every consumer (:meth:`Turns.side_task`: the conversation,
  the robot's state and the memory rounds ask), from ``response.created`` or, when that was
  missed, from ``response.done`` (this consumer comes before those that ask); an out-of-band
  response the robot speaks is stopped like any answer, but its item gets no truncate (it is in
  no conversation);
* ``input_audio_buffer.speech_started`` while a response is active or audio is still playing
  is a **barge-in**: the speaker falls silent at once (everything queued, and the rest of the
  interrupted response's audio when it comes), the actuators drop what that response queued
  and rest, and its later function calls are dropped instead of run;
* ``response.done`` with status ``cancelled`` or ``failed`` stops that response the same way
  (its audio and commands only; other responses keep playing).

Interrupted responses are remembered agent-wide (bounded), with the session they were
interrupted in: response ids belong to the conversation, not to the socket, so a call of an
interrupted response that arrives on a new connection is dropped too; but a voice agent
restarted (another session, named by ``session.created``) may number its responses anew, and
its ``resp_1`` is not the earlier session's: an interruption applies unless both its session
and the asking peer's are named and differ (:meth:`Peer.other_session`). A response whose
socket closed before its ``response.done`` is still the robot's (the voice agent may go on
with it on a new socket): until that ``response.done`` comes, on any socket of its session, a
barge-in on any socket stops it too; so does a barge-in on another socket of the same session
while the old one is not closed yet (half-open).
One barge-in counts as one interruption, however many responses it stops; one that finds
its response stopped already (and nothing playing) stops nothing and is not counted. With
``send_truncate`` the voice agent is told how much of the item was heard
(``conversation.item.truncate``).

State is bounded by count, however long the session and however many sessions (each bound's
oldest entry is forgotten first):

* interruptions: the latest ``MAX_INTERRUPTED`` response ids, each in at most
  ``MAX_SESSIONS_PER_RESPONSE`` sessions (a voice agent restarted over and over, numbering
  its ``resp_1`` anew each time). A call of an interrupted response comes within that
  response, long before 256 more responses are stopped; one of a forgotten one would run;
* a connection's responses not done yet: ``MAX_OPEN`` (a voice agent that never sends some
  ``response.done`` has its oldest forgotten: a barge-in no longer stops that one), all
  dropped when it closes, kept as orphans (``MAX_ORPHANS``) until their ``response.done`` or
  the next ``speech_started`` (any: it stops them or finds them stopped, and forgets them);
* out-of-band responses: the latest ``MAX_ASIDE`` (a side task forgotten that way would be
  taken as an answer: stored, shown).

Collaborators are narrow: an :class:`AudioOut` (the player, or ``None``), a
:class:`MotionStop` (the actuators, or ``None``), a ``send`` and ``spawn``. Runs on the loop
thread; every method returns at once.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from .connection import Peer, Send, Spawn, note_per_session, other_sessions
from .events import Event, out_of_band, response_id_of, side_task
from .intake import Handler
from .logs import peer_text
from .replies import truncate

log = logging.getLogger(__name__)

MAX_INTERRUPTED = 256  # response ids whose interruption is remembered; oldest forgotten
MAX_SESSIONS_PER_RESPONSE = 8  # sessions one response id is remembered interrupted in; oldest forgotten
MAX_ORPHANS = 16  # responses whose socket closed before their response.done
MAX_OPEN = 8  # responses of one connection not done yet (out-of-band ones overlap); oldest forgotten
MAX_ASIDE = 64  # out-of-band responses remembered as such; oldest forgotten (then taken as answers)


class AudioOut(Protocol):
    """What turn state needs of the audio player."""

    @property
    def playing(self) -> bool: ...

    @property
    def current_item_id(self) -> str | None: ...

    @property
    def current_response_id(self) -> str | None: ...

    def played_ms(self, item_id: str) -> int: ...

    def flush(self, response_id: str | None = None, *, also: str | None = None) -> None: ...


class MotionStop(Protocol):
    """What turn state needs of the actuators: drop a response's commands (``None``: all)."""

    def interrupt(self, response_id: str | None = None) -> int: ...


#: A response as turn state tells it apart: its id and the session it belongs to (``None``: the
#: voice agent had not named its session).
Response = tuple[str, "str | None"]


async def _sent(send: Send, event: dict[str, Any], peer: Peer) -> None:
    await send(event, peer)


class Turns:
    def __init__(self, *, audio: AudioOut | None, actuators: MotionStop | None, send: Send, spawn: Spawn,
                 counters: Counter[str], send_truncate: bool = False):
        self._audio = audio
        self._actuators = actuators
        self._send = send
        self._spawn = spawn
        self._counters = counters
        self._send_truncate = send_truncate
        self._active: dict[Peer, list[str]] = {}  # peer -> its responses not done yet, the active one last
        # response id -> session -> why (bounded by response id)
        self._interrupted: OrderedDict[str, dict[str | None, str]] = OrderedDict()
        self._orphans: OrderedDict[Response, None] = OrderedDict()  # active when their socket closed (bounded)
        self._audio_response: Response | None = None  # the response whose audio arrived last
        # out-of-band responses (bounded, oldest forgotten): True for a silent side task
        self._aside: OrderedDict[str, dict[str | None, bool]] = OrderedDict()  # response id -> session -> silent

    def routes(self) -> Mapping[str, Handler]:
        routes: dict[str, Handler] = {
            "response.created": self._response_created,
            "response.done": self._response_done,
            "input_audio_buffer.speech_started": self._speech_started,
        }
        if self._audio is not None:  # which response is speaking matters only when one can be heard
            routes["response.audio.delta"] = self._audio_delta
        return routes

    # --- what the rest of the agent asks ----------------------------------------------------

    def side_task(self, response_id: str | None, session: str | None) -> bool:
        """Whether ``response_id`` of ``session`` was created as a silent side task (out of band,
        no audio: :func:`ticos_agent.events.side_task`): not the conversation, nothing the robot
        says or shows. The one answer for every consumer (conversation, robot state, memory)."""
        return self.aside(response_id, session) is True

    def aside(self, response_id: str | None, session: str | None) -> bool | None:
        """Whether ``response_id`` of ``session`` was created out of band: ``None`` when it was
        not (or is forgotten), else whether it is a silent side task. Sessions as for
        :meth:`interrupted`: one not named matches any (a voice agent that goes on over a new
        socket without a new ``session.created``)."""
        sessions = self._aside.get(response_id) if self._aside and response_id is not None else None
        if not sessions:
            return None
        if session is None:
            return next(reversed(sessions.values()))
        return sessions.get(session, sessions.get(None))

    def interrupted(self, response_id: str | None, session: str | None = None) -> str | None:
        """Why ``response_id`` was stopped (``"barge-in"``, ``"response cancelled"`` ...), or None.

        ``session`` is the asking peer's session as the voice agent named it
        (``Peer.session_id``): an interruption in another named session is not this response's
        (a restarted voice agent numbering anew). ``None`` (not named, or not known) takes an
        interruption in any session."""
        whys = self._interrupted.get(response_id) if response_id is not None else None
        if not whys:
            return None
        if session is None:
            return next(iter(whys.values()))
        return whys.get(session) or whys.get(None)

    def active_response(self, peer: Peer) -> str | None:
        open_ = self._active.get(peer)
        return open_[-1] if open_ else None

    def peer_closed(self, peer: Peer) -> None:
        for rid in self._active.pop(peer, ()):  # not done: the voice agent may go on with it on a new socket
            self._orphans[(rid, peer.session_id)] = None
            if len(self._orphans) > MAX_ORPHANS:
                self._orphans.popitem(last=False)

    # --- events ---------------------------------------------------------------------------

    def _response_created(self, event: Event, peer: Peer) -> None:
        response = event.data["response"]
        rid = response["id"]  # a string: events.parse checked it
        session = peer.session_id
        if out_of_band(response):
            silent = side_task(response)
            note_per_session(self._aside, rid, session, silent, per_key=MAX_SESSIONS_PER_RESPONSE, keys=MAX_ASIDE)
            if silent:
                return  # a side task the server goes on with when the user talks: nothing to stop
        elif self._aside and (sessions := self._aside.get(rid)):  # the id used again for an answer
            for s in [s for s in sessions if not other_sessions(session, s)]:
                del sessions[s]
        open_ = self._active.setdefault(peer, [])
        if rid in open_:
            open_.remove(rid)
        open_.append(rid)
        if len(open_) > MAX_OPEN:  # a peer that never sends response.done
            del open_[0]

    def _audio_delta(self, event: Event, peer: Peer) -> None:
        rid = response_id_of(event)
        if rid is not None:
            self._audio_response = (rid, peer.session_id)

    def _response_done(self, event: Event, peer: Peer) -> None:
        response = event.data["response"]
        rid = response["id"]
        if out_of_band(response) and self.aside(rid, peer.session_id) is None:  # its response.created was missed
            note_per_session(self._aside, rid, peer.session_id, side_task(response),
                             per_key=MAX_SESSIONS_PER_RESPONSE, keys=MAX_ASIDE)
        # on whichever socket it began, of this session (another session's resp_1 is another response)
        for p in [p for p, open_ in self._active.items() if rid in open_ and not peer.other_session(p)]:
            open_ = self._active[p]
            open_.remove(rid)
            if not open_:
                del self._active[p]
        for orphan in [o for o in self._orphans if o[0] == rid and not other_sessions(peer.session_id, o[1])]:
            del self._orphans[orphan]
        status = response.get("status")
        session = peer.session_id
        if status in ("cancelled", "failed") and self.interrupted(rid, session) is None:  # not again after a barge-in
            self.interrupt(rid, reason=f"response {status}", session=session)

    def _speech_started(self, event: Event, peer: Peer) -> None:
        mine = self._active.get(peer, [])
        target: Response | None = (mine[-1], peer.session_id) if mine else None
        playing = self._audio is not None and self._audio.playing
        if target is None and playing:
            target = self._audio_response
        if target is not None and self.interrupted(*target) is not None and not playing:
            target = None  # stopped already (the user paused and spoke again): nothing to stop now
        stops: list[Response | None] = [o for o in self._orphans if o != target]  # cut off with an old socket
        self._orphans.clear()
        # this socket's earlier responses not done yet, and those of an old socket of the same
        # session not closed yet (half-open)
        same = [p for p in self._active if p is peer or peer.same_session(p)]
        stops += [(r, p.session_id) for p in same for r in self._active[p]
                  if (r, p.session_id) != target and (r, p.session_id) not in stops
                  and self.interrupted(r, p.session_id) is None]
        first: list[Response | None] = [target] if target is not None or playing else []
        if not first and not stops:
            return
        self._counters["interruptions"] += 1  # one barge-in, however many responses it stops
        for n, stopped in enumerate(first + stops):  # the truncate, if any, is told once: for the first
            rid, session = stopped if stopped is not None else (None, peer.session_id)
            self._stop(rid, peer if n == 0 else None, reason="barge-in", session=session)

    # --- the one place that stops a response -----------------------------------------------

    def interrupt(self, response_id: str | None, *, reason: str, session: str | None) -> None:
        """Stop the robot talking and moving for ``response_id`` of ``session``; its later calls
        are dropped."""
        self._counters["interruptions"] += 1
        self._stop(response_id, None, reason=reason, session=session)

    def _stop(self, response_id: str | None, peer: Peer | None, *, reason: str, session: str | None) -> None:
        if response_id is not None:
            note_per_session(self._interrupted, response_id, session, reason, per_key=MAX_SESSIONS_PER_RESPONSE,
                             keys=MAX_INTERRUPTED)
        audio = self._audio
        item_id: str | None = None
        played: int | None = None
        if audio is not None:
            item_id = audio.current_item_id
            played = audio.played_ms(item_id) if item_id else None
            if reason == "barge-in":  # everything playing stops, and the response's later audio too
                audio.flush(None, also=response_id)
            else:
                audio.flush(response_id)
        dropped = self._actuators.interrupt(response_id) if self._actuators is not None else 0
        if audio is None:
            heard = "(audio is off)"
        elif played:
            heard = f"after {played / 1000:.1f} s of its audio"
        else:
            heard = "before any of its audio played"
        log.info("%s: stopped response %s %s; %s", reason, peer_text(response_id or "(unknown)"), heard,
                 f"{dropped} queued command(s) dropped" if dropped else "no command was queued")
        # an out-of-band item (of the response playing, which may not be the one stopped) is in no
        # conversation the server could truncate
        if self._send_truncate and peer is not None and item_id and played is not None and audio is not None and \
                self.aside(audio.current_response_id, session) is None:
            self._spawn(_sent(self._send, truncate(item_id, int(played)), peer))
