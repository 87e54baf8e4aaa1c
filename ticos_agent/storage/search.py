"""Searching memories and messages: the query's words, the SQL, the ranking.

A query is reduced to its words (``\\w+``, any script, lower-cased, at most ``MAX_TERMS``)
and each word is quoted for FTS5, so no user text (``"name" OR (x``, ``*``, ``NEAR``,
``col:``) is ever read as FTS5 syntax; a query without a word is a :class:`BadMemory`.

Ranking (lower is better, as FTS5's ``bm25``), from ``-1.0`` (best) to ``0``. Memories found
through their index (every word first; when that finds fewer than asked, any word) carry
their ``bm25`` divided by the best one's, so the best memory ranks ``-1.0``. Messages are not
ranked by ``bm25``: FTS5 computes it from how many of all the rows hold each word, which on a
million messages means reading the whole list of a word such as "the" (tens of ms a word);
the index gives the newest messages holding the words (by rowid, which it seeks), and they
rank, as rows found by scanning do (``LIKE``: no index, or messages above the index's mark,
see :mod:`.fts`), by minus the share of the query's words they contain. Memories come before
messages on equal ranks, then the newest first. Only ``user`` and ``assistant`` messages are
searched.

Pure functions: SQL text and parameters, rows -> :class:`Hit`; the store runs them
(:mod:`.memories`), as ``ticos-agent memory`` does on a plain connection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import BadMemory
from ..memory.model import MAX_QUERY, Hit
from .fts import MEMORIES_FTS, MESSAGES_FTS

WORD = re.compile(r"\w+")
MAX_TERMS = 16
#: Messages a search considers from the index per requested hit (some are filtered out).
OVERFETCH = 3
SPEAKERS = "role IN ('user', 'assistant')"


def words(query: object) -> list[str]:
    """The words of ``query``, each once, lower-cased; :class:`BadMemory` when there are none."""
    if not isinstance(query, str):
        raise BadMemory(f"query must be text, not {type(query).__name__}", field="query")
    if len(query) > MAX_QUERY:
        raise BadMemory(f"query is {len(query)} characters long; at most {MAX_QUERY}", field="query")
    found = list(dict.fromkeys(w.lower() for w in WORD.findall(query)))
    if not found:
        raise BadMemory(f"query {query!r} has no word to search for", field="query")
    return found[:MAX_TERMS]


def match(terms: Sequence[str], any_word: bool = False) -> str:
    """An FTS5 query: every term quoted (a string, never syntax), all of them or any."""
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
    return (" OR " if any_word else " ").join(quoted)


def like(text: str) -> str:
    """A ``LIKE ... ESCAPE '\\'`` pattern finding ``text`` anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _likes(columns: Sequence[str], terms: Sequence[str], every: bool) -> tuple[str, list[Any]]:
    one = "(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in columns) + ")"
    clause = (" AND " if every else " OR ").join([one] * len(terms))
    return f"({clause})", [like(t) for t in terms for _ in columns]


# ----------------------------------------------------------------- memories

MEMORY_HIT = "id, type, content, datetime"


def memories_by_index(terms: Sequence[str], limit: int, any_word: bool) -> tuple[str, list[Any]]:
    sql = (f"SELECT m.id, m.type, m.content, m.datetime, bm25({MEMORIES_FTS}) AS r FROM {MEMORIES_FTS} "
           f"JOIN memories m ON m.id = {MEMORIES_FTS}.rowid WHERE {MEMORIES_FTS} MATCH ? ORDER BY r LIMIT ?")
    return sql, [match(terms, any_word), limit]


def memories_by_scan(terms: Sequence[str], limit: int, columns: Sequence[str]) -> tuple[str, list[Any]]:
    where, params = _likes(columns, terms, every=False)
    return f"SELECT {MEMORY_HIT} FROM memories WHERE {where} ORDER BY id DESC LIMIT ?", [*params, limit]


def memory_ids(terms: Sequence[str], indexed: bool, columns: Sequence[str]) -> tuple[str, list[Any]]:
    """Every memory containing all the words (what ``forget`` deletes)."""
    if indexed:
        return f"SELECT rowid FROM {MEMORIES_FTS} WHERE {MEMORIES_FTS} MATCH ?", [match(terms)]
    where, params = _likes(columns, terms, every=True)
    return f"SELECT id FROM memories WHERE {where}", params


# ----------------------------------------------------------------- messages

MESSAGE_HIT = "id, role, content, datetime, session_id"


#: The newest messages searched first, then ten times more, ...: a query whose words are in
#: many messages (common words, on a big database) ranks the newest ones only and stays fast;
#: rare words are looked up in the whole index (a few cheap queries).
FIRST_WINDOW = 4_000


def windows(total: int) -> list[int]:
    """The rowids to search above, newest window first, for an index of about ``total`` rows."""
    out, size = [], FIRST_WINDOW
    while size < total:
        out.append(total - size)
        size *= 10
    return out + [0]


def messages_by_index(terms: Sequence[str], limit: int, any_word: bool, above: int = 0) -> tuple[str, list[Any]]:
    """The newest messages above rowid ``above`` the index finds for the words (no ``bm25``:
    see the module docstring)."""
    sql = (f"SELECT m.id, m.role, m.content, m.datetime, m.session_id FROM "
           f"(SELECT rowid FROM {MESSAGES_FTS} WHERE {MESSAGES_FTS} MATCH ? AND rowid > ? "
           f"ORDER BY rowid DESC LIMIT ?) f JOIN messages m ON m.rowid = f.rowid WHERE m.{SPEAKERS}")
    return sql, [match(terms, any_word), above, limit * OVERFETCH * (4 if any_word else 1)]


def messages_by_scan(terms: Sequence[str], limit: int, above: int, select: str = MESSAGE_HIT
                     ) -> tuple[str, list[Any]]:
    """Messages above rowid ``above`` holding any of the words, newest first."""
    where, params = _likes(("content",), terms, every=False)
    return (f"SELECT {select} FROM messages WHERE rowid > ? AND {SPEAKERS} AND {where} "
            "ORDER BY rowid DESC LIMIT ?", [above, *params, limit])


def message_rowids(terms: Sequence[str], mark: int | None) -> list[tuple[str, list[Any]]]:
    """Every message containing all the words (``forget(messages=True)``): through the index
    up to ``mark``, by scanning above it (all of them without an index)."""
    where, params = _likes(("content",), terms, every=True)
    scan = (f"SELECT rowid FROM messages WHERE rowid > ? AND {where}", [mark or 0, *params])
    if mark is None:
        return [scan]
    return [(f"SELECT rowid FROM {MESSAGES_FTS} WHERE {MESSAGES_FTS} MATCH ?", [match(terms)]), scan]


# ----------------------------------------------------------------- hits

def scaled(rows: Sequence[Sequence[Any]], column: int) -> list[tuple[Sequence[Any], float]]:
    """Index hits with their ``bm25`` (in ``column``) scaled so the best is ``-1.0``; each row once."""
    seen: set[Any] = set()
    unique = [r for r in rows if not (r[0] in seen or seen.add(r[0]))]  # type: ignore[func-returns-value]
    best = min((float(r[column]) for r in unique), default=-1.0)
    scale = -best if best < 0 else 1.0
    return [(r, min(0.0, float(r[column]) / scale)) for r in unique]


def share(terms: Sequence[str], text: str | None) -> float:
    """A scanned row's rank: minus the share of the words it contains."""
    low = (text or "").lower()
    return -sum(1 for t in terms if t in low) / len(terms)


def memory_hit(row: Sequence[Any], rank: float) -> Hit:
    return Hit(source="memory", id=str(row[0]), text=str(row[2]), datetime=str(row[3]), rank=float(rank),
               kind=row[1])


def message_hit(row: Sequence[Any], rank: float) -> Hit:
    return Hit(source="message", id=str(row[0]), text=str(row[2]), datetime=str(row[3]), rank=float(rank),
               role=row[1], session_id=row[4])


def best(hits: Sequence[Hit], limit: int) -> list[Hit]:
    """``hits`` best first, each once: by rank, memories before messages, newest first."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for hit in hits:
        if (hit.source, hit.id) not in seen:
            seen.add((hit.source, hit.id))
            unique.append(hit)
    unique.sort(key=lambda h: (h.datetime or ""), reverse=True)
    unique.sort(key=lambda h: (h.rank, h.source != "memory"))
    return unique[:limit]
