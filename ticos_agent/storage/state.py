"""The state a :class:`~.store.Store` shares between its halves, and its ``on_state`` callback.

``Store`` is :class:`~.writer.Writer` (the writer task; when it commits, its
:class:`~.policy.CommitPolicy`) plus :class:`~.card.CardKeeper` (the TF card);
``Store.__init__`` sets up the attributes :class:`StoreState` declares, and both halves work
on them (as do :class:`~.memory_methods.Memories` and :class:`~.reads.Reads`, the reads and
``health()``). :class:`CardTarget` (an open card database) is here too, so that the
halves share its type without importing each other.

``on_state(state, reason)`` is called on the event loop (``call_soon_threadsafe``) whenever
the storage state ``health()`` reports changes between ``"ok"`` and ``"degraded"``, with the
reason (``None`` when ok); a callback that raises is logged and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiosqlite

from ..errors import StoreClosed
from .location import Location
from .pending import MAX_SPILL, SPILL_AFTER, SQL_RESTORE_MESSAGE, newest_id
from .writes import SQL_ADD_MESSAGE, EventRow, Op, Params

if TYPE_CHECKING:
    from .merge import Merger
    from .pending import PendingFile
    from .spans import SpanCloser

log = logging.getLogger(__name__)

#: ``on_state(state, reason)``: the storage state changed (``"ok"``/``"degraded"``, and why).
StateCallback = Callable[[str, "str | None"], object]
#: While writes are failing, at most this many event-log lines wait (later ones are dropped).
MAX_PENDING_EVENTS = 500_000


@dataclass
class CardTarget:
    """An open card database: its connection, location, identity and message-id seed."""

    db: aiosqlite.Connection
    location: Location
    ident: tuple[int, int]
    seed: int
    mount: tuple[str, int, str] | None  # (mount point, device, source) when it was opened


class Watch(Protocol):
    """What the store uses of :class:`~.card.CardWatch`."""

    strict: bool

    def gone(self, path: Path, ident: tuple[int, int], mount: tuple[str, int, str] | None) -> str | None: ...

    async def open(self, root: Path | None = None) -> CardTarget | str: ...


class StoreState:
    """The state ``Store.__init__`` sets up (declared for the halves and the type checker)."""

    _db: aiosqlite.Connection
    location: Location
    _loop: asyncio.AbstractEventLoop
    _last_id: int
    _interval: float
    _settle: float
    _watch: Watch | None
    _card_root: Path | None
    _fallback_path: Path | None
    _card_ident: tuple[int, int] | None
    _card_mount: tuple[str, int, str] | None
    _target: CardTarget | None
    _merger: Merger | None
    _merge_chunk: int
    _probe_every: float
    _probe_delay: float
    _next_card_check: float
    _probe_task: asyncio.Task[None] | None
    _probing: bool
    _probes: int
    _losses: int
    _returns: int
    _merged: int
    _returned_at: float
    _card_problem: str | None
    _fallback_counts: dict[str, int]
    _counted_at: float
    _events: list[EventRow]
    _ops: list[Op]
    _events_in: int
    _events_out: int
    _ops_in: int
    _ops_out: int
    _first_at: float | None
    _lazy_at: float | None
    _unspilled_at: float | None
    _pending: PendingFile
    _restoring: tuple[list[EventRow], list[Params]]
    _batch: tuple[list[EventRow], list[Op]] | None  # the records being committed
    _pending_overflow_said: bool
    _lazy_interval: float
    _turn_end: bool
    _waiters: list[tuple[int, int, asyncio.Future[None]]]
    _wake: asyncio.Event
    _kick: asyncio.Event
    _nudge: asyncio.Event
    _inflight: int
    _written: int
    _commits: int
    _commit_time: float
    _write_errors: int
    _skipped: int
    _dropped_events: int
    _dropping: bool
    _failure: str | None
    _id_remap: dict[str, str]
    _recent: OrderedDict[str, list[object]]
    _recent_chars: int
    _unknown_updates_logged: int
    _retention: float | None
    _prune_every: float
    _next_prune: float
    _prune_more: bool
    _events_pruned: int
    _spans: SpanCloser
    _closing: bool
    _on_state: StateCallback | None
    _reported: tuple[str, str | None]

    def _closed_error(self) -> StoreClosed:
        return StoreClosed(f"store {self.location.path} is closed")

    def _queued(self, lazy: bool) -> None:
        """Start the commit clock of a record (``lazy``: the event log's, see :mod:`.policy`)."""
        if lazy:
            if self._unspilled_at is None:
                self._unspilled_at = time.monotonic()
                self._loop.call_later(SPILL_AFTER, self._spill)
            if self._lazy_at is None:
                self._lazy_at = self._unspilled_at
                self._wake.set()
        elif self._first_at is None:
            self._first_at = time.monotonic()
            self._wake.set()
            if self._lazy_at is not None:
                self._nudge.set()  # the writer waits for the lines' later due time

    def _spill(self) -> None:
        """A loop callback, ``SPILL_AFTER`` after a record started waiting on the event log's
        clock: put what is not committed in the pending file, unless it was committed (or put
        there) meanwhile. A timer, not the writer task: a commit that takes long (a card, a
        lock held by another process) must not hold it back."""
        at = self._unspilled_at
        if at is not None and time.monotonic() >= at + SPILL_AFTER - 0.005:
            self._write_pending()

    def _write_pending(self) -> None:
        self._unspilled_at = None
        left = self._pending.take_over()
        if left is not None and (left[0] or left[1]):
            self._put_back(*left)
        events, ops = self._events, self._ops
        if self._batch is not None:  # being committed: not yet on disk
            events, ops = self._batch[0] + events, self._batch[1] + ops
        back_events, back_messages = self._restoring
        waiting = len(events) + len(ops) + len(back_events) + len(back_messages)
        if waiting <= MAX_SPILL:
            self._pending.write(back_events + events, back_messages + [
                p for sql, p in ops if sql is SQL_ADD_MESSAGE or sql is SQL_RESTORE_MESSAGE])
        elif not self._pending_overflow_said:
            self._pending_overflow_said = True
            log.warning("storage: %d records wait for their commit, more than %s keeps (%d); a SIGKILL now "
                        "loses those on the event log's clock", waiting, self._pending.path, MAX_SPILL)

    def _put_back(self, events: list[EventRow], messages: list[Params]) -> None:
        """Records the pending file held when this store opened or took it over: the writer
        queues, first, those the database lacks; no new message id may take theirs. They count
        as enqueued now (a ``flush()`` waits for them; those the database has count as done)."""
        self._restoring = (self._restoring[0] + events, self._restoring[1] + messages)
        self._events_in += len(events)
        self._ops_in += len(messages)
        self._last_id = max(self._last_id, newest_id(messages))
        self._wake.set()
        self._nudge.set()  # a writer waiting for a commit's due time queues them first

    @property
    def _put_back_waiting(self) -> bool:
        """Whether records put back from the pending file (:meth:`_put_back`) wait for the
        writer to queue them (``Writer._restore_pending``)."""
        return bool(self._restoring[0] or self._restoring[1])

    def _commit_now(self) -> None:
        """Make the writer commit what is queued without waiting (a flush, the close, a card check)."""
        self._wake.set()
        self._kick.set()
        self._nudge.set()

    # ------------------------------------------------------------------ the state callback

    @property
    def on_state(self) -> StateCallback | None:
        """``on_state(state, reason)``, called on the event loop when the state changes.

        Setting it while the store is degraded calls it once with the current state."""
        return self._on_state

    @on_state.setter
    def on_state(self, callback: StateCallback | None) -> None:
        self._on_state = callback
        self._reported = ("ok", None)
        self._check_state()

    def _state_now(self) -> tuple[str, str | None]:
        """``health()``'s state and reason, without its card check."""
        reason = self._failure
        if reason is None and self._dropping:
            reason = (f"event log backlog full ({MAX_PENDING_EVENTS} waiting): "
                      f"{self._dropped_events} events dropped")
        if reason is None and self._target is not None:
            reason = (f"merging {sum(self._fallback_counts.values())} rows from the fallback database "
                      f"{self._fallback_path} into the TF card {self._target.location.path}")
        reason = reason or self.location.degraded
        return ("degraded" if reason else "ok"), reason

    def _check_state(self) -> None:
        """Call ``on_state`` (soon, on the loop) when the state changed since it was last told."""
        if self._on_state is None:
            return
        state, reason = self._state_now()
        if state == self._reported[0]:
            return
        self._reported = (state, reason)
        self._loop.call_soon_threadsafe(_tell_state, self._on_state, state, reason)

    if TYPE_CHECKING:  # the halves' methods, as the other half sees them
        @property
        def _on_fallback(self) -> bool: ...
        def _next_id(self) -> str: ...
        def _backlog_shrank(self) -> None: ...
        def _card_gone(self) -> str | None: ...
        def _card_health(self) -> dict[str, Any]: ...
        def _card_check_due(self) -> bool: ...
        async def _idle_card_check(self) -> None: ...
        async def _fall_back(self, reason: str, events: list[EventRow], ops: list[Op], *,
                             gone: bool = False) -> bool: ...
        async def _abandon(self, reason: str, *, closing: bool = False) -> None: ...
        async def _merge_step(self) -> None: ...
        async def _refresh_counts(self, *, force: bool = False) -> None: ...
        async def _write(self, events: list[EventRow], ops: list[Op]) -> bool: ...
        async def _swap_connection(self, db: aiosqlite.Connection) -> None: ...
        def _use_connection(self, db: aiosqlite.Connection) -> aiosqlite.Connection: ...
        def _start_probe(self) -> None: ...
        def _connection_changed(self) -> None: ...


def _tell_state(callback: StateCallback, state: str, reason: str | None) -> None:
    try:
        callback(state, reason)
    except Exception:
        log.exception("storage: the on_state callback failed")
