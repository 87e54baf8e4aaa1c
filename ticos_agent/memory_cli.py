"""``ticos-agent memory export|import|forget``: move a robot's memories to another card or
robot, or forget them all.

* ``export [--conversations] [--output FILE]``: one JSON document, ``{"format":
  "ticos-agent-memory", "version": 1, "schema": <the database's schema version>,
  "exported": <local time>, "memories": [...], "messages": [...]}`` (``messages`` only with
  ``--conversations``), every field of each memory (:class:`~.memory.model.Memory`'s names),
  oldest first, streamed row by row. Read-only: the database is opened as ``inspect`` opens
  it (:func:`~.storage.open_readonly`), so a card is never changed. ``--output`` is created
  0600.
* ``import FILE``: adds what the database does not have yet. A memory is the same when its
  kind, content, user and time are; a message when its id, role, time and content are (a
  different message with the same id is stored as ``<id>-imported``). Importing twice adds
  nothing. The whole file is checked before anything is written; a file from a newer
  format version (or not a memory export at all) is refused with one line and exit code 2.
  Rows go in by ``IMPORT_CHUNK`` per transaction, so a running agent's writer waits at most
  one short transaction (WAL, ``busy_timeout``): importing while the agent runs is safe (its
  search finds the rows; messages reach its word index with its next index step).
* ``forget --all [--conversations] --yes``: deletes every memory (and with
  ``--conversations`` every message) the way ``Store.forget`` does (``secure_delete``, the
  index optimised, the memory tools' calls cleared, the WAL truncated). Without ``--yes`` it
  refuses with a hint (exit 2). Safe while the agent runs, for the same reason.

Where: ``--db PATH``, ``--tf-root DIR`` (``<DIR>/.config/ticos/<db_filename>``), ``--config``
(the database the agent with that config uses), else the internal database. Exit codes: 0
done, 1 the database cannot be read or written, 2 a bad argument or file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

FORMAT = "ticos-agent-memory"
FORMAT_VERSION = 1
IMPORT_CHUNK = 500
MESSAGE_FIELDS = ("id", "role", "content", "item_id", "user_id", "datetime", "session_id", "status", "response_id")


class Refused(Exception):
    """A one-line reason; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    for name, text in (("export", "write memories (and --conversations) as JSON"),
                       ("import", "add the memories (and messages) of an export; twice adds nothing"),
                       ("forget", "delete every memory (--all --yes)")):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("--config", "-c", help="the database the agent with this config uses")
        q.add_argument("--db", metavar="PATH", help="a database file")
        q.add_argument("--tf-root", metavar="DIR", help="a TF card's root (<DIR>/.config/ticos/ticos.db)")
        if name == "export":
            q.add_argument("--conversations", action="store_true", help="also export every message")
            q.add_argument("--output", "-o", metavar="FILE", help="write to FILE (created 0600) instead of stdout")
        elif name == "import":
            q.add_argument("file", metavar="FILE", help="an export ('-': standard input)")
        else:
            q.add_argument("--all", action="store_true", help="every memory (required: forgetting by query is "
                                                              "the voice agent's forget tool)")
            q.add_argument("--conversations", action="store_true", help="also every message")
            q.add_argument("--yes", action="store_true", help="do it without asking")


def main(args: argparse.Namespace) -> int:
    try:
        path = database(args)
        if args.action == "export":
            return export(path, args.conversations, args.output)
        if args.action == "import":
            return import_file(path, args.file)
        return forget_all(path, bool(args.all), bool(args.yes), bool(args.conversations))
    except Refused as exc:
        print(f"ticos-agent memory {args.action}: {exc}", file=sys.stderr)
        return exc.code


def database(args: argparse.Namespace) -> Path:
    """The database ``--db``, ``--tf-root`` or ``--config`` name (else the internal one)."""
    from .storage.location import DEFAULT_DB_FILENAME, card_db_path, find_tf_root

    if getattr(args, "db", None):
        return Path(args.db).expanduser()
    name, mode, internal, tf_root = DEFAULT_DB_FILENAME, "internal", None, None
    if getattr(args, "config", None):
        from .config import ConfigErrors, load

        try:
            storage = load(args.config).storage
        except ConfigErrors as exc:
            raise Refused(str(exc).splitlines()[0]) from None
        name, mode = str(storage.db_filename), str(storage.mode)
        internal, tf_root = storage.dir, storage.tf_root
    if getattr(args, "tf_root", None):
        return card_db_path(Path(args.tf_root).expanduser(), name)
    if mode == "external":
        root = Path(tf_root) if tf_root else find_tf_root()
        if root is None:
            raise Refused("storage.mode is external and no TF card is mounted: give --tf-root or --db", 1)
        return card_db_path(root, name)
    from .config import default_internal_dir

    return Path(internal or default_internal_dir()) / name


# ----------------------------------------------------------------- export

def export(path: Path, conversations: bool, output: str | None) -> int:
    from .errors import StorageError
    from .storage import iter_memories, iter_messages, open_readonly
    from .storage.memories import FIELD_COLUMNS
    from .storage.schema import current_version

    if not path.is_file():
        raise Refused(f"no database at {path}", 1)
    try:
        conn = open_readonly(path)
    except StorageError as exc:
        raise Refused(str(exc), 1) from None
    try:
        out = _open_output(output, path)
        try:
            head = {"format": FORMAT, "version": FORMAT_VERSION, "schema": current_version(conn),
                    "exported": _now(), "database": str(path)}
            out.write(json.dumps(head, ensure_ascii=False)[:-1])
            _array(out, "memories", ({k: row.get(col) for k, col in FIELD_COLUMNS.items()}
                                     for row in iter_memories(conn)))
            if conversations:
                _array(out, "messages", ({k: row.get(k) for k in MESSAGE_FIELDS} for row in iter_messages(conn)))
            out.write("}\n")
        finally:
            if out is not sys.stdout:
                out.close()
    except OSError as exc:
        raise Refused(f"cannot write {output}: {exc.strerror or exc}", 1) from None
    finally:
        conn.close()
    return 0


def _array(out: IO[str], name: str, rows: Iterator[dict[str, Any]]) -> None:
    out.write(f', "{name}": [')
    for i, row in enumerate(rows):
        out.write(("," if i else "") + "\n  " + json.dumps(row, ensure_ascii=False))
    out.write("\n]")


def _open_output(output: str | None, db: Path) -> IO[str]:
    if not output or output == "-":
        return sys.stdout
    target = Path(output).expanduser()
    if target.resolve() in {db.resolve(), *(Path(str(db) + s).resolve() for s in ("-wal", "-shm", "-journal"))}:
        raise Refused(f"--output {output} is the database being read")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a file that was there keeps no wider mode
    except OSError:
        pass
    return os.fdopen(fd, "w", encoding="utf-8")


def _now() -> str:
    from .storage.schema import now_local

    return now_local()


# ----------------------------------------------------------------- import

def read_export(file: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The memories and messages of an export, checked; :class:`Refused` says what is wrong."""
    from .errors import BadMemory
    from .storage.memories import check_memory

    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise Refused(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise Refused(f"{file} is not UTF-8 text (not a memory export)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused(f"{file} is not JSON ({exc.msg} at line {exc.lineno}): not a memory export") from None
    try:  # a lone surrogate is a valid JSON escape, but no text SQLite can store
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(f"{file} holds a lone surrogate (a \\ud800-\\udfff escape): not text that can be stored"
                      ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise Refused(f"{file} is not a ticos-agent memory export (no \"format\": \"{FORMAT}\")")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise Refused(f"{file} has no valid format version ({version!r})")
    if version > FORMAT_VERSION:
        raise Refused(f"{file} is format version {version}, newer than this ticos-agent reads ({FORMAT_VERSION}): "
                      "update ticos-agent to import it")
    memories, messages = doc.get("memories", []), doc.get("messages", [])
    if not isinstance(memories, list) or not isinstance(messages, list):
        raise Refused(f"{file}: \"memories\" and \"messages\" must be lists")
    for i, m in enumerate(memories):
        if not isinstance(m, dict):
            raise Refused(f"{file}: memories[{i}] is not an object")
        kind = m.get("kind")
        try:  # ticos-client's own short_term memories come along as they are
            check_memory("fact" if kind == "short_term" else kind, m.get("content"),
                         confidence=m.get("confidence"), importance=m.get("importance"),
                         **{k: m.get(k) for k in ("subject", "key", "value", "title", "source", "user_id")})
        except BadMemory as exc:
            raise Refused(f"{file}: memories[{i}]: {exc}") from None
        if not isinstance(m.get("datetime"), str):
            raise Refused(f"{file}: memories[{i}]: datetime must be text")
    for i, row in enumerate(messages):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("id", "role", "datetime")) \
                or not isinstance(row.get("content"), str):
            raise Refused(f"{file}: messages[{i}] needs id, role, content and datetime as text")
    return memories, messages


def import_file(path: Path, file: str) -> int:
    memories, messages = read_export(file)
    try:
        conn = _open_writable(path)
    except (sqlite3.Error, OSError) as exc:
        raise Refused(f"cannot open {path}: {exc}", 1) from None
    try:
        added_m = _import_memories(conn, memories)
        added_c = _import_messages(conn, messages)
    except (sqlite3.Error, ValueError) as exc:
        raise Refused(f"writing {path} failed: {exc} (what was added before stays; importing again adds the rest)",
                      1) from None
    finally:
        conn.close()
    print(f"imported {added_m} of {len(memories)} memories and {added_c} of {len(messages)} messages into {path} "
          f"({len(memories) - added_m + len(messages) - added_c} were there already)")
    return 0


def _open_writable(path: Path) -> sqlite3.Connection:
    from .storage import fts, schema
    from .storage.connection import create_private_file, make_private_dirs

    make_private_dirs(path.parent)
    create_private_file(path, tighten=False)
    schema.prepare(str(path))
    conn = sqlite3.connect(path, isolation_level=None, timeout=schema.BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
    fts.ensure_index(conn)
    return conn


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), IMPORT_CHUNK):
        yield rows[i:i + IMPORT_CHUNK]


def _import_memories(conn: sqlite3.Connection, memories: list[dict[str, Any]]) -> int:
    from .storage.memories import REMEMBER_FIELDS, SQL_REMEMBER

    same = "SELECT 1 FROM memories WHERE type = ? AND content = ? AND user_id IS ? AND datetime = ? LIMIT 1"
    added = 0
    for chunk in _chunks(memories):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for m in chunk:
                user = m.get("user_id") or "nobody"
                if conn.execute(same, (m["kind"], m["content"], user, m["datetime"])).fetchone():
                    continue
                conn.execute(SQL_REMEMBER, [user if f == "user_id" else m.get(f) for f in REMEMBER_FIELDS])
                added += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return added


def _import_messages(conn: sqlite3.Connection, messages: list[dict[str, Any]]) -> int:
    from .storage.writes import SQL_ADD_MESSAGE

    added = 0
    for chunk in _chunks(messages):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for row in chunk:
                values = [row.get(k) for k in MESSAGE_FIELDS]
                values[4] = values[4] or "nobody"
                for mid in (row["id"], f"{row['id']}-imported"):
                    there = conn.execute("SELECT role, datetime, content FROM messages WHERE id = ?",
                                         (mid,)).fetchone()
                    if there is None:
                        conn.execute(SQL_ADD_MESSAGE, [mid, *values[1:]])
                        added += 1
                        break
                    if tuple(there) == (row["role"], row["datetime"], row["content"]):
                        break  # imported before
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return added


# ----------------------------------------------------------------- forget

def forget_all(path: Path, everything: bool, yes: bool, conversations: bool) -> int:
    if not everything:
        raise Refused("say what to forget: --all (every memory; add --conversations for every message too)")
    if not path.is_file():
        raise Refused(f"no database at {path}", 1)
    if not yes:
        what = "every memory" + (" and every message" if conversations else "")
        raise Refused(f"this deletes {what} in {path} for good; add --yes to do it")
    return asyncio.run(_forget(path, conversations))


async def _forget(path: Path, conversations: bool) -> int:
    from .errors import StorageError
    from .storage import open_store

    try:
        store = await open_store("internal", internal_dir=path.parent, db_filename=path.name,
                                 event_retention_days=None)
    except StorageError as exc:
        raise Refused(str(exc), 1) from None
    try:
        gone = await store.forget(everything=True, messages=conversations)
    except StorageError as exc:
        raise Refused(str(exc), 1) from None
    finally:
        await store.close()
    print(f"forgot {gone} {'memories and messages' if conversations else 'memories'} in {path}")
    return 0
