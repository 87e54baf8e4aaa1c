"""``TicosClient``: the ticos-client SDK's API, unchanged, on top of :class:`Agent`.

Existing integrator code keeps working::

    from ticos_agent import TicosClient, SaveMode

    client = TicosClient(port=9999, save_mode=SaveMode.INTERNAL)
    client.enable_local_storage()
    client.set_motion_handler(lambda params: print("motion", params))
    client.set_function_call_handler(lambda name, args: print(name, args))
    if not client.start():
        raise SystemExit("port busy")
    ...
    client.stop()

The agent runs on its own thread with its own event loop; handlers are plain functions,
called (on one handler thread, in arrival order; with ``inline_handlers=True`` on the agent's
own thread, as ticos-client did: sooner, but a slow handler then holds up the socket) with
the same arguments as ticos-client:
``message_handler(event_dict)`` for every event, ``motion_handler(args)``,
``emotion_handler(args)``, ``function_call_handler(name, args)`` for every other function,
``conversation_handler(item_id, role, content)``, and (new) ``memory_handler(action, payload)``
for every memory stored or forgotten (see :meth:`Agent.on_memory`). A handler may be set or
replaced at any time, also after :meth:`start` and from inside a handler; the next event finds
it (until a message, conversation or memory handler is set, those cost the handler thread
nothing; the rules and the subscriptions are in :mod:`ticos_agent.client_handlers`). As in
ticos-client, nothing is stored until :meth:`enable_local_storage` is called, and the
built-in actuators and audio player stay off unless a ``config`` (path or dict, see
:mod:`ticos_agent.config`) asks for them.

As in ticos-client, failures reach the message handler as ``health.status`` messages
(``{"type": "health.status", "code": "DATABASE_ERROR" | "EXECUTER_ERROR", "message": ...}``):
a database that cannot be opened, or that falls back from the card (at start, or later: the
card pulled, read-only or full), a server that cannot start.

Memory (see :mod:`ticos_agent.memory`): the ``[memory]`` section of ``config``, and
ticos-client's own keys ``model.enable_memory_generation``, ``model.history_conversation_length``
and ``model.memory_instructions`` from ``~/.config/ticos/config.toml`` (``[model]``) and
``~/.config/ticos/session_config`` (``model``, where ticos-client read them; it wins over
config.toml), for every ``[memory]`` key the given ``config`` does not set itself (the agent's
config wins). :meth:`generate_memory` runs a memory round now, :meth:`set_summariser` plugs in
an integrator's summariser.

``SaveMode.EXTERNAL`` stores on the TF card: ``tf_root_dir``, or the card found in the mount
table. A ``tf_root_dir`` that is a plain folder of the system disk (not a mount point) is
refused as a card, so the robot never writes "to the card" while the card is missing; the
database then falls back to internal storage and the log says so. For a test rig without a
card, ``TICOS_ALLOW_UNMOUNTED_CARD=1`` accepts a plain folder.

What the robot remembers is reachable from the integrator's thread too (blocking calls, run on
the agent's loop; they raise ``StorageError`` while storage is off or the client stopped)::

    client.remember("The user's name is Lin.", subject="user")   # -> Memory
    client.recall("name")                                          # -> [Hit, ...]
    client.forget(query="sister")                                  # -> how many
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client_handlers import ON_DEMAND, ClientHandlers, MessageRole
from .config import Config, load
from .memory.config import ticos_client_memory
from .storage import SaveMode

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from .agent import Agent
    from .memory.model import Hit, Memory
    from .memory.summariser import Summariser

__all__ = ["MemoryType", "MessageRole", "TicosClient"]  # MessageRole lives with the handlers that use it

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
MEMORY_TIMEOUT = 10.0  # seconds a blocking memory call waits for the store


class MemoryType(str, Enum):
    SHORT_TERM = "short_term"
    LONG_TERM = "long_term"


_UNSET: Any = object()

class TicosClient:
    def __init__(self, port: int = _UNSET, save_mode: SaveMode | str = _UNSET,
                 tf_root_dir: str | None = None, *, host: str = _UNSET,
                 config: str | Path | dict[str, Any] | None = None, inline_handlers: bool = False):
        # with a config, only what the caller passes here overrides the file
        self._given = {"port": port is not _UNSET, "host": host is not _UNSET, "save_mode": save_mode is not _UNSET}
        self.port = 9999 if port is _UNSET else port
        self.host = "127.0.0.1" if host is _UNSET else host
        self.save_mode = SaveMode.coerce(SaveMode.INTERNAL if save_mode is _UNSET else save_mode)
        if tf_root_dir is None and self.save_mode is SaveMode.EXTERNAL:
            from .storage import find_tf_root

            found = find_tf_root()  # as ticos-client did; None: the agent falls back and says so
            tf_root_dir = str(found) if found else None
        self.tf_root_dir = tf_root_dir
        self._config_source = config
        self._storage_enabled = False
        self._storage_dir: str | None = None
        self._db_filename: str | None = None
        self._db_path_given = False
        self._handlers = ClientHandlers(inline_handlers)
        self._summariser: Summariser | None = None
        self.agent: Agent | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self.start_error: str | None = None

    # --- storage ------------------------------------------------------------------------

    def enable_local_storage(self, storage: Any = None, db_filename: str | None = None) -> None:
        """Store conversations and memories in SQLite (``~/.config/ticos/ticos.db``, or on the
        TF card with ``SaveMode.EXTERNAL``). ``storage`` may be a directory for the database;
        ticos-client's pluggable storage-service objects are not supported (the built-in
        SQLite store is used and a warning is logged)."""
        if isinstance(storage, (str, Path)):
            self._storage_dir = str(storage)
        elif storage is not None:
            log.warning("enable_local_storage: custom storage service %r is not supported; "
                        "using the built-in SQLite store", type(storage).__name__)
        if db_filename:  # an absolute path is used as is, as ticos-client did
            if os.path.isabs(db_filename):
                self._storage_dir, self._db_filename = os.path.split(db_filename)
                self._db_path_given = True
            else:
                self._db_filename = db_filename
        self._storage_enabled = True

    # --- handlers -----------------------------------------------------------------------

    def _set(self, kind: str, handler: Callable[..., Any] | None) -> None:
        self._handlers.set(kind, handler)
        loop, thread, handlers = self._loop, self._thread, self._handlers
        if loop is None or thread is None or not handlers.needs_subscribing(kind):
            return  # (before start, start() subscribes it)
        if threading.get_ident() == thread.ident:  # on the agent's loop (an inline handler sets it)
            handlers.subscribe(kind)
            return
        done = threading.Event()  # the next event already finds it, as in ticos-client

        def subscribe() -> None:
            handlers.subscribe(kind)
            done.set()

        try:
            loop.call_soon_threadsafe(subscribe)
        except RuntimeError:  # the loop has closed: nothing is running
            return
        done.wait(MEMORY_TIMEOUT)

    def set_message_handler(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        self._set("message", handler)

    def set_motion_handler(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        self._set("motion", handler)

    def set_emotion_handler(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        self._set("emotion", handler)

    def set_function_call_handler(self, handler: Callable[[str, dict[str, Any]], Any]) -> None:
        self._set("function_call", handler)

    def set_conversation_handler(self, handler: Callable[[str, str, str], Any]) -> None:
        self._set("conversation", handler)

    def set_memory_handler(self, handler: Callable[[str, dict[str, Any]], Any]) -> None:
        """``handler(action, payload)`` for every memory stored or forgotten (not in ticos-client)."""
        self._set("memory", handler)

    # --- lifecycle ----------------------------------------------------------------------

    def _config(self) -> Config:
        src = self._config_source
        server: dict[str, Any] = {}
        storage: dict[str, Any] = {}
        if src is None or self._given["host"]:
            server["host"] = self.host
        if src is None or self._given["port"]:
            server["port"] = self.port
        if src is None or self._storage_enabled:
            storage["enabled"] = self._storage_enabled
        if self._db_path_given:  # a whole path names the database, wherever the card is
            storage["mode"] = "internal"
        elif src is None or self._given["save_mode"]:
            storage["mode"] = self.save_mode.value
        if self.tf_root_dir:
            storage["tf_root"] = self.tf_root_dir
        if self._storage_dir:
            storage["dir"] = self._storage_dir
        if self._db_filename:
            storage["db_filename"] = self._db_filename
        memory = ticos_client_memory()  # under the config: its own [memory] keys win
        if memory:
            log.info("TicosClient: memory.%s found in ticos-client's files in ~/.config/ticos (where the "
                     "config sets one too, the config's value is used)", ", memory.".join(memory))
        return load(src, defaults={"memory": memory} if memory else None,
                    overrides={"server": server, "storage": storage},
                    source="TicosClient" if src is None else "TicosClient(config=dict)" if isinstance(src, dict)
                    else None, hardware=src is not None)

    def _on_storage(self, state: str, reason: str | None) -> None:
        if state == "degraded":
            store = self.agent.store if self.agent is not None else None
            where = f"; storing in {store.health()['path']}" if store is not None else ""
            self._handlers.status("DATABASE_ERROR", f"TicosClient: storage degraded: {reason}{where}")
        else:
            log.info("TicosClient: storage is ok again")

    def start(self) -> bool:
        """Start serving; returns as soon as the server is ready (True) or failed (False)."""
        if self.is_running():
            return True
        try:
            config = self._config()
        except Exception as exc:
            self.start_error = str(exc)
            log.error("TicosClient: bad configuration: %s", exc)
            self._handlers.status("EXECUTER_ERROR", f"TicosClient: bad configuration: {exc}")
            return False
        from .agent import Agent

        self.agent = agent = Agent(config)
        agent.set_summariser(self._summariser)
        handlers, inline = self._handlers, self._handlers.inline
        handlers.attach(agent)
        agent.subscribe("expression", handlers.on_expression, inline=inline)
        agent.on_function("*", handlers.on_function, inline=inline)
        agent.on_storage(self._on_storage, inline=True)
        ready = threading.Event()
        gave_up = threading.Event()
        failure: list[BaseException] = []
        lock = threading.Lock()
        self.start_error = None

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                try:
                    loop.run_until_complete(agent.start())
                except Exception as exc:  # the agent undid what it had started
                    failure.append(exc)
                    return
                with lock:
                    if gave_up.is_set():  # start() stopped waiting: nobody owns this agent
                        loop.run_until_complete(agent.stop())
                        return
                    self._loop = loop
                    self._running = True
                    ready.set()
                loop.run_until_complete(agent.wait_closed())
            finally:
                self._running = False
                self._loop = None
                ready.set()
                loop.close()

        self._thread = threading.Thread(target=run, name=f"ticos-agent-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            with lock:
                if not ready.is_set():
                    gave_up.set()
                    self.start_error = f"not ready after {START_TIMEOUT:g}s"
        if failure:
            error = failure[0]
            self.start_error = f"{type(error).__name__}: {error}"
        if self.start_error or not self._running:
            self.start_error = self.start_error or "the agent stopped while starting"
            log.error("TicosClient: could not start on port %s: %s", self.port, self.start_error)
            from .errors import StorageError

            storage = bool(failure) and isinstance(failure[0], StorageError)
            self._handlers.status("DATABASE_ERROR" if storage else "EXECUTER_ERROR",
                                  f"TicosClient: could not start on port {self.port}: {self.start_error}")
            return False
        if agent.port is not None:
            self.port = agent.port
        for kind in ON_DEMAND:  # one set by another thread while the agent started found no loop to subscribe on
            self._set(kind, self._handlers.by_kind[kind])
        return True

    def stop(self) -> None:
        """Stop serving; flushes storage. Returns promptly; harmless when not running."""
        loop, thread, agent = self._loop, self._thread, self.agent
        if thread is None:
            self._running = False
            return
        if loop is not None and agent is not None and self._running:
            coro = agent.stop()
            try:
                asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=10)
            except RuntimeError:  # the loop closed in between: it had stopped by itself
                coro.close()
            except Exception as exc:
                log.error("TicosClient: error while stopping: %s", str(exc) or type(exc).__name__)
        thread.join(timeout=5)
        self._running = False
        self._thread = None

    def is_running(self) -> bool:
        return self._running and self._thread is not None and self._thread.is_alive()

    def send_message(self, message: dict[str, Any]) -> bool:
        """Send an event to every connected voice agent (ticos-client's broadcast)."""
        if not isinstance(message, dict):
            log.error("send_message: message must be a dict")
            return False
        loop, agent = self._loop, self.agent
        if not self.is_running() or loop is None or agent is None:
            return False
        future = asyncio.run_coroutine_threadsafe(agent.send(message), loop)
        try:
            future.result(timeout=5)
        except Exception as exc:
            log.warning("send_message failed: %s", exc)
            return False
        return True

    # --- memories -----------------------------------------------------------------------

    def _on_loop(self, make: Callable[[Agent], Coroutine[Any, Any, Any]]) -> Any:
        loop, agent = self._loop, self.agent
        if not self.is_running() or loop is None or agent is None:
            from .errors import StorageError

            raise StorageError("TicosClient is not running: start() it (with enable_local_storage()) first")
        return asyncio.run_coroutine_threadsafe(make(agent), loop).result(timeout=MEMORY_TIMEOUT)

    def remember(self, content: str, kind: str = "fact", **fields: Any) -> Memory:
        """Store a memory and return it (see :meth:`Agent.remember`); blocks until stored."""
        return self._on_loop(lambda agent: agent.remember(content, kind, **fields))  # type: ignore[no-any-return]

    def recall(self, query: str, limit: int = 5, *, messages: bool = True) -> list[Hit]:
        """What matches ``query``: memories first, then messages (see :meth:`Agent.recall`)."""
        return self._on_loop(lambda agent: agent.recall(query, limit, messages=messages))  # type: ignore[no-any-return]

    def forget(self, query: str | None = None, ids: Sequence[int] = (), everything: bool = False) -> int:
        """Delete the memories matching ``query``, with these ``ids``, or all; returns how many."""
        return self._on_loop(lambda agent: agent.forget(query, ids, everything))  # type: ignore[no-any-return]

    # --- memory ---------------------------------------------------------------------------

    def set_summariser(self, fn: Summariser | None) -> None:
        """Summarise memory rounds with ``fn(messages, latest_memory) -> str`` instead of
        ``[memory] base_url`` (see :meth:`Agent.set_summariser`); works before and after start."""
        if fn is not None and not callable(fn):
            raise ValueError("Summariser must be callable")
        self._summariser = fn
        loop, agent = self._loop, self.agent
        if loop is not None and agent is not None and self.is_running():
            loop.call_soon_threadsafe(agent.set_summariser, fn)

    def generate_memory(self) -> bool:
        """Run a memory round now, as ticos-client's ``generate_memory()``: True when a new
        long-term memory was stored. Blocks until the round ends (its retries included)."""
        loop, agent = self._loop, self.agent
        if not self.is_running() or loop is None or agent is None:
            return False
        cfg = agent.config.memory
        wait = (cfg.retries + 1) * (cfg.timeout + 2) + cfg.retry_delay * 2 ** cfg.retries + 10
        future = asyncio.run_coroutine_threadsafe(agent.generate_memory(), loop)
        try:
            return future.result(timeout=wait) is not None
        except Exception as exc:
            future.cancel()
            log.error("generate_memory failed: %s", str(exc) or type(exc).__name__)
            return False
