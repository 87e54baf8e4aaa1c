"""Summarising messages into a long-term memory: an OpenAI-compatible chat-completions call.

:class:`ChatSummariser` posts to ``{base_url}/chat/completions``::

    {"model": ..., "messages": [{"role": "system", "content": <instructions>},
                                {"role": "user", "content": <previous memory and conversation>}],
     "stream": false}

with ``Authorization: Bearer <api_key>`` when a key is set, and answers the first choice's
``message.content`` (a leading ``<think>...</think>`` of a reasoning model removed). Any
failure (a connection refused or reset, a timeout, a status other than 200, a body that is
not the chat-completions shape, an empty answer) raises :class:`SummaryFailed`; retrying is
the caller's job (:mod:`.generation`).

The instructions may hold ticos-client's placeholders ``{{latest_memory}}`` and
``{{conversation}}``: each one present is filled in there and left out of the user message.

A :data:`Summariser` is anything called ``fn(messages, latest_memory)`` -> text (or an
awaitable of it): ``messages`` oldest first as ``{"id", "role", "content", "datetime"}``,
``latest_memory`` the previous long-term memory's text (``""`` for none).

Thread and timing: runs on the event loop (aiohttp); one request at a time per caller; each
request is bounded by ``timeout`` seconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from ..errors import TicosError

#: ``fn(messages, latest_memory) -> str`` (or an awaitable of it).
Summariser = Callable[[list[dict[str, Any]], str], str | Awaitable[str]]

MAX_ERROR_TEXT = 200
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.S)


class SummaryFailed(TicosError, RuntimeError):
    """The summariser gave no usable memory (the round keeps its messages for the next one)."""


def conversation_text(messages: Sequence[dict[str, Any]]) -> str:
    """``role: content`` lines, oldest first."""
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in messages if m.get("content"))


def prompt(instructions: str, messages: Sequence[dict[str, Any]], latest_memory: str) -> list[dict[str, str]]:
    """The chat messages of one summary request."""
    conversation = conversation_text(messages)
    system = instructions
    parts = []
    if "{{latest_memory}}" in system:
        system = system.replace("{{latest_memory}}", latest_memory)
    else:
        parts.append(f"Previous long-term memory:\n{latest_memory or '(none yet)'}")
    if "{{conversation}}" in system:
        system = system.replace("{{conversation}}", conversation)
    else:
        parts.append(f"Latest conversation:\n{conversation}")
    parts.append("Write the new long-term memory now.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def answer_of(body: Any) -> str:
    """The text of a chat-completions response body; raises :class:`SummaryFailed`."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise SummaryFailed(f"not a chat-completions answer: {_short(body)}") from None
    if not isinstance(content, str):
        raise SummaryFailed(f"the answer's content is {type(content).__name__}, not text")
    text = _THINK.sub("", content).strip()
    if not text:
        raise SummaryFailed("the answer is empty")
    return text


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."


class ChatSummariser:
    """The summariser of ``[memory] base_url``: one aiohttp session, closed by :meth:`close`."""

    def __init__(self, base_url: str, *, model: str | None, api_key: str, instructions: str, timeout: float):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.instructions = instructions
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, messages: list[dict[str, Any]], latest_memory: str) -> str:
        body: dict[str, Any] = {"messages": prompt(self.instructions, messages, latest_memory), "stream": False}
        if self.model:
            body["model"] = self.model
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(self.url, json=body, headers=self._headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    text = raw.decode("utf-8", "replace")
                    raise SummaryFailed(f"{self.url} answered {resp.status}: {_short(text)}")
        except TimeoutError:
            raise SummaryFailed(f"{self.url} gave no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise SummaryFailed(f"{self.url}: {type(exc).__name__}: {exc}") from None
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise SummaryFailed(f"{self.url} answered something that is not JSON: "
                                f"{_short(raw.decode('utf-8', 'replace'))}") from None
        return answer_of(parsed)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
