"""``[memory]``: memory generation, priming and the voice agent's session_config.

::

    [memory]
    generation = "client"          # "off" (default) or "client": summarise rounds into long_term memories
    base_url = "http://127.0.0.1:8080/v1"   # an OpenAI-compatible server (llama.cpp, Ollama ...)
    model = "qwen2.5-1.5b-instruct"
    api_key = ""                   # or the TICOS_MEMORY_API_KEY environment variable
    history_rounds = 12            # messages in session_config (ticos-client's history_conversation_length)
    every_rounds = 6               # a memory round every this many rounds (default: history_rounds // 2)
    prime = "user"                 # "off" (default), "user" or "system": what the voice agent is told
    prime_rounds = 0               # also the last this many rounds in that text

:class:`MemoryConfig` is a plain section (see :mod:`ticos_agent.options`). :func:`ticos_client_memory`
reads ticos-client's own files for :class:`~ticos_agent.client.TicosClient`: the keys
``model.enable_memory_generation``, ``model.history_conversation_length`` and
``model.memory_instructions`` of ``~/.config/ticos/config.toml`` and, laid over them, of the
``model`` object of ``~/.config/ticos/session_config`` (where ticos-client itself read every
``model.*`` key). A key the agent's own config sets wins over both.

Pure data and file reads; no I/O happens at import.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from ..options import DERIVED, Boolean, Choice, Duration, Integer, Invalid, Path, Secret, String, setting

log = logging.getLogger(__name__)

API_KEY_ENV = "TICOS_MEMORY_API_KEY"

DEFAULT_INSTRUCTIONS = (
    "You are the long-term memory of a companion robot. From the previous long-term memory and the latest "
    "conversation between the user and the robot (the assistant), write the new long-term memory: who the user "
    "is (name, age, family, friends, pets), what they like and dislike, their plans, promises made, and anything "
    "else worth remembering for future conversations. Keep what is still true from the previous memory, correct "
    "what changed, leave out small talk. Write short plain sentences in the user's language, at most 1500 "
    "characters. Answer with the memory text only."
)


class Url(String):
    """An ``http://`` or ``https://`` URL (``""``: none)."""

    def describe(self) -> str:
        return 'an http:// or https:// URL, e.g. "http://127.0.0.1:8080/v1" (empty for none)'

    def convert(self, value: Any) -> str | None:
        text = super().convert(value)
        if text is None:
            return None
        text = text.strip()
        if not text.startswith(("http://", "https://")) or len(text) <= len("https://") or " " in text:
            raise Invalid
        return text.rstrip("/")


@dataclass(frozen=True)
class MemoryConfig:
    """``[memory]``: summarising conversations into memories, priming the voice agent, session_config."""

    generation: str = setting(Choice(
        ("off", "client"), "off", "client: summarise every every_rounds rounds into a long_term memory through "
        "base_url (ticos-client's model.enable_memory_generation); off: no summaries"))
    base_url: str | None = setting(Url(
        "", "an OpenAI-compatible chat-completions server, the part before /chat/completions (llama.cpp, Ollama: "
        "http://127.0.0.1:11434/v1); without one, generation is off", optional=True))
    model: str | None = setting(String("", "the model name sent to that server", optional=True))
    api_key: str = setting(Secret("", f"sent as Authorization: Bearer ... (empty: ${API_KEY_ENV}, else none)"))
    history_rounds: int = setting(Integer(
        12, "messages kept in session_config's model.messages.nobody (ticos-client's "
        "model.history_conversation_length)", minimum=1, maximum=1000))
    every_rounds: int = setting(Integer(
        DERIVED, "a memory round (a summary) after this many rounds, a round being a user "
        "message and its answer (default: half of history_rounds)", minimum=1, maximum=1000, example=6))
    instructions: str = setting(String(
        DEFAULT_INSTRUCTIONS, "the summariser's system prompt (ticos-client's model.memory_instructions; "
        "{{latest_memory}} and {{conversation}} are filled in where they appear)", nonempty=True))
    timeout: float = setting(Duration(60.0, "seconds one summary request may take", minimum=0.1, maximum=3600))
    retries: int = setting(Integer(3, "attempts after a failed summary request, before the round gives up (its "
                                      "messages are taken by the next one)", minimum=0, maximum=20))
    retry_delay: float = setting(Duration(2.0, "seconds before the first retry; doubled for each next one",
                                          minimum=0.01, maximum=600))
    prime: str = setting(Choice(
        ("off", "user", "system"), "off", "tell each voice agent that connects what the robot remembers, as a "
        "conversation.item.create: user (an input_text message, as ticos-client did), system, or off"))
    prime_rounds: int = setting(Integer(0, "the last this many rounds also go into that text (0: none)",
                                        minimum=0, maximum=100))
    session_config: bool = setting(Boolean(
        True, "keep the voice agent's session_config current (model.messages.nobody), when storage is on: "
              "written at start, after a pause in the talk, when a voice agent's connection closes and at stop"))
    session_config_quiet: float = setting(Duration(
        20.0, "seconds without a new round before session_config is rewritten (also when a voice agent's "
              "connection closes, at stop, and at the latest 5 minutes after a round)", minimum=0.1, maximum=3600))
    session_config_path: str = setting(Path(
        "", "that file (empty: ~/.config/ticos/session_config; with storage on the TF card the card's copy is "
            "preferred at start)"))

    def __post_init__(self) -> None:
        if self.every_rounds is None:
            object.__setattr__(self, "every_rounds", max(1, self.history_rounds // 2))

    @property
    def key(self) -> str:
        """The API key to send: ``api_key``, else ``$TICOS_MEMORY_API_KEY``, else ``""``."""
        return self.api_key or os.environ.get(API_KEY_ENV, "")

    @property
    def session_file(self) -> FsPath:
        """Where the voice agent reads its session_config."""
        if self.session_config_path:
            return FsPath(self.session_config_path).expanduser()
        return ticos_dir() / "session_config"


def ticos_dir() -> FsPath:
    """ticos-client's own directory, ``~/.config/ticos`` (never the systemd state directory)."""
    return FsPath.home() / ".config" / "ticos"


#: ticos-client's ``model.*`` key -> the ``[memory]`` key it sets.
TICOS_KEYS = {"enable_memory_generation": "generation", "history_conversation_length": "history_rounds",
              "memory_instructions": "instructions"}


def ticos_client_memory(directory: FsPath | None = None) -> dict[str, Any]:
    """``[memory]`` values from ticos-client's files in ``directory`` (``~/.config/ticos``):
    ``config.toml``'s ``[model]`` table, then the ``model`` object of ``session_config`` over it.
    Missing files give nothing; an unreadable file or a wrong value is logged and skipped."""
    where = directory or ticos_dir()
    out: dict[str, Any] = {}
    for name, model in (("config.toml", _toml_model(where / "config.toml")),
                        ("session_config", _json_model(where / "session_config"))):
        for ticos_key, ours in TICOS_KEYS.items():
            if ticos_key not in model:
                continue
            value = _convert(ours, model[ticos_key])
            if value is None:
                log.warning("memory: %s: model.%s = %r is not usable; ignored", where / name, ticos_key,
                            model[ticos_key])
            else:
                out[ours] = value
    return out


def _convert(key: str, value: Any) -> Any:
    if key == "generation":
        return "client" if value == "client" else "off"  # "server", "", false: not this device's job
    if key == "history_rounds":
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000 else None
    return value if isinstance(value, str) and value.strip() else None


def _toml_model(path: FsPath) -> dict[str, Any]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("memory: cannot read %s: %s", path, exc)
        return {}
    import tomllib  # the parser loads only when there is a file to read

    with fh:
        try:
            doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            log.warning("memory: cannot read %s: %s", path, exc)
            return {}
    model = doc.get("model")
    return model if isinstance(model, dict) else {}


def _json_model(path: FsPath) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("memory: cannot read %s: %s", path, exc)
        return {}
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, dict) else {}
