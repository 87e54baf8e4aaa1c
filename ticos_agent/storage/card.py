"""The TF card in EXTERNAL mode: is it still the card, falling back, probing, coming back.

* **Before each batch** (and every ``probe_interval`` seconds when idle) the writer checks
  that the card is still the mounted card: one ``os.stat`` of the database's folder, whose
  device and inode must be those seen when the card was opened. A card pulled out, lazily
  unmounted (``umount -l``: the open database would keep working on the detached
  filesystem) or swapped for another one fails it; only then is the mount table read, to
  say what happened. The batch then goes to the fallback database.
* **While on the fallback** a probe task looks for the card every ``probe_interval``
  seconds (doubling up to ``MAX_PROBE_INTERVAL`` when the card keeps failing soon after
  coming back): the checks and the opening run in threads, so a hanging card blocks
  neither the writer nor the event loop.
* **When the probe finds the card** writable, the writer keeps writing new records to the
  fallback and, between batches, moves the fallback's rows to the card a chunk at a time
  (:mod:`.merge`); when the fallback is empty it switches to the card. A card failing
  during the merge stops it: what was not merged stays in the fallback, the probe goes on.

:class:`CardKeeper` is the part of ``Store`` that does this (like :class:`~.writer.Writer`,
it works on the state ``Store.__init__`` sets up, declared in :mod:`.state`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite

from ..background import in_thread
from ..errors import describe
from .connection import check_card_dir, connect
from .location import (
    NO_CARD_FOUND,
    Location,
    SaveMode,
    card_db_path,
    card_problem,
    card_root_of,
    find_tf_root,
    mount_of,
)
from .state import CardTarget, StoreState
from .writes import DATA_ERRORS, SQL_ADD_MESSAGE, SQL_UPDATE_MESSAGE, EventRow, Op

log = logging.getLogger(__name__)

PROBE_INTERVAL = 3.0
MAX_PROBE_INTERVAL = 60.0
#: A card lost again within this many seconds of coming back doubles the probe interval.
FLAPPING_S = 60.0
#: The fallback's row counts (for ``health()``) are refreshed at most this often while writing.
COUNT_EVERY = 1.0


def identify(directory: Path) -> tuple[int, int]:
    """(device, inode) of ``directory``: what the cheap check compares."""
    st = os.stat(directory)
    return st.st_dev, st.st_ino


class CardWatch:
    """Finds, opens and checks the card. ``tf_root``: the card root given (``None``: found in
    the mount table each time); ``strict``: the root must be a mount point (see
    :func:`.location.card_problem`)."""

    def __init__(self, tf_root: Path | None, strict: bool, db_filename: str):
        self.tf_root = tf_root
        self.strict = strict
        self.db_filename = db_filename

    def locate(self) -> tuple[Path, Path] | str:
        """The card root and database path when the card looks usable, else why not (blocking)."""
        root = self.tf_root if self.tf_root is not None else find_tf_root()
        if root is None:
            return NO_CARD_FOUND
        if self.strict:
            problem = card_problem(root)
            if problem:
                return problem
        path = card_db_path(root, self.db_filename)
        existing = next((p for p in (path.parent, root) if p.is_dir()), None)
        if existing is None:
            return f"TF card folder {root} does not exist"
        try:
            check_card_dir(existing)
        except OSError as exc:
            return f"cannot use TF card database {path}: {describe(exc)}"
        return root, path

    async def open(self, root: Path | None = None) -> CardTarget | str:
        """Open the card database (at ``root``, or wherever :meth:`locate` finds it); the
        checks run in threads. Returns why not as a string."""
        if root is None:
            located = await in_thread(self.locate)
            if isinstance(located, str):
                return located
            root, path = located
        else:
            path = card_db_path(root, self.db_filename)
            if self.strict:
                problem = await in_thread(card_problem, root)
                if problem:
                    return problem
        try:
            db, seed = await connect(path, card=True, card_root=root if self.strict else None)
        except (sqlite3.Error, OSError) as exc:
            return f"cannot use TF card database {path}: {describe(exc)}"
        try:
            ident = await in_thread(identify, path.parent)
            mount = await in_thread(mount_of, root)
        except OSError as exc:
            await _close(db)
            return f"cannot use TF card database {path}: {describe(exc)}"
        return CardTarget(db, Location(path, SaveMode.EXTERNAL, SaveMode.EXTERNAL), ident, seed, mount)

    def gone(self, path: Path, ident: tuple[int, int], mount: tuple[str, int, str] | None) -> str | None:
        """The cheap check: ``None`` while ``path``'s folder is the one opened, else what happened."""
        try:
            if identify(path.parent) == ident:
                return None
            detail = None
        except OSError as exc:
            detail = exc.strerror or str(exc)
        return self.explain(path, ident, mount, detail)

    def explain(self, path: Path, ident: tuple[int, int], mount: tuple[str, int, str] | None,
                detail: str | None) -> str:
        """Why the card's folder is no longer the one opened (reads the mount table)."""
        now = mount_of(card_root_of(path))
        suffix = f" ({path.parent}: {detail})" if detail else ""
        if mount is not None and now is not None and now[1] == ident[0]:
            return f"the TF card's folder {path.parent} was removed or replaced{suffix}"
        if mount is not None and now is not None and now[0] == mount[0]:
            return (f"another device ({now[2]}) is now mounted at {mount[0]}: not the TF card "
                    f"({mount[2]}) the database was on{suffix}")
        where = f"{mount[2]} at {mount[0]}" if mount is not None else str(card_root_of(path))
        return f"the TF card ({where}) is no longer mounted: pulled out or unmounted{suffix}"


class CardKeeper(StoreState):
    """Falling back from the card, probing for it, merging and returning; part of ``Store``."""

    @property
    def _on_fallback(self) -> bool:
        return self._fallback_path is not None and self.location.path == self._fallback_path

    # ------------------------------------------------------------------ is it still the card?

    def _card_gone(self) -> str | None:
        self._next_card_check = time.monotonic() + self._probe_every
        if self._watch is None or self._card_ident is None:
            return None
        return self._watch.gone(self.location.path, self._card_ident, self._card_mount)

    def _card_check_due(self) -> bool:
        return self._card_ident is not None and time.monotonic() >= self._next_card_check

    async def _idle_card_check(self) -> None:
        problem = self._card_gone()
        if problem:
            await self._fall_back(problem, [], [], gone=True)

    # ------------------------------------------------------------------ falling back

    async def _fall_back(self, reason: str, events: list[EventRow], ops: list[Op],
                         *, gone: bool = False) -> bool:
        card_path = self.location.path
        path = self._fallback_path
        if path is None:  # not EXTERNAL mode: nowhere to fall back to
            self._failure = reason if gone else f"writing to {card_path} failed: {reason}"
            return False
        try:
            db, seed = await connect(path, fallback=True)
        except (sqlite3.Error, OSError) as exc:
            first = self._failure is None
            what = reason if gone else f"writing to {card_path} failed ({reason})"
            self._failure = f"{what} and the internal fallback database {path} failed too ({describe(exc)})"
            if first:
                log.error("storage: %s; will retry", self._failure)
            return False
        if gone:
            log.warning("storage: %s; writing to the fallback database %s until the card is back", reason, path)
        else:
            log.warning("storage: writing to TF card database %s failed (%s); falling back to %s",
                        card_path, reason, path)
        self.location = self.location.fallen_back(path, reason if gone else f"writing to {card_path} failed: {reason}")
        self._card_problem = self.location.degraded
        self._failure = None
        self._card_ident = self._card_mount = None
        self._losses += 1
        flapping = time.monotonic() - self._returned_at < FLAPPING_S
        self._probe_delay = min(MAX_PROBE_INTERVAL, self._probe_delay * 2) if flapping else self._probe_every
        self._renumber(seed, ops)
        await self._swap_connection(db)
        self._next_prune = time.monotonic()  # the fallback has its own old events
        self._start_probe()
        ok = await self._write(events, ops)
        await self._refresh_counts(force=True)
        return ok

    def _rename(self, old: str) -> str:
        new = self._next_id()
        for key, value in self._id_remap.items():
            if value == old:
                self._id_remap[key] = new
        self._id_remap[old] = new
        row = self._recent.pop(old, None)
        if row is not None:
            row[0] = new
            self._recent[new] = row
        return new

    def _follow_renames(self, *queues: list[Op]) -> None:
        for pending in queues:
            for i, (sql, params) in enumerate(pending):
                mid = params[2]
                if sql is SQL_UPDATE_MESSAGE and isinstance(mid, str) and mid in self._id_remap:
                    pending[i] = (sql, params[:2] + (self._id_remap[mid],))

    def _renumber(self, seed: int, ops: list[Op]) -> None:
        """Give queued messages new ids where they would collide with the fallback's rows.

        Messages already committed on the card keep their ids (an update then inserts them
        into the fallback as they are, and the merge recognises them on the card)."""
        self._last_id = max(self._last_id, seed)

        def collides(mid: object) -> bool:
            return isinstance(mid, str) and mid.isascii() and mid.isdigit() and int(mid) <= seed

        for pending in (ops, self._ops):
            for i, (sql, params) in enumerate(pending):
                mid = params[0]
                if sql is SQL_ADD_MESSAGE and isinstance(mid, str) and collides(mid):
                    pending[i] = (sql, (self._rename(mid),) + params[1:])
        self._follow_renames(ops, self._ops)

    # ------------------------------------------------------------------ probing

    def _start_probe(self) -> None:
        if self._watch is None or self._closing or self._target is not None:
            return
        if self._probe_task is not None and not self._probe_task.done():
            return
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop(), name="ticos-storage-probe")

    async def _probe_loop(self) -> None:
        watch = self._watch
        if watch is None:
            return
        while True:
            await asyncio.sleep(self._probe_delay)
            if self._closing or self._target is not None or not self._on_fallback:
                return
            self._probes += 1
            self._probing = True  # close() lets an opening finish (and then closes it)
            try:
                found: CardTarget | str = await watch.open()
            except Exception as exc:
                log.exception("storage: probing for the TF card failed unexpectedly")
                found = describe(exc)
            finally:
                self._probing = False
            if isinstance(found, str):
                self._card_problem = found
                continue
            if self._closing or self._target is not None or not self._on_fallback:
                await _close(found.db)
                return
            log.warning("storage: the TF card is back (%s); merging the fallback database %s into it",
                        found.location.path, self._fallback_path)
            self._target = found
            self._commit_now()
            return

    # ------------------------------------------------------------------ merging and returning

    async def _merge_step(self) -> None:
        target, watch = self._target, self._watch
        if target is None or watch is None:
            return
        problem = watch.gone(target.location.path, target.ident, target.mount)
        if problem:
            await self._abandon(problem)
            return
        try:
            if self._merger is None:
                self._last_id = max(self._last_id, target.seed)
                from .merge import Merger  # (loaded only when a card comes back to a fallback)

                self._merger = Merger(self._db, target.db, rename=self._merge_rename, chunk=self._merge_chunk)
                await self._merger.begin()
            merged, empty = await self._merger.step()
        except (sqlite3.Error, OSError, *DATA_ERRORS) as exc:
            await self._abandon(f"merging into {target.location.path} failed: {describe(exc)}")
            return
        except Exception as exc:
            log.exception("storage: merging into the TF card failed unexpectedly")
            await self._abandon(describe(exc))
            return
        self._merged += merged
        if empty:
            await self._switch()
        else:
            await self._refresh_counts(force=True)

    def _merge_rename(self, old: str) -> str:
        new = self._rename(old)
        self._follow_renames(self._ops)
        return new

    async def _abandon(self, reason: str, *, closing: bool = False) -> None:
        target, self._target, self._merger = self._target, None, None
        if not closing:
            log.warning("storage: stopped merging into the TF card (%s); what is not merged stays in %s",
                        reason, self._fallback_path)
            self._card_problem = reason
            self.location = self.location.fallen_back(self.location.path, reason)
            self._returned_at = time.monotonic()
            self._probe_delay = min(MAX_PROBE_INTERVAL, self._probe_delay * 2)
        if target is not None:
            await _close(target.db)
        if not closing:
            self._start_probe()
            await self._refresh_counts(force=True)

    async def _switch(self) -> None:
        target, merger, watch = self._target, self._merger, self._watch
        if target is None or merger is None or watch is None:
            return
        try:
            await merger.forget_marks()
        except (sqlite3.Error, OSError) as exc:  # harmless: the marks cover no row any more
            log.debug("storage: removing merge marks: %s", describe(exc))
        fallback = self._use_connection(target.db)
        self.location = Location(target.location.path, SaveMode.EXTERNAL, self.location.requested)
        self._card_ident, self._card_mount = target.ident, target.mount
        self._card_root = card_root_of(target.location.path) if watch.strict else None
        self._next_card_check = time.monotonic() + self._probe_every
        self._target = self._merger = None
        self._failure = self._card_problem = None
        self._returns += 1
        self._returned_at = time.monotonic()
        self._fallback_counts = dict.fromkeys(self._fallback_counts, 0)
        self._next_prune = time.monotonic()
        await _close(fallback)
        log.warning("storage: back on the TF card database %s; %d rows merged from %s (%d renumbered, "
                    "%d found already merged)", self.location.path, merger.merged, self._fallback_path,
                    merger.renamed, merger.already)

    async def _refresh_counts(self, *, force: bool = False) -> None:
        if not self._on_fallback or (not force and time.monotonic() - self._counted_at < COUNT_EVERY):
            return
        self._counted_at = time.monotonic()
        try:
            from .merge import fallback_counts

            self._fallback_counts = await fallback_counts(self._db)
        except (sqlite3.Error, ValueError) as exc:
            log.debug("storage: counting the fallback's rows: %s", describe(exc))

    def _card_health(self) -> dict[str, Any]:
        counts = self._fallback_counts
        return {
            "fallback_rows": sum(counts.values()),
            "fallback": {
                "path": str(self._fallback_path),
                "rows": dict(counts),
                "merging": self._target is not None,
                "merged": self._merged,
            },
            "card": {
                "in_use": self._card_ident is not None,
                "problem": self._card_problem,
                "losses": self._losses,
                "returns": self._returns,
                "probes": self._probes,
                "probe_interval_s": self._probe_delay,
            },
        }


async def _close(db: aiosqlite.Connection) -> None:
    try:
        await asyncio.wait_for(db.close(), 2.0)
    except Exception:
        pass
