"""``ticos-agent inspect`` / ``export``: read a database offline, never changing it.

Point it at a TF card (``--tf-root /media/pi/CARD``) or a file (``--db``); with neither it
reads the internal database. ``inspect`` prints a readable table; ``export`` prints JSON
lines (messages, memories, calls), one object per line with a ``kind`` field.
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
    if args.tf_root:
        return Path(args.tf_root) / ".config" / "ticos" / "ticos.db"
    from .config import default_internal_dir

    return default_internal_dir() / "ticos.db"


def main(args) -> int:
    from .storage import open_readonly, read_calls, read_events, read_memories, read_messages

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
            for kind, rows in (("message", read_messages(conn, limit=args.limit, session_id=args.session)),
                               ("memory", read_memories(conn, limit=args.limit)),
                               ("call", read_calls(conn, limit=args.limit))):
                for row in reversed(rows):
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
