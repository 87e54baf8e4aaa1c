"""TOML -> typed configuration.

A config file is optional: with none, the agent listens on ``127.0.0.1:9999``, stores in
``~/.config/ticos/ticos.db`` and drives a simulated robot. Every section is optional and
every key has a default::

    [server]
    host = "127.0.0.1"          # a non-loopback host requires a token
    port = 9999
    token = ""                   # required from non-loopback peers (Authorization: Bearer ...)
    max_frame_bytes = 1048576    # larger frames close that socket with 1009

    [storage]
    mode = "internal"            # "internal" or "external" (the TF card)
    dir = ""                     # internal directory; default ~/.config/ticos or $STATE_DIRECTORY
    tf_root = ""                 # TF card root; empty: found from the mount table
    db_filename = "ticos.db"
    enabled = true
    event_log = true             # compact log of event types and ids (never payloads)
    event_log_days = 30          # event-log rows older than this are pruned (0: keep forever)

    [replies]
    function_call_output = false # send each call's outcome back as a function_call_output item

    [log]
    level = "info"

The ``robot``/``actuators``/``motions``/``emotions`` sections belong to
:mod:`ticos_agent.actuators` and ``audio`` to :mod:`ticos_agent.audio`; each validates its own.
Every error is a :class:`~ticos_agent.errors.ConfigError` naming the key, the value and what
is allowed; :func:`load` collects all of them so a broken file is explained in one screen.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, TicosError

LOG_LEVELS = ("debug", "info", "warning", "error")
KNOWN_SECTIONS = ("server", "storage", "replies", "log", "robot", "actuators", "motions", "emotions", "audio")


class ConfigErrors(TicosError, ValueError):
    """Several :class:`ConfigError` at once; ``errors`` holds each of them."""

    def __init__(self, errors: list[ConfigError], source: str = "config"):
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{source} has {len(errors)} error(s):\n{lines}")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9999
    token: str = ""
    max_frame_bytes: int = 1 << 20

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True)
class StorageConfig:
    enabled: bool = True
    mode: str = "internal"
    dir: str = ""
    tf_root: str = ""
    db_filename: str = "ticos.db"
    event_log: bool = True
    event_log_days: int = 30


@dataclass(frozen=True)
class RepliesConfig:
    function_call_output: bool = False


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    replies: RepliesConfig = field(default_factory=RepliesConfig)
    log_level: str = "info"
    actuators: Any = None
    audio: Any = None
    source: str = "(defaults)"

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        server = asdict(self.server)
        if mask_secrets and server["token"]:
            server["token"] = "********"
        out: dict[str, Any] = {
            "server": server,
            "storage": asdict(self.storage),
            "replies": asdict(self.replies),
            "log": {"level": self.log_level},
        }
        if self.audio is not None:
            out["audio"] = self.audio.as_dict()
        if self.actuators is not None:
            out.update(self.actuators.as_dict())
        return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load(path: str | os.PathLike | None = None, *, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML file (or nothing) and return the validated :class:`Config`."""
    doc: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigErrors([ConfigError("config", str(path), "an existing TOML file")], source) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigErrors([ConfigError("config", str(path), f"valid TOML ({exc})")], source) from None
    if overrides:
        doc = _merge(doc, overrides)
    return from_dict(doc, source=source)


def from_dict(doc: dict[str, Any], *, source: str = "(dict)") -> Config:
    errors: list[ConfigError] = []
    for key in doc:
        if key not in KNOWN_SECTIONS:
            errors.append(ConfigError(key, doc[key], f"one of the sections {', '.join(KNOWN_SECTIONS)}"))

    server = _section(doc, "server", errors, {
        "host": (str, "127.0.0.1"), "port": (int, 9999), "token": (str, ""),
        "max_frame_bytes": (int, 1 << 20),
    })
    if not 0 <= server["port"] <= 65535:
        errors.append(ConfigError("server.port", server["port"], "a port number 0..65535 (0 picks a free one)"))
    if not 1024 <= server["max_frame_bytes"] <= 64 << 20:
        errors.append(ConfigError("server.max_frame_bytes", server["max_frame_bytes"], "1024 .. 67108864 bytes"))
    if not is_loopback(server["host"]) and not server["token"].strip():
        errors.append(ConfigError("server.token", "", f"a token when server.host ({server['host']}) is not loopback"))

    storage = _section(doc, "storage", errors, {
        "enabled": (bool, True), "mode": (str, "internal"), "dir": (str, ""), "tf_root": (str, ""),
        "db_filename": (str, "ticos.db"), "event_log": (bool, True), "event_log_days": (int, 30),
    })
    if not 0 <= storage["event_log_days"] <= 36500:
        errors.append(ConfigError("storage.event_log_days", storage["event_log_days"], "0 (keep forever) .. 36500 days"))
    if storage["mode"] not in ("internal", "external"):
        errors.append(ConfigError("storage.mode", storage["mode"], '"internal" or "external"'))
    name = storage["db_filename"]
    if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
        errors.append(ConfigError("storage.db_filename", storage["db_filename"], "a plain file name"))

    replies = _section(doc, "replies", errors, {"function_call_output": (bool, False)})
    log = _section(doc, "log", errors, {"level": (str, "info")})
    if log["level"].lower() not in LOG_LEVELS:
        errors.append(ConfigError("log.level", log["level"], f"one of {', '.join(LOG_LEVELS)}"))

    actuators = audio = None
    try:
        from .actuators import parse_actuators_config

        actuators = parse_actuators_config(doc)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
    except ConfigError as exc:
        errors.append(exc)
    try:
        from .audio import parse_audio_config

        section = doc.get("audio", {})
        if not isinstance(section, dict):
            raise ConfigError("audio", section, "a table")
        audio = parse_audio_config(section)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
    except ConfigError as exc:
        errors.append(exc)

    if errors:
        raise ConfigErrors(errors, source)
    return Config(
        server=ServerConfig(**server),
        storage=StorageConfig(**storage),
        replies=RepliesConfig(**replies),
        log_level=log["level"].lower(),
        actuators=actuators,
        audio=audio,
        source=source,
    )


def _section(doc, name, errors, schema: dict[str, tuple[type, Any]]) -> dict[str, Any]:
    table = doc.get(name, {})
    out = {key: default for key, (_, default) in schema.items()}
    if not isinstance(table, dict):
        errors.append(ConfigError(name, table, "a table"))
        return out
    for key, value in table.items():
        if key not in schema:
            errors.append(ConfigError(f"{name}.{key}", value, f"one of the keys {', '.join(schema)}"))
            continue
        kind = schema[key][0]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(ConfigError(f"{name}.{key}", value, "a whole number"))
        elif kind is bool and not isinstance(value, bool):
            errors.append(ConfigError(f"{name}.{key}", value, "true or false"))
        elif kind is str and not isinstance(value, str):
            errors.append(ConfigError(f"{name}.{key}", value, "a string"))
        else:
            out[key] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def default_internal_dir() -> Path:
    """``$STATE_DIRECTORY`` under systemd (``StateDirectory=ticos``), else ``~/.config/ticos``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    return Path.home() / ".config" / "ticos"
