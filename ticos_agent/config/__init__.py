"""TOML -> typed configuration.

A config file is optional: with none, the agent listens on ``127.0.0.1:9999``, stores in
``~/.config/ticos/ticos.db`` and drives a simulated robot. Every section and every key is
optional. ``ticos-agent config --example`` prints every key with its default and one line of
documentation; ``ticos-agent config`` prints the effective config as TOML (secrets masked
unless ``--show-secrets``) that can be copied into a file as it is.

The sections and who declares them (all with the one vocabulary of :mod:`ticos_agent.options`):

* ``[server]``, ``[storage]``, ``[replies]``, ``[conversation]``, ``[tools]``, ``[log]``:
  :class:`ServerConfig`, :class:`StorageConfig`, :class:`RepliesConfig`,
  :class:`ConversationConfig`, :class:`ToolsConfig`, :class:`LogConfig` here;
* ``[life]``: :class:`ticos_agent.life.config.LifeConfig`; ``[memory]``:
  :class:`ticos_agent.memory.config.MemoryConfig`;
* ``[audio]``: :class:`ticos_agent.audio.config.AudioConfig`;
* ``[robot]``, ``[actuators.NAME]``, ``[motions.TAG]``, ``[emotions.TAG]``:
  :mod:`ticos_agent.actuators.config`, with each driver declaring its own options.

Rules across keys: a non-loopback ``server.host`` requires ``server.token`` (and a set token
is required from every peer); ``storage.db_filename`` is a plain file name.

:func:`load` and :func:`from_dict` check every section in one pass and raise one
:class:`~ticos_agent.errors.ConfigErrors` holding every problem, each a
:class:`~ticos_agent.errors.ConfigError` naming the dotted key, the value (never a secret's)
and what is allowed, with "did you mean ..." for a misspelt section, key, choice or driver.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path as _FsPath
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ConfigErrors
from ..life.config import LifeConfig, States, parse_states
from ..memory.config import MemoryConfig
from ..options import (
    Boolean,
    Choice,
    Duration,
    Errors,
    Integer,
    List,
    Path,
    Secret,
    String,
    did_you_mean,
    dump_table,
    parse_table,
    schema_of,
    setting,
)
from ..storage.location import DEFAULT_DB_FILENAME, DEFAULT_EVENT_RETENTION_DAYS, EVENT_LOG_DELAY

if TYPE_CHECKING:
    from ..actuators.config import ActuatorsConfig
    from ..audio.config import AudioConfig

__all__ = [
    "PLAIN_SECTIONS",
    "SECTIONS",
    "Config",
    "ConfigErrors",
    "ConversationConfig",
    "LogConfig",
    "RepliesConfig",
    "ServerConfig",
    "StorageConfig",
    "ToolsConfig",
    "default_internal_dir",
    "from_dict",
    "is_loopback",
    "load",
    "merge",
    "read_toml",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
#: Every top-level table a config may have, in the order ``ticos-agent config`` prints them.
SECTIONS = ("server", "storage", "replies", "conversation", "tools", "log", "life", "memory", "audio", "robot",
            "actuators", "motions", "emotions", "states")
KNOWN_SECTIONS = SECTIONS  # the old name


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: where the realtime WebSocket and the HTTP API listen."""

    host: str = setting(String("127.0.0.1", "address to listen on; a non-loopback address requires a token",
                               nonempty=True))
    port: int = setting(Integer(9999, "TCP port (0 picks a free one)", minimum=0, maximum=65535))
    token: str = setting(Secret("", "bearer token (Authorization: Bearer ...) required from every peer when set"))
    trust_loopback: bool = setting(Boolean(
        False, "with a token set, let loopback peers in without it (keep false behind a local reverse proxy)"))
    allowed_origins: list[str] = setting(List(
        String(nonempty=True), [], "browser origins that may use the API, e.g. \"http://robot.local:8080\" "
        "(voice agents send no Origin; any other Origin is refused)", min_items=0))
    names: list[str] = setting(List(
        String(nonempty=True), [], "host names a request may name in Host besides loopback and server.host, "
        "e.g. \"robot.local\" (refuses DNS-rebinding names)", min_items=0))
    max_frame_bytes: int = setting(Integer(1 << 20, "largest WebSocket frame; a larger one closes that socket with "
                                                    "1009", minimum=1024, maximum=64 << 20))
    max_connections: int = setting(Integer(64, "open TCP connections at most (HTTP and WebSocket); more are closed "
                                               "at once with 503", minimum=1, maximum=10000))
    request_timeout: float = setting(Duration(10.0, "seconds a connection may take to send a whole request, and stay "
                                                    "idle between requests", minimum=1, maximum=3600))
    heartbeat: float = setting(Duration(30.0, "seconds between pings to each WebSocket; a peer that answers nothing "
                                              "for 1.5 times this is closed (0: never)", minimum=0, maximum=3600))

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: where conversations, calls and the event log are kept."""

    enabled: bool = setting(Boolean(True, "keep conversations, memories and calls in SQLite"))
    mode: str = setting(Choice(("internal", "external"), "internal",
                               "internal: ~/.config/ticos (or $STATE_DIRECTORY); external: the TF card"))
    dir: str = setting(Path("", "internal storage directory (empty: ~/.config/ticos or $STATE_DIRECTORY)"))
    tf_root: str = setting(Path("", "TF card root (empty: found from the mount table)"))
    db_filename: str = setting(Path(DEFAULT_DB_FILENAME, "database file name inside the storage directory",
                                    filename=True))
    event_log: bool = setting(Boolean(True, "keep a compact log of event types and ids (never payloads)"))
    event_log_days: int = setting(Integer(DEFAULT_EVENT_RETENTION_DAYS,
                                          "event-log rows older than this are pruned (0: keep forever)",
                                          minimum=0, maximum=36500))
    event_log_delay: float = setting(Duration(
        EVENT_LOG_DELAY, "the longest an event-log line waits for its commit (a turn's lines then cost one commit; "
                         "a SIGKILL still loses none older than 1 s: they are copied to a pending file); "
                         "0.8 commits them within 1 s too, which a power cut also keeps", minimum=0.8, maximum=10.0))

    @property
    def internal_dir(self) -> _FsPath:
        """``dir``, or the default: ``$STATE_DIRECTORY`` under systemd, else ``~/.config/ticos``."""
        return _FsPath(self.dir) if self.dir else default_internal_dir()


@dataclass(frozen=True)
class RepliesConfig:
    """``[replies]``: what the agent sends back to the voice agent on its own."""

    function_call_output: bool = setting(Boolean(False, "send each call's outcome back as a function_call_output item"))
    respond_after_recall: bool = setting(Boolean(
        True, "after the recall tool's answer (always sent back), send a response.create so the model says what "
              "it found; false if the voice agent asks for the response itself"))


@dataclass(frozen=True)
class ConversationConfig:
    """``[conversation]``: how messages are assembled from the realtime events."""

    reconnect_grace: float = setting(Duration(
        10.0, "seconds what a dropped socket left open waits for the voice agent to come back and continue it, "
              "before it is stored as incomplete (it is still continued in place later)", minimum=0, maximum=3600))


@dataclass(frozen=True)
class ToolsConfig:
    """``[tools]``: giving the voice agent its tools, as `ticos-agent tools` prints them."""

    announce: bool = setting(Boolean(
        False, "send every tool (the robot's and the integrator's) to each voice agent that connects, as a "
               "session.update; it replaces the session's tools, so keep false if the voice agent sets its own"))
    api: str = setting(Choice(
        ("auto", "beta", "ga"), "auto", "shape of that session.update: beta (a session without a type), ga "
        "(session.type \"realtime\", which the GA API requires), auto (what the voice agent's session.created "
        "shows; beta until one has)"))


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: the service's log."""

    level: str = setting(Choice(LOG_LEVELS, "info", "log level of the service", casefold=True))
    loop_stall: float = setting(Duration(1.0, "seconds the event loop may be blocked (by an async or inline handler, "
                                             "say) before the log says where (0: never watched)", minimum=0.1,
                                             maximum=3600, also={0: "never watched"}))


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    replies: RepliesConfig = field(default_factory=RepliesConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    life: LifeConfig = field(default_factory=LifeConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    states: States = field(default_factory=States)
    actuators: ActuatorsConfig | None = None
    audio: AudioConfig | None = None
    source: str = "(defaults)"

    @property
    def log_level(self) -> str:
        return self.log.level

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        """The effective config as plain TOML data (``ticos-agent config`` prints it)."""
        out: dict[str, Any] = {
            name: dump_table(getattr(self, name), schema_of(cls), mask_secrets=mask_secrets)
            for name, cls in PLAIN_SECTIONS.items()
        }
        if self.audio is not None:
            out["audio"] = self.audio.as_dict()
        if self.actuators is not None:
            out.update(self.actuators.as_dict(mask_secrets=mask_secrets))
        if self.states.looks:
            out["states"] = self.states.as_dict()
        return out


PLAIN_SECTIONS: dict[str, type] = {"server": ServerConfig, "storage": StorageConfig, "replies": RepliesConfig,
                                    "conversation": ConversationConfig, "tools": ToolsConfig, "log": LogConfig,
                                    "life": LifeConfig, "memory": MemoryConfig}


def load(config: str | os.PathLike[str] | dict[str, Any] | None = None, *, overrides: dict[str, Any] | None = None,
         defaults: dict[str, Any] | None = None, source: str | None = None, hardware: bool = True) -> Config:
    """The validated :class:`Config` of a TOML file (read once), a parsed document or nothing,
    with ``defaults`` laid under it (the document's values win) and ``overrides`` over it
    (theirs win), table by table (:func:`merge`). ``source`` names it in errors and in
    ``ticos-agent config`` (default: the path, ``(dict)`` or ``(defaults)``); ``hardware`` as in
    :func:`from_dict`."""
    if isinstance(config, dict):
        doc, named = config, "(dict)"
    elif config is not None:
        doc, named = read_toml(config), str(config)
    else:
        doc, named = {}, "(defaults)"
    if defaults:
        doc = merge(defaults, doc)
    if overrides:
        doc = merge(doc, overrides)
    return from_dict(doc, source=source or named, hardware=hardware)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML document in ``path``; :class:`ConfigErrors` (key ``config``) when it is missing,
    cannot be read (permissions, a folder, an I/O error) or is not TOML."""
    import tomllib  # the parser loads only when there is a file to read

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigErrors([ConfigError("config", str(path), "an existing TOML file")], str(path)) from None
    except OSError as exc:
        raise ConfigErrors([ConfigError("config", str(path), f"a readable TOML file ({exc.strerror or exc})")],
                           str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError("config", str(path), f"valid TOML ({exc})")], str(path)) from None


def from_dict(doc: dict[str, Any], *, source: str = "(dict)", hardware: bool = True) -> Config:
    """Check every section of ``doc`` (a parsed TOML document) and build the :class:`Config`.

    ``hardware=False`` builds a config with no actuators and no audio without loading their
    modules (the ``TicosClient`` default, as in ticos-client). Raises :class:`ConfigErrors`
    with every problem found, in every section."""

    errors = Errors()
    if not isinstance(doc, dict):
        errors.add("(document)", doc, "a TOML document (a table)")
        errors.raise_if_any(source)
    for name, table in doc.items():
        if name not in SECTIONS:
            shown = f"[table with keys {', '.join(map(str, table))}]" if isinstance(table, dict) else table
            errors.add(name, shown, "one of the sections " + ", ".join(SECTIONS) + did_you_mean(name, SECTIONS))
    values = {name: parse_table(name, doc.get(name, {}), schema_of(cls), errors)
              for name, cls in PLAIN_SECTIONS.items()}
    server = values["server"]
    if not errors.touched("server.host", "server.token") and not is_loopback(server["host"]) \
            and not server["token"].strip():
        errors.add("server.token", "", f"a token when server.host ({server['host']}) is not loopback")
    actuators: ActuatorsConfig | None = None
    audio: AudioConfig | None = None
    states = States()
    if hardware:
        from ..actuators.config import parse_actuators
        from ..audio.config import parse_audio

        actuators = parse_actuators(doc, errors)
        audio = parse_audio(doc.get("audio", {}), errors)
        # [states] is always checked; its tags and poses only against a library without errors
        library = not errors.touched("actuators", "motions", "emotions", "robot", "life")
        states = parse_states(doc, actuators, LifeConfig(**values["life"]), errors, against_library=library)
    errors.raise_if_any(source)
    return Config(**{name: cls(**values[name]) for name, cls in PLAIN_SECTIONS.items()},
                  states=states, actuators=actuators, audio=audio, source=source)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, table by table (neither is changed)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


_merge = merge  # the old private name


def default_internal_dir() -> _FsPath:
    """``$STATE_DIRECTORY`` under systemd (``StateDirectory=ticos``), else ``~/.config/ticos``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return _FsPath(state.split(":")[0])
    return _FsPath.home() / ".config" / "ticos"


def to_toml(config: Config, *, show_secrets: bool = False) -> str:
    """The effective config as a TOML file (``ticos-agent config``)."""
    from .toml import dumps

    note = "secrets shown" if show_secrets else "secrets masked; --show-secrets to see them"
    return dumps(config.as_dict(mask_secrets=not show_secrets),
                 header=f"Effective config of ticos-agent (from {config.source}; {note}).")

