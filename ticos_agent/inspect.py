"""``ticos-agent inspect`` / ``export``: read a database offline, never changing it.

Point it at a TF card (``--tf-root /media/pi/CARD``) or a file (``--db``); with neither it
reads the internal database (``--config`` finds it as the agent would). ``inspect`` prints a
readable table; ``export`` prints every row as JSON lines (messages, memories, calls, and the
event log with ``--events``), oldest first, one object per line with a ``kind`` field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import StorageError


_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9,)} | {127: "\\x7f"}


def _safe(value) -> str:
    """Stored text comes from the network: never let it drive the terminal."""
    return str(value).translate(_CONTROL)


def _db_path(args) -> Path:
    if args.db:
        return Path(args.db)
    name = "ticos.db"
    if getattr(args, "config", None):
        from .config import load

        storage = load(args.config).storage
        name = storage.db_filename
        if not args.tf_root:
            if storage.mode == "external":
                root = storage.tf_root or _found_card()
                return Path(root) / ".config" / "ticos" / name
            if storage.dir:
                return Path(storage.dir) / name
    if args.tf_root:
        return Path(args.tf_root) / ".config" / "ticos" / name
    from .config import default_internal_dir

    return default_internal_dir() / name


def _found_card() -> str:
    from .storage import find_tf_root

    root = find_tf_root()
    if root is None:
        raise SystemExit("ticos-agent: no TF card mounted under /media or /mnt; give --tf-root or --db")
    return str(root)


def main(args) -> int:
    from .storage import (
        iter_calls, iter_events, iter_memories, iter_messages, open_readonly, read_calls, read_events,
        read_memories, read_messages,
    )

    path = _db_path(args)
    try:
        conn = open_readonly(path)
    except StorageError as exc:
        print(f"ticos-agent: {exc}", file=sys.stderr)
        return 1
    try:
        if conn.note:
            print(f"note: {conn.note}", file=sys.stderr)
        if args.command == "export":
            sources = [("message", iter_messages(conn, session_id=args.session)), ("memory", iter_memories(conn)),
                       ("call", iter_calls(conn))]
            if args.events:
                sources.append(("event", iter_events(conn, session_id=args.session)))
            for kind, rows in sources:
                for row in rows:
                    print(json.dumps({"kind": kind, **row}, ensure_ascii=False, default=str))
            return 0
        what = args.what
        if what == "messages":
            rows = list(reversed(read_messages(conn, limit=args.limit, session_id=args.session)))
            print(f"{path}: {len(rows)} message(s), oldest first")
            for r in rows:
                status = "" if r.get("status") in (None, "completed") else f" [{r['status']}]"
                print(f"{r['datetime']}  {_safe(r['role']):>9}: {_safe(r['content'])}{status}")
        elif what == "memories":
            for r in reversed(read_memories(conn, limit=args.limit)):
                print(f"{r['datetime']}  {_safe(r['type'])}: {_safe(r['content'])}")
        elif what == "calls":
            for r in reversed(read_calls(conn, limit=args.limit)):
                print(_safe(f"{r.get('created')}  {r['name']}({r.get('arguments')}) -> {r.get('status')} "
                            f"{r.get('result') or ''}"))
        elif what == "events":
            for r in reversed(read_events(conn, limit=args.limit, session_id=args.session)):
                print(_safe(f"{r.get('ts')}  {r.get('type')}  session={r.get('session_id')} "
                            f"item={r.get('item_id')} response={r.get('response_id')}"))
        elif what == "sessions":
            try:
                rows = conn.execute(
                    "SELECT session_id, COUNT(*), MIN(datetime), MAX(datetime) FROM messages "
                    "GROUP BY session_id ORDER BY MIN(rowid)").fetchall()
            except Exception:  # a ticos-client database has no session column
                rows = [(None,) + tuple(conn.execute("SELECT COUNT(*), MIN(datetime), MAX(datetime) FROM messages").fetchone())]
            for sid, count, first, last in rows:
                print(_safe(f"{sid or '(none)'}: {count} message(s) {first} .. {last}"))
        return 0
    finally:
        conn.close()
