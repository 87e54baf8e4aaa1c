"""The Store: one aiosqlite connection, one writer task, few and full commits.

Writes are enqueued synchronously on the event loop thread and cost a tuple append; the
writer task (:mod:`.writer`) commits them, one transaction per batch of at most
``CHUNK_RECORDS`` records (a backlog after an outage becomes many commits, and the WAL stays
near ``journal_size_limit``), with one ``executemany`` per kind of record. ``await flush()``
returns once everything enqueued before it is committed; ``await close()`` flushes and
closes (a ``flush()`` racing it never hangs).

**When it commits** (the card's flash is written per commit, not per row): a conversation
record waits at most ``commit_delay`` seconds (``COMMIT_DELAY``, 0.8 s), an event-log line at
most ``event_log_delay`` seconds (``EVENT_LOG_DELAY``, 2 s); after a turn's end the commit
comes once no record came for ``TURN_SETTLE`` seconds; a ``flush()``, the close and a backlog
commit at once. The rules, and why, are in :mod:`.policy`.

**Pages and checkpoints** (see :mod:`.schema` and :mod:`.connection`): a database this
code creates has 512-byte pages (SQLite's smallest: a page rewritten per commit is then
512 bytes, not 4096; a database made by ticos-client keeps its page size); the hot path
maintains the tables and their keys (``idx_messages_item`` is gone since schema 3: nothing
queries it; the session indexes since schema 6: a session's span, written once when it starts,
finds its rows, see :mod:`.spans`); an event-log line holds its type and session as numbers
(schema 5: ~40 % smaller); and the WAL is
checkpointed once about ``CHECKPOINT_BYTES`` (4 MiB) of it gathered (SQLite's automatic
checkpoint, its page count set per page size): a page rewritten by many commits reaches
the database file once per checkpoint. Measured with ``bench/sd_writes.py`` (one turn every
2 s, event log on, ids as long as a realtime server's): about 3.8 KB written per stored
message on internal storage instead of 25, and about 30 fsyncs per conversation minute on the
card instead of 120-150; the README has the table. Of those 3.8 KB, about 0.7 are per minute
rather than per commit: the kernel writes the memory-mapped WAL index (``-shm``) back every
~30 s and it is dirtied again by the next commit.

On the TF card every commit is synced (``synchronous=FULL``): a record counted as written
survives the card being pulled; fewer commits are fewer fsyncs. Internal storage uses
``synchronous=NORMAL`` (fsyncs only at checkpoints). The files are private to the agent's
user (0600 in 0700 folders, whatever the umask; see :mod:`.connection`).

Before each batch on the TF card the writer checks that the card is still the mounted card
(one ``os.stat``; see :mod:`.card`). When it is not (pulled out, lazily unmounted, swapped),
or a write fails there (full, turned read-only, any other SQLite I/O failure), the batch
is kept, the fallback database ``<internal dir>/ticos-fallback.db`` is opened (and
migrated) and the batch is written there; ``health()`` then reports ``state: "degraded"``
with the reason, and one WARNING names both paths. The card is probed for every few
seconds; when it is back, the fallback's rows are merged into it (:mod:`.merge`: in order,
idempotent, nothing deleted before the card committed it) and the store returns to it.
The insert values of the last ``RECENT_MESSAGES`` messages are remembered, so an update of
a message that is only on the card inserts it, with its new content and status, into the
fallback (the merge then updates the card's row). Failures at the fallback or internal
location are retried with a backoff. Nothing raises into the event loop; a row the database
rejects (a constraint, a value SQLite cannot store) is logged, counted in ``write_errors``
and ``skipped``, and skipped alone.

``on_state(state, reason)`` (optional, :attr:`Store.on_state` or ``open_store(on_state=)``)
is called on the event loop whenever ``health()["state"]`` changes (``"ok"`` or
``"degraded"``, with the reason or ``None``): the card lost or back, writes failing or
working again, event-log lines being dropped. A store that opens degraded reports it once,
right after the callback is set.

Event-log rows older than ``event_retention_days`` are deleted at open and every
``PRUNE_EVERY`` seconds, ``PRUNE_CHUNK`` ids per commit between batches (``events_pruned``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from ..errors import StorageError, describe
from . import schema
from .card import FLAPPING_S, PROBE_INTERVAL, CardKeeper, CardWatch
from .idle import PRUNE_EVERY
from .location import DEFAULT_EVENT_RETENTION_DAYS, EVENT_LOG_DELAY, Location, card_root_of
from .memory_methods import Memories
from .pending import PendingFile, pending_path
from .policy import COMMIT_DELAY, TURN_SETTLE
from .reads import Reads
from .spans import SpanCloser
from .state import MAX_PENDING_EVENTS, CardTarget, StateCallback
from .writer import Writer
from .writes import (
    MERGE_CHUNK,
    SQL_ADD_MEMORY,
    SQL_ADD_MESSAGE,
    SQL_CALL_OUTCOME,
    SQL_RECORD_CALL,
    SQL_UPDATE_MESSAGE,
    Params,
)

if TYPE_CHECKING:
    from ..memory.model import MemoryStore

log = logging.getLogger(__name__)

#: The last messages whose insert values are kept for updates that find no row.
RECENT_MESSAGES = 4096
RECENT_CHARS = 16 << 20
#: close() waits this long for a probe that is opening the card.
PROBE_CLOSE_WAIT = 5.0
#: What ends a turn in the event log.
TURN_END_EVENTS = frozenset({"response.done"})


class Store(Writer, CardKeeper, Memories, Reads):
    """Conversation messages, memories, function calls and the event log of one database.

    Create it with :func:`open_store`. ``location`` is the :class:`Location` in use (it
    changes when the card is lost and when it comes back). The writer task's methods come
    from :class:`~.writer.Writer` (when it commits, and :meth:`end_turn`, from
    :class:`~.policy.CommitPolicy`), the card's from :class:`~.card.CardKeeper`, the memory
    methods (:class:`~ticos_agent.memory.model.MemoryStore`) from :class:`~.memory_methods.Memories`,
    the reads of committed rows and :meth:`health` from :class:`~.reads.Reads`. Once
    :meth:`close` began, the enqueue methods raise :class:`~ticos_agent.errors.StoreClosed`.
    """

    def __init__(self, db: aiosqlite.Connection, location: Location, *, last_message_id: int = 0,
                 commit_delay: float = COMMIT_DELAY, turn_settle: float = TURN_SETTLE,
                 event_log_delay: float = EVENT_LOG_DELAY,
                 event_retention_days: float | None = DEFAULT_EVENT_RETENTION_DAYS,
                 probe_interval: float = PROBE_INTERVAL, watch: CardWatch | None = None,
                 fallback: Path | None = None, card: CardTarget | None = None,
                 target: CardTarget | None = None, counts: dict[str, int] | None = None,
                 on_state: StateCallback | None = None):
        if not commit_delay >= 0 or not turn_settle >= 0 or not event_log_delay >= 0:
            raise ValueError("commit_delay, turn_settle and event_log_delay must be >= 0, not "
                             f"{commit_delay!r}, {turn_settle!r}, {event_log_delay!r}")
        if event_retention_days is not None and not event_retention_days >= 0:
            raise ValueError(f"event_retention_days must be >= 0 or None, not {event_retention_days!r}")
        if not probe_interval > 0:
            raise ValueError(f"probe_interval must be > 0, not {probe_interval!r}")
        self._db = db
        self.location = location
        self._last_id = last_message_id
        self._interval = commit_delay
        self._settle = turn_settle
        self._lazy_interval = max(event_log_delay, commit_delay)
        # The card (EXTERNAL mode only): see .card. ``_card_ident``/``_card_mount``: what the
        # card in use looked like when opened; ``_target``: a card that came back, being merged.
        self._watch = watch
        self._card_root = (card_root_of(card.location.path)
                           if card is not None and watch is not None and watch.strict else None)
        self._fallback_path = fallback
        self._card_ident = card.ident if card is not None else None
        self._card_mount = card.mount if card is not None else None
        self._target: CardTarget | None = target
        self._merger = None
        self._merge_chunk = MERGE_CHUNK
        self._probe_every = self._probe_delay = probe_interval
        self._next_card_check = time.monotonic() + probe_interval
        self._probe_task = None
        self._probing = False
        self._probes = self._losses = self._returns = self._merged = 0
        self._returned_at = -FLAPPING_S
        self._card_problem = location.degraded if watch is not None and target is None else None
        self._fallback_counts = dict(counts) if counts else {"messages": 0, "memories": 0, "calls": 0, "events": 0}
        self._counted_at = time.monotonic()
        self._events = []
        self._ops = []
        # Totals enqueued and done (committed or skipped); a flush waits for its own marks.
        self._events_in = self._events_out = self._ops_in = self._ops_out = 0
        self._first_at = None  # when the oldest queued record was enqueued (monotonic)
        self._lazy_at = None  # the same for the oldest event-log line or wordless message
        self._unspilled_at = None  # the same for the oldest of those not in the pending file
        self._pending = PendingFile(pending_path(location.path if fallback is None else fallback))
        self._restoring = ([], [])
        self._batch = None
        self._pending_overflow_said = False
        self._turn_end = False  # a turn ended since the last batch was taken
        self._waiters = []
        self._wake = asyncio.Event()  # records are queued
        self._kick = asyncio.Event()  # commit them now
        self._nudge = asyncio.Event()  # their commit may be due earlier than the writer thought
        self._put_back(*self._pending.take())
        self._inflight = 0
        self._written = 0
        self._commits = 0
        self._commit_time = 0.0  # a decaying peak of how long commits take (s)
        self._write_errors = 0
        self._skipped = 0
        self._dropped_events = 0
        self._dropping = False
        self._failure = None
        self._id_remap = {}
        # The insert values of recent messages, kept current with their updates: an update
        # that finds no row (the row went to the card before a fallback) re-inserts it here.
        self._recent = OrderedDict()
        self._recent_chars = 0
        self._unknown_updates_logged = 0
        self._retention = event_retention_days
        self._prune_every = PRUNE_EVERY
        self._next_prune = time.monotonic()  # at open
        self._prune_more = False
        self._events_pruned = 0
        self._closing = False
        self._on_state = None
        self._reported = ("ok", None)
        self._loop = asyncio.get_running_loop()
        self._init_indexer()
        self._spans = SpanCloser()
        self._task = self._loop.create_task(self._run(), name="ticos-storage-writer")
        if self._on_fallback and target is None:
            self._start_probe()
        if on_state is not None:
            self.on_state = on_state

    # ----------------------------------------------------------------- enqueue (sync, cheap)

    def _next_id(self) -> str:
        mid = int(time.time())
        if mid <= self._last_id:
            mid = self._last_id + 1
        self._last_id = mid
        return str(mid)

    def _op(self, sql: str, params: Params, *, lazy: bool = False) -> None:
        self._ops.append((sql, params))
        self._ops_in += 1
        self._queued(lazy)

    def _remember(self, message_id: str, row: list[object]) -> None:
        recent = self._recent
        old = recent.pop(message_id, None)
        if old is not None:
            self._recent_chars -= _chars(old[2])
        recent[message_id] = row
        self._recent_chars += _chars(row[2])
        while len(recent) > 1 and (len(recent) > RECENT_MESSAGES or self._recent_chars > RECENT_CHARS):
            _, gone = recent.popitem(last=False)
            self._recent_chars -= _chars(gone[2])

    def add_message(self, *, role: str, content: str, item_id: str | None, session_id: str | None = None,
                    status: str = "completed", response_id: str | None = None,
                    user_id: str = "nobody") -> str:
        """Queue a conversation message; returns its id (the SDK's time-based scheme, unique)."""
        if self._closing:
            raise self._closed_error()
        message_id = self._next_id()
        params = (message_id, role, content, item_id, user_id, schema.now_local(), session_id, status, response_id)
        self._remember(message_id, list(params))
        # a user's item whose words are still being transcribed: its words will come as an
        # update (on the ``commit_delay`` clock, see .policy); until then the row holds
        # nothing the event log does not
        self._op(SQL_ADD_MESSAGE, params, lazy=not content and status == "pending")
        if role == "assistant":
            self.end_turn()
        return message_id

    def update_message(self, message_id: str, *, content: str | None = None,
                       status: str | None = None) -> None:
        """Queue a change of a message's content and/or status (``None`` keeps the old value).

        When the row is not in the database in use (it was committed on the TF card before a
        fallback) it is inserted there again with its new content and status, for the last
        ``RECENT_MESSAGES`` messages added.
        """
        if self._closing:
            raise self._closed_error()
        message_id = self._id_remap.get(message_id, message_id)
        row = self._recent.get(message_id)
        if row is not None:
            if content is not None:
                self._recent_chars += _chars(content) - _chars(row[2])
                row[2] = content
            if status is not None:
                row[7] = status
        self._op(SQL_UPDATE_MESSAGE, (content, status, message_id))

    def add_memory(self, type: str, content: str, user_id: str = "nobody") -> None:
        """Queue a memory (``short_term`` or ``long_term`` in the SDK's terms)."""
        if self._closing:
            raise self._closed_error()
        self._op(SQL_ADD_MEMORY, (type, content, user_id, schema.now_local()))

    def session_ended(self, session_id: str) -> None:
        """A session added its last rows (a voice agent's connection closed): its span is
        closed after they are committed, so that reading it stops at its last row (see
        :mod:`.spans`). Optional: a span left open is read correctly, only further."""
        self._spans.ended(session_id)
        self._wake.set()

    def record_call(self, *, call_id: str, name: str, arguments: str, session_id: str | None = None,
                    response_id: str | None = None, item_id: str | None = None,
                    status: str = "received") -> None:
        """Queue a function call as received (``arguments`` is the JSON string as sent).

        One row per session and call id: the same call id in another session is another call
        (a record again in the same session fills only what is missing). Without
        ``session_id``, the newest call of that id, if there is one."""
        if self._closing:
            raise self._closed_error()
        self._op(SQL_RECORD_CALL, (call_id, name, arguments, session_id, response_id, item_id,
                                   status, schema.now_local()))

    def set_call_outcome(self, call_id: str, status: str, result: dict[str, Any] | str | None, *,
                         session_id: str | None = None) -> None:
        """Queue a call's final status and result (stored as JSON text; ``None`` as NULL).

        A call is one per session and call id (a restarted voice agent may number its calls
        anew): ``session_id`` names which; without it, the newest call of that id."""
        if self._closing:
            raise self._closed_error()
        text = None if result is None else _json_text(result)
        self._op(SQL_CALL_OUTCOME, (call_id, status, text, schema.now_local(), session_id))

    def log_event(self, type: str, *, session_id: str | None = None, event_id: str | None = None,
                  item_id: str | None = None, response_id: str | None = None,
                  ts: float | None = None) -> None:
        """Queue one line of the compact event log (ids only, never payloads).

        While writes are failing, at most ``MAX_PENDING_EVENTS`` lines wait; later ones are
        dropped, counted in ``health()["dropped_events"]``, and the state is ``degraded``
        until the backlog shrinks.
        """
        if self._closing:
            raise self._closed_error()
        events = self._events
        if len(events) >= MAX_PENDING_EVENTS:
            self._dropped_events += 1
            if not self._dropping:
                self._dropping = True
                self._check_state()
            return
        events.append((time.time() if ts is None else ts, type, session_id, event_id, item_id, response_id))
        self._events_in += 1
        self._queued(True)
        if type in TURN_END_EVENTS:
            self.end_turn()

    def _backlog_shrank(self) -> None:
        """After each commit: events are taken again once the backlog is under 90 % of the cap."""
        if self._dropping and len(self._events) < MAX_PENDING_EVENTS * 0.9:
            self._dropping = False

    # ----------------------------------------------------------------- flush, close

    async def flush(self) -> None:
        """Wait until everything enqueued so far is committed.

        Raises :class:`StorageError` when it could not be written anywhere (the records stay
        queued and are retried). After ``close()`` it returns at once (or raises when records
        were left unwritten).
        """
        if self._task.done():
            if self._events or self._ops or self._put_back_waiting:
                raise StorageError(f"store {self.location.path} is closed with unwritten records")
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._ops_in, self._events_in, waiter))
        self._commit_now()
        await waiter

    async def close(self) -> None:
        """Flush, stop the writer and close the connection; never raises.

        Records that could not be written anywhere are reported in an ERROR log line.
        """
        if self._closing:
            await asyncio.shield(self._task)
            return
        self._closing = True
        self._commit_now()
        probe = self._probe_task
        if probe is not None and not probe.done():
            if self._probing:  # an opening card connection: let it finish and be closed
                await asyncio.wait({probe}, timeout=PROBE_CLOSE_WAIT)
            probe.cancel()
        await asyncio.shield(self._task)
        lost = len(self._events) + len(self._ops) + len(self._restoring[0]) + len(self._restoring[1])
        if lost:
            self._write_pending()
            log.error("storage: closed %s with %d records not written (the event-log lines and new messages "
                      "among them are kept in %s for the next start)", self.location.path, lost, self._pending.path)
        self._pending.close()
        try:
            await self._db.close()
        except Exception as exc:
            log.warning("storage: closing %s: %s", self.location.path, describe(exc))


def memory_store(store: Store) -> MemoryStore:
    """``store`` as the narrow view memory code is given (the type checker proves it is one)."""
    return store


def _chars(value: object) -> int:
    return len(value) if isinstance(value, str) else 0


def _json_text(value: Any) -> str:
    """``value`` as JSON text SQLite can take: non-ASCII text as it is, but half a surrogate
    pair escaped, as JSON allows: UTF-8 cannot hold it, and the writer would skip the whole
    record. Arguments never hold one (they are refused, see :mod:`ticos_agent.arguments`), but
    an outcome carries what a handler returned, which may be any str: a file name with a byte
    that is not UTF-8, from ``os.fsdecode``, holds one."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, default=str)
    return text
