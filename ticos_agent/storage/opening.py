"""Opening a :class:`~.store.Store`: the card, the fallback, a merge left to do at start."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import aiosqlite

from ..errors import StorageError, describe
from .card import PROBE_INTERVAL, CardWatch
from .connection import connect
from .location import (
    DEFAULT_DB_FILENAME,
    DEFAULT_EVENT_RETENTION_DAYS,
    EVENT_LOG_DELAY,
    NO_CARD_FOUND,
    Location,
    SaveMode,
    card_root_of,
    fallback_path,
    mount_required,
    resolve_location,
    with_card_hint,
)
from .policy import COMMIT_DELAY, TURN_SETTLE
from .state import CardTarget, StateCallback
from .store import Store

log = logging.getLogger(__name__)


async def open_store(
    mode: SaveMode | str,
    *,
    tf_root: str | os.PathLike[str] | None = None,
    internal_dir: str | os.PathLike[str] | None = None,
    db_filename: str = DEFAULT_DB_FILENAME,
    commit_delay: float = COMMIT_DELAY,
    turn_settle: float = TURN_SETTLE,
    event_log_delay: float = EVENT_LOG_DELAY,
    batch_interval: float | None = None,
    require_mount: bool | None = None,
    event_retention_days: float | None = DEFAULT_EVENT_RETENTION_DAYS,
    probe_interval: float = PROBE_INTERVAL,
    on_state: StateCallback | None = None,
) -> Store:
    """Open the database for ``mode`` and start its writer; call on the running event loop.

    EXTERNAL falls back to the fallback database ``<internal dir>/ticos-fallback.db``
    (``Location.degraded`` says why, a WARNING names both paths) when no card is mounted,
    the card root is not a mount point, the card directory cannot be created or written,
    the card is mounted read-only or full, or the file there cannot be opened as a
    database. The card root itself is never created. While on the fallback, the card is
    probed for every ``probe_interval`` seconds and, once back, the fallback's rows are
    merged into it (see :mod:`.card`); a card present at open with rows left in the
    fallback by an earlier run gets them merged the same way.

    ``commit_delay``: the longest a record waits for its commit (seconds; 0.8 by default,
    so a SIGKILL loses nothing older than 1 s); ``turn_settle``: after a turn's end, the
    commit comes once no record came for this long; ``event_log_delay``: the longest an
    event-log line waits for its commit (2 s; see :mod:`.policy`). ``batch_interval``
    is the former name of ``commit_delay`` (when given, it wins).
    ``require_mount``: the card root must exist and be a mount point (``True``), or any
    directory is accepted as the card and created when missing (``False``, for tests and
    development); ``None`` (default) means ``True`` unless the environment variable
    ``TICOS_ALLOW_UNMOUNTED_CARD=1`` is set.
    ``event_retention_days``: event-log rows older than this are pruned, a small chunk at a
    time, at open and every few minutes (``None``: kept forever).
    ``on_state(state, reason)``: see :attr:`Store.on_state` (a store that opens degraded
    reports it once, soon after this returns).

    Raises :class:`StorageError` (path and reason) when even the internal (or fallback)
    database fails.
    """
    loc = resolve_location(mode, tf_root=tf_root, internal_dir=internal_dir, db_filename=db_filename)
    delay = commit_delay if batch_interval is None else batch_interval

    def store(db: aiosqlite.Connection, location: Location, seed: int, *, watch: CardWatch | None = None,
              fallback: Path | None = None, card: CardTarget | None = None, target: CardTarget | None = None,
              counts: dict[str, int] | None = None) -> Store:
        return Store(db, location, last_message_id=seed, commit_delay=delay, turn_settle=turn_settle,
                     event_log_delay=event_log_delay,
                     event_retention_days=event_retention_days, probe_interval=probe_interval, watch=watch,
                     fallback=fallback, card=card, target=target, counts=counts, on_state=on_state)

    if loc.requested is SaveMode.INTERNAL:
        db, seed = await _connect_or_raise(loc.path)
        return store(db, loc, seed)
    strict = mount_required(require_mount)
    watch = CardWatch(Path(tf_root) if tf_root is not None else None, strict, db_filename)
    fallback = fallback_path(internal_dir, db_filename)
    card = await watch.open(card_root_of(loc.path)) if loc.mode is SaveMode.EXTERNAL else loc.degraded
    if isinstance(card, CardTarget) and not fallback.exists():
        return store(card.db, card.location, card.seed, watch=watch, fallback=fallback, card=card)
    problem = None if isinstance(card, CardTarget) else (card or NO_CARD_FOUND)
    if problem is not None:
        log.warning("storage: %s; falling back to %s (the card is probed for every %g s)",
                    with_card_hint(problem), fallback, probe_interval)
    try:
        db, seed = await connect(fallback, fallback=True)
        from .merge import fallback_counts  # (the merge loads only in EXTERNAL mode's fallback)

        counts = await fallback_counts(db)
    except (sqlite3.Error, OSError) as exc:
        if isinstance(card, CardTarget):  # the card works: its rows wait, the card is used
            log.error("storage: cannot open the fallback database %s to merge it into the TF card: %s",
                      fallback, describe(exc))
            return store(card.db, card.location, card.seed, watch=watch, fallback=fallback, card=card)
        raise StorageError(f"cannot open database {fallback}: {describe(exc)}") from exc
    if not isinstance(card, CardTarget):
        return store(db, loc.fallen_back(fallback, problem or NO_CARD_FOUND), seed, watch=watch, fallback=fallback,
                     counts=counts)
    if not sum(counts.values()):
        await db.close()
        return store(card.db, card.location, max(card.seed, seed), watch=watch, fallback=fallback, card=card)
    log.warning("storage: %d rows from an earlier fallback wait in %s; merging them into the TF card %s",
                sum(counts.values()), fallback, card.location.path)
    merging = card.location.fallen_back(fallback, f"merging the fallback database {fallback} into the TF card")
    return store(db, merging, max(card.seed, seed), watch=watch, fallback=fallback, counts=counts, target=card)


async def _connect_or_raise(path: Path) -> tuple[aiosqlite.Connection, int]:
    try:
        return await connect(path)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open database {path}: {describe(exc)}") from exc
