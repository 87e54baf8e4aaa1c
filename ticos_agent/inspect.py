"""``ticos-agent inspect`` / ``export``: read a database offline, never changing it.

Point it at a TF card (``--tf-root /media/pi/CARD``) or a file (``--db``); with neither it
reads the internal database (``--config`` finds it as the agent would). ``inspect`` prints a
readable table; ``export`` prints every row as JSON lines (messages, memories, calls, and the
event log with ``--events``), oldest first, one object per line with a ``kind`` field.

The card's fallback: in EXTERNAL mode, rows the card could not take (it was missing, full,
read-only, pulled out) wait in ``<internal dir>/ticos-fallback.db`` until the agent merges
them into the card. When the card is read (``--tf-root``, or ``--config`` with
``mode = "external"``) and that file holds rows, both are read: a first line says how many
rows wait there, ``inspect`` marks each row ``card`` or ``fallback``, and ``export`` gives
each row a ``source`` field (``card``/``fallback``). ``--fallback PATH`` (when the command
line offers it) names the fallback file explicitly, also next to ``--db``. Reading the
internal database, a fallback file with rows next to it is mentioned in a note.
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


def _internal_dir(args) -> Path:
    if getattr(args, "config", None):
        from .config import load

        storage = load(args.config).storage
        if storage.dir:
            return Path(storage.dir)
    from .config import default_internal_dir

    return default_internal_dir()


def _sources(args) -> tuple[Path | None, str, Path | None, bool]:
    """(main database or None, its label, fallback database or None, whether the fallback is
    read with it (else only mentioned))."""
    from .storage.location import fallback_path

    explicit = getattr(args, "fallback", None)
    if args.db:
        return Path(args.db), "file", Path(explicit) if explicit else None, bool(explicit)
    name, card, root = "ticos.db", bool(args.tf_root), args.tf_root
    if getattr(args, "config", None):
        from .config import load

        storage = load(args.config).storage
        name = storage.db_filename
        if not card and storage.mode == "external":
            card, root = True, storage.tf_root or _found_card()
    internal = _internal_dir(args)
    fallback = Path(explicit) if explicit else fallback_path(internal, name)
    if card:
        main = Path(root) / ".config" / "ticos" / name if root else None
        return main, "card", fallback, True
    return internal / name, "internal", fallback, bool(explicit)


def _found_card() -> str | None:
    from .storage import find_tf_root

    root = find_tf_root()
    if root is None:
        print("note: no TF card mounted under /media or /mnt (give --tf-root or --db)", file=sys.stderr)
        return None
    return str(root)


def _open_fallback(path: Path | None, required: bool):
    """The fallback database read-only, or ``None`` when there is none (or it is empty)."""
    from .storage import open_readonly

    if path is None or (not required and not path.is_file()):
        return None
    return open_readonly(path)


def _counts(conn) -> dict[str, int]:
    from .storage.merge import count_rows

    return count_rows(conn)


def _summary(path: Path, counts: dict[str, int]) -> str:
    detail = ", ".join(f"{k} {v}" for k, v in counts.items())
    return f"fallback {path}: {sum(counts.values())} row(s) not yet merged into the TF card ({detail})"


def main(args) -> int:
    main_path, label, fallback, read_fallback = _sources(args)
    conns: list[tuple[str, object]] = []
    try:
        try:
            if main_path is not None and (main_path.is_file() or args.db or not read_fallback):
                from .storage import open_readonly

                conns.append((label, open_readonly(main_path)))
            fb = _open_fallback(fallback, required=read_fallback and bool(getattr(args, "fallback", None)))
        except StorageError as exc:
            print(f"ticos-agent: {exc}", file=sys.stderr)
            return 1
        if fb is not None:
            counts = _counts(fb)
            if not read_fallback:
                if sum(counts.values()):
                    print(f"note: {_summary(fallback, counts)}; read them with --tf-root or --config",
                          file=sys.stderr)
                fb.close()
            elif sum(counts.values()) or not conns:
                out = sys.stderr if args.command == "export" else sys.stdout
                print(("note: " if out is sys.stderr else "") + _summary(fallback, counts), file=out)
                conns.append(("fallback", fb))
            else:
                fb.close()
        if not conns:
            if main_path is None:
                print("ticos-agent: no TF card mounted under /media or /mnt and no rows in its fallback "
                      f"{fallback}; give --tf-root or --db", file=sys.stderr)
            else:
                print(f"ticos-agent: cannot open database {main_path} read-only: no such file", file=sys.stderr)
            return 1
        for _, conn in conns:
            if conn.note:
                print(f"note: {conn.note}", file=sys.stderr)
        return _show(args, conns, main_path if conns[0][0] != "fallback" else fallback)
    finally:
        for _, conn in conns:
            conn.close()


def _show(args, conns, path) -> int:
    from .storage import (
        iter_calls,
        iter_events,
        iter_memories,
        iter_messages,
        read_calls,
        read_events,
        read_memories,
        read_messages,
    )

    tagged = len(conns) > 1

    def tag(source: str) -> str:
        return f"{source:<8}  " if tagged else ""

    def rows(read, key, **kw) -> list[tuple[str, dict]]:
        """Each source's newest ``limit`` rows, together, oldest first, the newest ``limit`` kept."""
        out = []
        for source, conn in conns:
            out += [(source, r) for r in reversed(read(conn, limit=args.limit, **kw))]
        if key == "ts":
            out.sort(key=lambda sr: float(sr[1].get(key) or 0))  # stable: the card's first at a tie
        else:
            out.sort(key=lambda sr: str(sr[1].get(key) or ""))
        return out[-args.limit:] if args.limit > 0 else []

    if args.command == "export":
        for kind, read in (("message", lambda c: iter_messages(c, session_id=args.session)),
                           ("memory", iter_memories), ("call", iter_calls)) + (
                (("event", lambda c: iter_events(c, session_id=args.session)),) if args.events else ()):
            for source, conn in conns:
                for row in read(conn):
                    extra = {"source": source} if tagged else {}
                    print(json.dumps({"kind": kind, **extra, **row}, ensure_ascii=False, default=str))
        return 0
    what = args.what
    if what == "messages":
        shown = rows(read_messages, "datetime", session_id=args.session)
        where = " + fallback" if tagged else ""
        print(f"{path}{where}: {len(shown)} message(s), oldest first")
        for source, r in shown:
            status = "" if r.get("status") in (None, "completed") else f" [{r['status']}]"
            print(f"{r['datetime']}  {tag(source)}{_safe(r['role']):>9}: {_safe(r['content'])}{status}")
    elif what == "memories":
        for source, r in rows(read_memories, "datetime"):
            print(f"{r['datetime']}  {tag(source)}{_safe(r['type'])}: {_safe(r['content'])}")
    elif what == "calls":
        for source, r in rows(read_calls, "created"):
            print(tag(source) + _safe(f"{r.get('created')}  {r['name']}({r.get('arguments')}) -> "
                                      f"{r.get('status')} {r.get('result') or ''}"))
    elif what == "events":
        for source, r in rows(read_events, "ts", session_id=args.session):
            print(tag(source) + _safe(f"{r.get('ts')}  {r.get('type')}  session={r.get('session_id')} "
                                      f"item={r.get('item_id')} response={r.get('response_id')}"))
    elif what == "sessions":
        for source, conn in conns:
            try:
                found = conn.execute(
                    "SELECT session_id, COUNT(*), MIN(datetime), MAX(datetime) FROM messages "
                    "GROUP BY session_id ORDER BY MIN(rowid)").fetchall()
            except Exception:  # a ticos-client database has no session column
                found = [(None,) + tuple(conn.execute(
                    "SELECT COUNT(*), MIN(datetime), MAX(datetime) FROM messages").fetchone())]
            for sid, count, first, last in found:
                print(tag(source) + _safe(f"{sid or '(none)'}: {count} message(s) {first} .. {last}"))
    return 0
