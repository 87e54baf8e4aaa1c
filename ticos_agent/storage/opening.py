"""Opening a :class:`~.store.Store`: the card, the fallback, a merge left to do at start."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from ..errors import StorageError
from .card import PROBE_INTERVAL, CardTarget, CardWatch
from .connection import connect, describe
from .location import DEFAULT_DB_FILENAME, SaveMode, card_root_of, fallback_path, mount_required, resolve_location
from .merge import fallback_counts
from .store import DEFAULT_EVENT_RETENTION_DAYS, Store

log = logging.getLogger(__name__)


async def open_store(
    mode: SaveMode | str,
    *,
    tf_root: str | os.PathLike | None = None,
    internal_dir: str | os.PathLike | None = None,
    db_filename: str = DEFAULT_DB_FILENAME,
    batch_interval: float = 0.05,
    require_mount: bool | None = None,
    event_retention_days: float | None = DEFAULT_EVENT_RETENTION_DAYS,
    probe_interval: float = PROBE_INTERVAL,
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

    ``require_mount``: the card root must exist and be a mount point (``True``), or any
    directory is accepted as the card and created when missing (``False``, for tests and
    development); ``None`` (default) means ``True`` unless the environment variable
    ``TICOS_ALLOW_UNMOUNTED_CARD=1`` is set.
    ``event_retention_days``: event-log rows older than this are pruned, a small chunk at a
    time, at open and every few minutes (``None``: kept forever).

    Raises :class:`StorageError` (path and reason) when even the internal (or fallback)
    database fails.
    """
    loc = resolve_location(mode, tf_root=tf_root, internal_dir=internal_dir, db_filename=db_filename)
    options = {"batch_interval": batch_interval, "event_retention_days": event_retention_days,
                   "probe_interval": probe_interval}
    if loc.requested is SaveMode.INTERNAL:
        db, seed = await _connect_or_raise(loc.path)
        return Store(db, loc, last_message_id=seed, **options)
    strict = mount_required(require_mount)
    watch = CardWatch(Path(tf_root) if tf_root is not None else None, strict, db_filename)
    fallback = fallback_path(internal_dir, db_filename)
    options.update(watch=watch, fallback=fallback)
    card = await watch.open(card_root_of(loc.path)) if loc.mode is SaveMode.EXTERNAL else loc.degraded
    if isinstance(card, CardTarget) and not fallback.exists():
        return Store(card.db, card.location, last_message_id=card.seed, card=card, **options)
    if isinstance(card, str):
        log.warning("storage: %s; falling back to %s (the card is probed for every %g s)", card, fallback,
                    probe_interval)
    try:
        db, seed = await connect(fallback, fallback=True)
        counts = await fallback_counts(db)
    except (sqlite3.Error, OSError) as exc:
        if isinstance(card, CardTarget):  # the card works: its rows wait, the card is used
            log.error("storage: cannot open the fallback database %s to merge it into the TF card: %s",
                      fallback, describe(exc))
            return Store(card.db, card.location, last_message_id=card.seed, card=card, **options)
        raise StorageError(f"cannot open database {fallback}: {describe(exc)}") from exc
    if isinstance(card, str):
        return Store(db, loc.fallen_back(fallback, card), last_message_id=seed, counts=counts, **options)
    if not sum(counts.values()):
        await db.close()
        return Store(card.db, card.location, last_message_id=max(card.seed, seed), card=card, **options)
    log.warning("storage: %d rows from an earlier fallback wait in %s; merging them into the TF card %s",
                sum(counts.values()), fallback, card.location.path)
    merging = card.location.fallen_back(fallback, f"merging the fallback database {fallback} into the TF card")
    return Store(db, merging, last_message_id=max(card.seed, seed), counts=counts, target=card, **options)


async def _connect_or_raise(path: Path):
    try:
        return await connect(path)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open database {path}: {describe(exc)}") from exc
