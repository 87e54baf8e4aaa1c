"""The voice agent's ``session_config``: the last messages, as ticos-client kept them.

The local voice agent reads ``~/.config/ticos/session_config`` (JSON) when it (re)starts.
ticos-client's contract, kept here byte for byte in shape:

* ``model.messages.nobody`` holds the last ``history_rounds`` messages as
  ``{"role", "content"}``, oldest first, messages without text left out, then trimmed from
  the end until the list ends with an assistant message;
* ``model.messages`` that is missing or a list becomes ``{"nobody": [...]}``; a dict keeps its
  other users; every other key of the file stays as it is, unknown ones too;
* written as ``json.dump(doc, indent=2, ensure_ascii=False)`` (no trailing newline); a missing
  file is created with that shape.

Safer than ticos-client: the new text goes to a temporary file in the same folder, is
fsynced, then renamed over the file (a reader sees the old file or the new one, never half
of one), and the folder is fsynced; the file is 0600 whatever the umask. A file that is not
a JSON object is not overwritten silently: it is kept as ``session_config.bad`` and logged; one
larger than :data:`MAX_FILE` is not read whole nor rewritten (logged). A symbolic link is
replaced by the file, never written through.

With storage on the TF card the card's ``<card>/.config/ticos/session_config`` is preferred
at start: its keys are copied into the internal file (as ticos-client did); the card's own
file is only read, never changed.

When it is written (each write is a new file, two fsyncs and a few pages of flash; written
after every memory round, as ticos-client did, it was a fifth of what the agent wrote to the
card at a conversational pace): at start (so it holds what the database holds, after a power
cut too), when a voice agent's connection closes with rounds not yet written (a voice agent
reads the file when it restarts, and its old connection closes first), once
``[memory] session_config_quiet`` seconds passed without a new round, at most
:data:`MAX_STALE` seconds after a round during a conversation that never pauses, at stop, and
when an integrator calls ``generate()``. A memory round does not write it: the file holds
messages, not memories.

Thread and timing: :func:`update_file` blocks (file I/O, one fsync or two); the agent calls it
on a thread of its own (:func:`~ticos_agent.background.in_thread`). :class:`SessionConfig` runs
on the loop; :meth:`SessionConfig.changed` and :meth:`SessionConfig.soon` only set a timer or
start a task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..background import in_thread

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
BAD_SUFFIX = ".bad"
MAX_FILE = 8 << 20  # bytes of a session_config the agent reads and rewrites
#: Seconds after a round by which the file is rewritten even while rounds keep coming.
MAX_STALE = 300.0
#: Seconds without a new round before the file is rewritten (``[memory] session_config_quiet``).
QUIET = 20.0


class RecentMessages(Protocol):
    async def flush(self) -> None: ...

    async def recent_messages(self, count: int) -> list[dict[str, Any]]: ...


def session_messages(recent: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """ticos-client's list: ``{"role", "content"}`` of the messages with text, oldest first,
    ending with an assistant message (``recent`` is oldest first)."""
    out = []
    for message in recent:
        content = message.get("content")
        content = content if isinstance(content, str) else "" if content is None else str(content)
        if content:
            out.append({"role": str(message.get("role", "")), "content": content})
    while out and out[-1]["role"] != "assistant":
        out.pop()
    return out


def dumps(doc: Any) -> str:
    """The file's text, exactly as ticos-client's ``_update_session_config_file`` writes it."""
    return json.dumps(doc, indent=2, ensure_ascii=False)


def with_messages(doc: dict[str, Any], messages: list[dict[str, str]]) -> dict[str, Any]:
    """``doc`` with ``model.messages.nobody`` set as ticos-client set it (``doc`` is changed)."""
    model = doc.get("model")
    if not isinstance(model, dict):
        model = doc["model"] = {}
    current = model.get("messages")
    if isinstance(current, dict):
        current["nobody"] = messages
    else:  # missing, a list (the old shape), or anything else
        model["messages"] = {"nobody": messages}
    return doc


def read_doc(path: Path, *, keep_bad: bool = True) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when it is missing, or not a JSON object (then,
    with ``keep_bad``, copied to ``<path>.bad`` and logged)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("session_config: cannot read %s: %s", path, exc)
        return None
    if len(raw) > MAX_FILE:  # not ticos-client's file; rewriting it would drop what it holds
        raise OSError(f"{path} is larger than {MAX_FILE >> 20} MiB: left alone")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        why = f"not JSON ({exc})"
    else:
        if isinstance(doc, dict):
            return doc
        why = f"a JSON {type(doc).__name__}, not an object"
    if keep_bad:
        bad = path.with_name(path.name + BAD_SUFFIX)
        try:
            shutil.copyfile(path, bad)
            os.chmod(bad, FILE_MODE)
            log.warning("session_config: %s is %s; kept it as %s and write a new one", path, why, bad)
        except OSError as exc:
            log.warning("session_config: %s is %s and could not be kept (%s); writing a new one", path, why, exc)
    else:
        log.warning("session_config: %s is %s; not used", path, why)
    return None


def write_atomic(path: Path, text: str) -> None:
    """``text`` becomes ``path`` at once: a temporary file beside it, fsynced, renamed over it."""
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(parents=True, mode=DIR_MODE, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def update_file(path: Path, messages: list[dict[str, str]], *, prefer: Path | None = None) -> dict[str, Any]:
    """Write ``messages`` into ``path`` (every other key kept) and return the document. With
    ``prefer`` (the card's file) that file's keys are the starting point when it is usable."""
    doc = None
    if prefer is not None:
        try:
            doc = read_doc(prefer, keep_bad=False)
        except OSError as exc:
            log.warning("session_config: not using the TF card's: %s", exc)
    if doc is not None:
        log.info("session_config: using the TF card's %s for %s", prefer, path)
    else:
        doc = read_doc(path)
    doc = with_messages(doc if doc is not None else {}, messages)
    write_atomic(path, dumps(doc))
    return doc


class SessionConfig:
    """Keeps ``path`` current from ``store``'s last ``count`` messages (flushed first). ``card`` is the card's
    file, preferred the first time (at start) when storage is on the card. ``quiet``: see the module
    docstring."""

    def __init__(self, store: RecentMessages, path: Path, *, count: int, card: Path | None = None,
                 quiet: float = QUIET):
        self._store = store
        self.path = path
        self.count = count
        self._card = card
        self._quiet = quiet
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None  # loop time by which a changed file is written (MAX_STALE)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._asked = False  # soon() was called: the background write runs (again) for it
        self._retry = quiet  # seconds before a failed write is tried again (doubled, up to MAX_STALE)
        self.writes = 0

    @property
    def pending(self) -> bool:
        """A round happened that no write has taken yet (one under way has taken it)."""
        return self._due is not None

    def changed(self) -> None:
        """A response ended (its messages are stored): write the file once ``quiet`` seconds pass
        without another one (at most :data:`MAX_STALE` seconds after the first unwritten one)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._due is None:
            self._due = now + MAX_STALE
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(min(now + self._quiet, self._due), self.soon)

    def soon(self) -> None:
        """Write the file now, in the background, if a round is not in it yet (after a write
        under way, if that one started before the round)."""
        if self._due is None or self._closed:
            return
        self._cancel_timer()
        self._asked = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write_asked(), name="session-config")

    async def _write_asked(self) -> None:
        while self._asked and self._due is not None and not self._closed:
            self._asked = False
            await self.refresh()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def close(self) -> None:
        """At stop: a write under way is waited for, then the file is written once more (what a
        voice agent left unfinished is stored by then; a failure is logged); no timed or
        background write after this (a socket closing later in the stop asks for none)."""
        self._closed = True
        self._cancel_timer()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.refresh()

    async def refresh(self) -> bool:
        """Write the file now; False (and logged) when that failed. Never raises."""
        async with self._lock:
            self._cancel_timer()
            due, self._due = self._due, None
            try:
                await self._store.flush()  # what was said up to now is committed, so it is read
                recent = await self._store.recent_messages(self.count)
                messages = session_messages(recent)
                card, self._card = self._card, None
                await in_thread(update_file, self.path, messages, prefer=card)
            except Exception as exc:
                if due is not None and self._due is None:
                    self._due = due  # still to be written: retried after ``_retry`` seconds (``quiet``, doubled
                    # per failure up to MAX_STALE) or by a timer set meanwhile; not once closed
                if self._due is not None and not self._closed and self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(self._retry, self.soon)
                    self._retry = min(self._retry * 2, MAX_STALE)
                log.warning("session_config: could not update %s: %s", self.path, exc)
                return False
            self.writes += 1
            self._retry = self._quiet
            log.debug("session_config: %s holds %d messages", self.path, len(messages))
            return True
