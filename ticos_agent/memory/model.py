"""The memory vocabulary and :class:`MemoryStore`, what memory code needs of the store.

Pure data; nothing here touches SQLite. Three kinds of memory share ticos-client's table
``memories(id, type, content, user_id, datetime)`` (``type`` holds the kind), so code that
only knows those columns still reads every row:

* ``long_term``: a summary of the conversations so far (ticos-client's only kind);
* ``fact``: one thing about someone (``subject`` "user", ``key`` "name", ``value`` "Lin",
  ``confidence`` 0..1, ``source`` the message it came from);
* ``episode``: a titled moment (``title``, ``importance`` 0..1, its time in ``datetime``).

``content`` is always the readable sentence ("The user's name is Lin."); the other fields
are optional refinements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, TypedDict, Unpack

KINDS = ("long_term", "fact", "episode")
Kind = Literal["long_term", "fact", "episode"]
MAX_CONTENT = 4000  # characters of one memory's content
MAX_FIELD = 200  # characters of subject, key, value, title, source, user_id
MAX_QUERY = 500  # characters of a search or forget query


@dataclass(frozen=True)
class Memory:
    """One stored memory (a row of ``memories``)."""

    id: int
    kind: str
    content: str
    datetime: str  # local time, ticos-client's "%Y-%m-%d %H:%M:%S"
    user_id: str = "nobody"
    subject: str | None = None
    key: str | None = None
    value: str | None = None
    confidence: float | None = None
    importance: float | None = None
    title: str | None = None
    source: str | None = None  # the id of the message it came from

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    """A search result: a memory or a message, best first by ``rank`` (lower is better)."""

    source: Literal["memory", "message"]
    id: str
    text: str
    datetime: str
    rank: float
    kind: str | None = None  # a memory's kind
    role: str | None = None  # a message's role
    session_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class MemoryFields(TypedDict, total=False):
    """A memory's fields besides its kind and content, as :meth:`MemoryStore.remember` takes them
    (``user_id`` is ``"nobody"`` when not given)."""

    subject: str | None
    key: str | None
    value: str | None
    confidence: float | None
    importance: float | None
    title: str | None
    source: str | None
    user_id: str


class MemoryStore(Protocol):
    """What the memory parts (tools, API, generation, priming, session_config) need of the
    store. Every method runs on the event loop and never blocks it; a write returns once it
    is committed. Raises :class:`~ticos_agent.errors.StorageError` when the store cannot."""

    async def remember(self, kind: str, content: str, **fields: Unpack[MemoryFields]) -> Memory: ...

    async def recall(self, query: str, *, limit: int = 5, messages: bool = True, memories: bool = True
                     ) -> list[Hit]:
        """Memories (unless ``memories`` is false) and messages (unless ``messages`` is false)
        matching ``query``, best first."""
        ...

    async def forget(self, *, query: str | None = None, ids: Sequence[int] = (), everything: bool = False) -> int:
        """Delete the memories matching ``query``, with these ids, or all; returns how many."""
        ...

    async def latest_memory(self, kind: str = "long_term") -> Memory | None: ...

    async def facts(self, limit: int = 50) -> list[Memory]:
        """The newest facts, newest first."""
        ...

    async def recent_messages(self, count: int) -> list[dict[str, Any]]:
        """The last ``count`` finished user/assistant messages, oldest first, as
        ``{"id", "role", "content", "datetime"}``."""
        ...

    async def unsummarised(self, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` finished messages not yet taken into a ``long_term`` memory, oldest
        first (as :meth:`recent_messages`), and the mark to pass to :meth:`mark_summarised`
        once they are (``None`` when there are none). The mark survives a restart."""
        ...

    async def mark_summarised(self, upto: int) -> None: ...
