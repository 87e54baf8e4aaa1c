"""When the writer task commits: the commit policy of a :class:`~.store.Store`.

:class:`CommitPolicy` is part of :class:`~.writer.Writer` (and so of ``Store``; like the other
halves it works on the state ``Store.__init__`` sets up, see :mod:`.state`, where a queued
record starts its commit clock: ``StoreState._queued``). The writer commits what has gathered
when it is due (:meth:`CommitPolicy._gather`: the oldest record has waited ``commit_delay``
seconds, or the oldest event-log line ``event_log_delay`` seconds, or a turn ended
(:meth:`CommitPolicy.end_turn`) and ``turn_settle`` seconds passed without a record, or a
``flush()``, the close or a backlog asks for it now); how it commits is :mod:`.writer`'s.

**When it commits** (the card's flash is written per commit, not per row): a conversation
record (a message with words, a call or its outcome, a memory) waits at most
``commit_delay`` seconds (``COMMIT_DELAY``, 0.8 s; less while commits are slow, so that the
wait plus twice the time a commit takes stays under 0.95 s) for its commit, which takes
everything queued by then; an event-log line, and a user's message that has no words yet
(its transcript comes later as an update, on the 0.8 s clock), waits for that commit, or at
most ``event_log_delay`` seconds (``EVENT_LOG_DELAY``, 2 s; ``[storage] event_log_delay``)
when no record comes. A turn's end (the event log's ``response.done``, or an assistant
message) makes the commit come as soon as no record came for ``TURN_SETTLE`` seconds (0.1 s:
the turn's last rows and its calls' outcomes join it); a ``flush()``, the close and a backlog
of ``CHUNK_RECORDS`` records commit at once. Why: each commit rewrites, in the WAL, every page
it touches in full: the last page of ``messages``, of its id index, of ``event_log``, of
``function_calls``, the database header when the file grows. At a
conversational pace rows trickle in (a few per second), so committing every 50 ms (as before)
wrote those pages five to ten times per turn to store a few hundred bytes. A voice turn's
lines start with the user's speech, 1.5 s or more before its reply ends: on the 0.8 s clock
they cost a second commit per turn; on their own 2 s clock they ride with the turn's words
and reply, one commit per turn. What waits on that clock is copied to the pending file
(:mod:`.pending`: one ``pwrite`` into the page cache, never synced) 0.8 s after it arrived and
put back at the next start. So a SIGKILL loses no record that arrived more than 1 s before it
(0.8 s of waiting leaves 0.2 s for the commit or the copy); a power cut, no conversation
record older than 1 s and no event-log line older than about 2 s; a clean stop flushes
everything. No commit "after quiet": a pause in
the speech would only add commits within the same second. Idle, nothing is written. The
rows a turn ends with (its transcript, its message, its calls and their outcomes, its
``response.done``) arrive within far less than the delay and so commit in one transaction,
unless an older row's delay runs out while they arrive.
"""

from __future__ import annotations

import asyncio
import time

from .state import StoreState

#: The longest a record waits for its commit (seconds): within the 1 s a SIGKILL may take.
COMMIT_DELAY = 0.8
#: After a turn's end, commit once no record came for this long (its last rows join it).
TURN_SETTLE = 0.1
#: What a SIGKILL may cost (seconds): no record waits for its commit longer than this minus
#: twice the time recent commits took (see ``CommitPolicy._delay``).
LOSS_BOUND = 1.0


class CommitPolicy(StoreState):
    """When the writer commits what is queued; part of :class:`~.writer.Writer` (and ``Store``)."""

    def end_turn(self) -> None:
        """A turn ended: commit what is queued once no record came for ``turn_settle`` seconds.

        Called by the store itself for the event log's ``response.done`` and for an assistant
        message; an owner may call it for its own turn boundaries."""
        if not self._turn_end:
            self._turn_end = True
            self._nudge.set()

    async def _gather(self) -> None:
        """Wait until what is queued is due for its commit (the commit policy: see above).

        Due: :meth:`_delay` seconds after the oldest queued record was enqueued; or, once a
        turn ended, when no record came for ``_settle`` seconds (the turn's last rows, its
        calls' outcomes, join it); or at once for a ``flush()``, the close, a backlog of
        ``CHUNK_RECORDS``, or a card check.
        """
        seen = -1
        quiet_since = time.monotonic()
        while not (self._kick.is_set() or self._closing or self._put_back_waiting):
            now = time.monotonic()
            count = self._events_in + self._ops_in
            if count != seen:
                seen, quiet_since = count, now
            due = self._due(now)
            if self._turn_end:
                due = min(due, quiet_since + self._settle)
            if now >= due:
                return
            self._nudge.clear()
            try:
                await asyncio.wait_for(self._nudge.wait(), due - now)
            except TimeoutError:
                pass

    def _due(self, now: float) -> float:
        """When the oldest record must be committed: ``_delay()`` after the oldest record, or
        ``_lazy_interval`` after the oldest event-log line (or wordless message), whichever
        comes first; now when nothing is queued (a flush, the close)."""
        due = float("inf")
        if self._first_at is not None:
            due = self._first_at + self._delay()
        if self._lazy_at is not None:
            due = min(due, self._lazy_at + self._lazy_interval)
        return now if due == float("inf") else due

    def _delay(self) -> float:
        """How long the oldest record may wait: ``commit_delay``, shortened while commits are
        slow (a card that takes long to sync), so that its wait and the commit that writes it
        stay within ``LOSS_BOUND`` (a ``commit_delay`` above the bound is taken as given)."""
        if self._interval > LOSS_BOUND:
            return self._interval
        return min(self._interval, max(0.0, LOSS_BOUND - 0.05 - 2 * self._commit_time))
