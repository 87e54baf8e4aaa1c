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
called (on one handler thread, in arrival order) with the same arguments as ticos-client:
``message_handler(event_dict)`` for every event, ``motion_handler(args)``,
``emotion_handler(args)``, ``function_call_handler(name, args)`` for every other function,
``conversation_handler(item_id, role, content)``. As in ticos-client, nothing is stored
until :meth:`enable_local_storage` is called, and the built-in actuators and audio player
stay off unless a ``config`` (path or dict, see :mod:`ticos_agent.config`) asks for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from .config import Config, from_dict, load
from .storage import SaveMode

log = logging.getLogger("ticos_agent.client")

START_TIMEOUT = 10.0


class MessageRole(str, Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MemoryType(str, Enum):
    SHORT_TERM = "short_term"
    LONG_TERM = "long_term"


_UNSET: Any = object()


class TicosClient:
    def __init__(self, port: int = _UNSET, save_mode: SaveMode | str = _UNSET,
                 tf_root_dir: str | None = None, *, host: str = _UNSET,
                 config: str | Path | dict | None = None):
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
        self._handlers: dict[str, Callable | None] = dict.fromkeys(
            ("message", "motion", "emotion", "function_call", "conversation"))
        self.agent = None
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
        if db_filename:
            self._db_filename = db_filename
        self._storage_enabled = True

    # --- handlers -----------------------------------------------------------------------

    def _set(self, kind: str, handler: Callable | None) -> None:
        if handler is not None and not callable(handler):
            raise ValueError("Handler must be callable")
        self._handlers[kind] = handler

    def set_message_handler(self, handler: Callable[[dict], Any]) -> None:
        self._set("message", handler)

    def set_motion_handler(self, handler: Callable[[dict], Any]) -> None:
        self._set("motion", handler)

    def set_emotion_handler(self, handler: Callable[[dict], Any]) -> None:
        self._set("emotion", handler)

    def set_function_call_handler(self, handler: Callable[[str, dict], Any]) -> None:
        self._set("function_call", handler)

    def set_conversation_handler(self, handler: Callable[[str, str, str], Any]) -> None:
        self._set("conversation", handler)

    # Handlers are looked up at call time, so setting one after start() works as in ticos-client.
    def _on_message(self, event: dict) -> None:
        if (fn := self._handlers["message"]) is not None:
            fn(event)

    def _on_expression(self, name: str, args: dict) -> None:
        """ticos-client's rule: the motion and/or emotion handler; if neither was set, the
        function-call handler with the name."""
        called = False
        if name in ("motion", "motion_and_emotion") and (fn := self._handlers["motion"]) is not None:
            fn(args)
            called = True
        if name in ("emotion", "motion_and_emotion") and (fn := self._handlers["emotion"]) is not None:
            fn(args)
            called = True
        if not called and (fn := self._handlers["function_call"]) is not None:
            fn(name, args)

    def _on_function(self, call) -> Any:
        if (fn := self._handlers["function_call"]) is not None:
            return fn(call.name, dict(call.arguments))
        return None

    def _on_conversation(self, item_id: str, role: str, content: str) -> None:
        if (fn := self._handlers["conversation"]) is not None:
            fn(item_id, MessageRole(role) if role in MessageRole._value2member_map_ else role, content)

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
        if src is None or self._given["save_mode"]:
            storage["mode"] = self.save_mode.value
        if self.tf_root_dir:
            storage["tf_root"] = self.tf_root_dir
        if self._storage_dir:
            storage["dir"] = self._storage_dir
        if self._db_filename:
            storage["db_filename"] = self._db_filename
        overrides = {"server": server, "storage": storage}
        if src is None:
            cfg = from_dict(overrides, source="TicosClient")
            return dataclasses.replace(cfg, actuators=None, audio=None)
        if isinstance(src, dict):
            from .config import merge

            return from_dict(merge(src, overrides), source="TicosClient(config=dict)")
        return load(src, overrides=overrides)

    def start(self) -> bool:
        """Start serving; returns as soon as the server is ready (True) or failed (False)."""
        if self.is_running():
            return True
        try:
            config = self._config()
        except Exception as exc:
            self.start_error = str(exc)
            log.error("TicosClient: bad configuration: %s", exc)
            return False
        from .agent import Agent

        self.agent = agent = Agent(config)
        agent.on("*", self._on_message)
        agent.subscribe("expression", self._on_expression)
        agent.on_function("*", self._on_function)
        agent.on_conversation(self._on_conversation)
        ready = threading.Event()
        self.start_error = None

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(agent.start())
            except Exception as exc:
                self.start_error = f"{type(exc).__name__}: {exc}"
                ready.set()
                loop.close()
                return
            self._running = True
            ready.set()
            try:
                loop.run_until_complete(agent.wait_closed())
            finally:
                self._running = False
                loop.close()

        self._thread = threading.Thread(target=run, name=f"ticos-agent-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            self.start_error = f"not ready after {START_TIMEOUT:g}s"
        if self.start_error:
            log.error("TicosClient: could not start on port %s: %s", self.port, self.start_error)
            return False
        self.port = agent.port
        return True

    def stop(self) -> None:
        """Stop serving; flushes storage. Returns promptly."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive() or self.agent is None:
            self._running = False
            return
        try:
            asyncio.run_coroutine_threadsafe(self.agent.stop(), loop).result(timeout=10)
        except Exception as exc:
            log.error("TicosClient: error while stopping: %s", exc)
        thread.join(timeout=5)
        self._running = False
        self._thread = None

    def is_running(self) -> bool:
        return self._running and self._thread is not None and self._thread.is_alive()

    def send_message(self, message: dict) -> bool:
        """Send an event to every connected voice agent (ticos-client's broadcast)."""
        if not isinstance(message, dict):
            log.error("send_message: message must be a dict")
            return False
        if not self.is_running():
            return False
        future = asyncio.run_coroutine_threadsafe(self.agent.send(message), self._loop)
        try:
            future.result(timeout=5)
        except Exception as exc:
            log.warning("send_message failed: %s", exc)
            return False
        return True
