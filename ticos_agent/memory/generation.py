"""Memory rounds: every ``every_rounds`` rounds, summarise what was said into a long-term memory.

A round is a user message (a transcript, or a typed ``input_text`` item) followed by a
``response.done`` (not a silent side task's: an out-of-band response without audio, as
:meth:`ticos_agent.turns.Turns.side_task` tells).
:class:`MemoryGeneration` is the intake's consumer that counts them; when ``every_rounds``
have passed it starts a memory round in the background:

1. the store is flushed, and the messages not yet summarised (``store.unsummarised``, oldest
   first) and the latest ``long_term`` memory are read. One request takes at most
   ``4 * every_rounds`` messages (8 at least, ``MAX_BATCH`` at most) and ``MAX_BATCH_CHARS``
   characters (each message cut at ``MAX_MESSAGE_CHARS``), so a backlog never makes a request
   too big for a small local model's context;
2. the summariser (``[memory] base_url``'s :class:`~.summariser.ChatSummariser`, or the
   integrator's own, see :meth:`MemoryGeneration.set_summariser`) writes the new memory; a
   failure is retried ``retries`` times, ``retry_delay`` seconds first, doubled each time;
3. the memory is stored (``store.remember("long_term", ...)``) and only then the mark moves
   (``store.mark_summarised``): a round that fails, is cancelled or dies with the process
   loses nothing; its messages are taken by the next round, after a restart too. A round
   whose batch was full is followed at once by another (a backlog is caught up);
4. ``emit("stored", {"memory": ..., "via": "generation"})`` tells the ``memory`` handlers.

Every round (memory round or not) tells the voice agent's session_config that it changed; it
is rewritten once the conversation pauses, when a voice agent's connection closes, and at stop
(:mod:`.session_config` says when and why).

With ``generation = "client"`` and no ``base_url`` (and no summariser plugged in),
generation is off and the log says so once.

Thread and timing: the intake's handlers only count and start a task; one round runs at a
time (:meth:`MemoryGeneration.generate` waits for a running one), never in the intake's path.
A sync summariser runs on a daemon thread of its own (one call at a time), a coroutine on
the loop. :meth:`stop` cancels a
running round (nothing is marked; a summary already being stored is waited for, at most
``KEEP_TIMEOUT`` seconds, with its mark) and writes session_config once more.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from ..background import thread_call
from ..connection import Peer
from ..errors import StorageError
from ..events import Event
from ..intake import Handler
from ..replies import is_agent_item
from .config import MemoryConfig
from .session_config import SessionConfig

if TYPE_CHECKING:  # the chat summariser loads only when one is used; the memory model with a round
    from .model import Memory, MemoryStore
    from .summariser import ChatSummariser, Summariser

    class GenerationStore(MemoryStore, Protocol):
        async def flush(self) -> None: ...

log = logging.getLogger(__name__)

MAX_BATCH = 200  # messages summarised in one request at most
MAX_BATCH_CHARS = 12000  # characters of messages in one request at most (one message always goes)
KEEP_TIMEOUT = 5.0  # seconds a stop waits for a summary being stored
MAX_MESSAGE_CHARS = 2000  # a longer message is cut in the request (never in the store)
#: ``emit(action, payload)``: the ``memory`` handler topic (``"stored"``, ``{"memory", "via"}``).
EmitMemory = Callable[[str, dict[str, Any]], object]


class MemoryGeneration:
    """The round counter and the memory rounds (see the module docstring)."""

    def __init__(self, store: GenerationStore, config: MemoryConfig, *,
                 side_task: Callable[[str | None, str | None], bool], summariser: Summariser | None = None,
                 emit: EmitMemory | None = None, session: SessionConfig | None = None):
        self._store = store
        self._side_task = side_task  # Turns.side_task: a silent out-of-band response, per session
        self.config = config
        self._emit = emit
        self._session = session
        self._custom = summariser
        self._chat: ChatSummariser | None = None
        if config.generation == "client" and config.base_url:
            from .summariser import ChatSummariser

            self._chat = ChatSummariser(config.base_url, model=config.model, api_key=config.key,
                                        instructions=config.instructions, timeout=config.timeout)
        self._heard = False  # a user message since the last round was counted
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._lock = asyncio.Lock()
        self._thread: threading.Thread | None = None  # a sync summariser's call
        self._keeping: asyncio.Future[Memory] | None = None  # a summary being stored and marked
        self._stopped = False
        self.rounds = 0  # rounds counted since the last memory round
        self.generated = 0
        self.failures = 0

    # --- the summariser -----------------------------------------------------------------

    @property
    def summariser(self) -> Summariser | None:
        return self._custom if self._custom is not None else self._chat

    @property
    def session(self) -> SessionConfig | None:
        """The voice agent's session_config this keeps current (``None``: off)."""
        return self._session

    @property
    def enabled(self) -> bool:
        return self.summariser is not None

    def set_summariser(self, fn: Summariser | None) -> None:
        """Summarise with ``fn(messages, latest_memory) -> str`` (sync or async) from now on,
        whatever ``[memory] generation`` says; ``None`` goes back to the config's."""
        if fn is not None and not callable(fn):
            raise TypeError("the summariser must be callable: fn(messages, latest_memory) -> str")
        self._custom = fn

    def announce(self) -> None:
        """One log line on what generation does (at start)."""
        cfg = self.config
        if self._custom is not None:
            log.info("memory: generation with %s every %d rounds", _name(self._custom), cfg.every_rounds)
        elif self._chat is not None:
            log.info("memory: generation through %s every %d rounds", self._chat.url, cfg.every_rounds)
        elif cfg.generation == "client":
            log.warning("memory: generation is off: memory.generation is \"client\" but memory.base_url is empty "
                        "(set it to an OpenAI-compatible server, or plug in a summariser)")

    # --- counting rounds ----------------------------------------------------------------

    def routes(self) -> Mapping[str, Handler]:
        return {"conversation.item.input_audio_transcription.completed": self._transcribed,
                "conversation.item.created": self._item_created,
                "response.done": self._response_done}

    def _transcribed(self, event: Event, peer: Peer) -> None:
        if isinstance(event.data.get("transcript"), str) and event.data["transcript"].strip():
            self._heard = True

    def _item_created(self, event: Event, peer: Peer) -> None:
        item = event.data["item"]
        if item.get("role") != "user" or is_agent_item(item.get("id")):
            return
        content = item.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "input_text"
                                             and isinstance(p.get("text"), str) and p["text"].strip()
                                             for p in content):
            self._heard = True

    def _response_done(self, event: Event, peer: Peer) -> None:
        response = event.data["response"]
        if self._side_task(response["id"], peer.session_id):
            return  # a silent side task outside the conversation: nothing was said, no round ends
        if self._session is not None:
            self._session.changed()
        if not self._heard:
            return
        self._heard = False
        self.rounds += 1
        if self.rounds >= self.config.every_rounds:
            self.rounds = 0
            self._start_round()

    def peer_closed(self, peer: Peer) -> None:
        """A voice agent went away; the next one (or its restart) reads session_config at its start."""
        if self._session is not None:
            self._session.soon()

    def _start_round(self) -> None:
        if self._stopped:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # the running round's loop takes it
            return
        self._task = asyncio.get_running_loop().create_task(self._rounds(), name="memory-round")

    async def _rounds(self) -> None:
        while True:
            self._again = False
            try:
                memory, full = await self.round()
            except Exception:  # a bug here must not end the rounds for good
                log.exception("memory: the round failed")
                memory, full = None, False
            if not (self._again or (full and memory is not None)):
                return

    # --- one round ----------------------------------------------------------------------

    async def generate(self) -> Memory | None:
        """Run a memory round now (after a running one) and rewrite session_config; the new
        memory, or ``None`` when nothing was summarised (off, nothing new, or it failed)."""
        memory, _ = await self.round()
        if self._session is not None:
            await self._session.refresh()
        return memory

    async def round(self) -> tuple[Memory | None, bool]:
        """One memory round: (the stored memory or ``None``, whether its batch was full)."""
        summariser = self.summariser
        if summariser is None:
            return None, False
        async with self._lock:
            try:
                await self._store.flush()
                limit = min(MAX_BATCH, max(8, 4 * self.config.every_rounds))
                messages, mark = await self._store.unsummarised(limit)
                full = len(messages) >= limit
                fit = _fitting(messages)
                if fit < len(messages):  # the oldest that fit, and the mark that goes with them
                    messages, mark = await self._store.unsummarised(fit)
                    full = True
                if not messages or mark is None:
                    return None, False
                latest = await self._store.latest_memory("long_term")
            except StorageError as exc:
                log.warning("memory: round skipped: %s", exc)
                return None, False
            text = await self._summarise(summariser, messages, latest.content if latest is not None else "")
            if text is None:
                return None, False
            try:  # stored and marked together, even if the round is cancelled meanwhile (stop waits for it)
                self._keeping = asyncio.ensure_future(self._keep(text, mark))
                memory = await asyncio.shield(self._keeping)
            except (StorageError, ValueError) as exc:  # ValueError: a memory the store refuses
                self.failures += 1
                log.warning("memory: the new memory could not be stored (%s); %d messages wait for the next "
                            "round", exc, len(messages))
                return None, False
        self.generated += 1
        log.info("memory: %d messages summarised into memory #%d (%d characters)", len(messages), memory.id,
                 len(memory.content))
        if self._emit is not None:
            try:
                self._emit("stored", {"memory": memory.as_dict(), "via": "generation"})
            except Exception:
                log.exception("memory: telling the memory handlers failed")
        return memory, full

    async def _keep(self, text: str, mark: int) -> Memory:
        from .model import MAX_CONTENT

        memory = await self._store.remember("long_term", text[:MAX_CONTENT])
        await self._store.mark_summarised(mark)
        return memory

    async def _summarise(self, summariser: Summariser, messages: list[dict[str, Any]], latest: str) -> str | None:
        cfg = self.config
        delay = cfg.retry_delay
        for attempt in range(cfg.retries + 1):
            try:
                return await self._call(summariser, messages, latest)
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                if attempt == cfg.retries:
                    self.failures += 1
                    log.warning("memory: summary failed after %d attempt(s): %s; its %d messages wait for the "
                                "next round", attempt + 1, reason, len(messages))
                    return None
                log.warning("memory: summary attempt %d failed: %s; retrying in %g s", attempt + 1, reason, delay)
            await asyncio.sleep(delay)
            delay *= 2
        return None

    async def _call(self, summariser: Summariser, messages: list[dict[str, Any]], latest: str) -> str:
        timeout = self.config.timeout
        batch = [{**m, "content": str(m.get("content", ""))[:MAX_MESSAGE_CHARS]} for m in messages]
        if _is_async(summariser):
            result: Any = await asyncio.wait_for(summariser(batch, latest), timeout + 1.0)  # type: ignore[arg-type]
        else:
            result = await asyncio.wait_for(self._in_thread(summariser, batch, latest), timeout)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(_awaited(result), timeout)
        from .summariser import SummaryFailed

        if not isinstance(result, str):
            raise SummaryFailed(f"the summariser returned {type(result).__name__}, not text")
        if not result.strip():
            raise SummaryFailed("the summariser's answer is empty")
        return result.strip()

    def _in_thread(self, fn: Summariser, batch: list[dict[str, Any]], latest: str) -> asyncio.Future[Any]:
        """``fn(batch, latest)`` on a daemon thread of its own: one that never returns cannot keep the
        process from exiting (the loop's executor threads are joined at exit); one at a time."""
        if self._thread is not None and self._thread.is_alive():
            from .summariser import SummaryFailed

            raise SummaryFailed("the summariser has not returned from its previous call yet")
        # a failure is handed to the round, which retries or gives up
        self._thread, future = thread_call(partial(fn, batch, latest), name="ticos-summariser", daemon=True)
        return future

    # --- lifecycle ----------------------------------------------------------------------

    async def stop(self) -> None:
        """Cancel a running round (nothing is marked), close the HTTP session, write
        session_config once more."""
        self._stopped = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        keeping = self._keeping
        if keeping is not None and not keeping.done():  # a summary being stored: it and its mark go in
            try:
                await asyncio.wait_for(asyncio.shield(keeping), KEEP_TIMEOUT)
            except Exception as exc:
                log.warning("memory: the last summary was not stored before the stop (%s); its messages "
                            "wait for the next round", str(exc) or type(exc).__name__)
        if self._chat is not None:
            await self._chat.close()
        if self._session is not None:
            await self._session.close()


def _fitting(messages: list[dict[str, Any]]) -> int:
    """How many of the oldest ``messages`` fit in one request (one at least)."""
    total = 0
    for i, message in enumerate(messages):
        total += min(len(str(message.get("content", ""))), MAX_MESSAGE_CHARS)
        if total > MAX_BATCH_CHARS:
            return max(1, i)
    return len(messages)


def _is_async(fn: Any) -> bool:
    # a coroutine function, or an object whose __call__ is one (a callable fn's type has __call__)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)
