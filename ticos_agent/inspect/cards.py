"""Which databases to read, under which labels, opened read-only.

A *card* is what one set of results comes under: one database (a TF card's, a file given with
``--db``, or the internal one; on a robot's system card, the service's ``var/lib/ticos`` one
and users' ``home/*/.config/ticos`` ones, each a card of its own; with nothing named and no
internal database, every card mounted under ``/media`` or ``/mnt`` holding one) and, while
rows wait there, the fallback database that holds
what the card could not take (read together with it, each row marked ``card`` or
``fallback``). ``--tf-root`` and ``--db`` may be given several times, and either may name a
folder holding several cards' mount points (``/media/pi`` with ``CARD1/`` and ``CARD2/``):
each card found there is read. A card is labelled by its volume label, else its folder name.

The fallback (``<internal dir>/ticos-fallback.db``, or ``--fallback PATH``): with one card it
is read with the card; with several it is shown as a card of its own (it cannot say which
card its rows wait for); reading the internal database, waiting rows are only mentioned.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StorageError
from ..storage.finder import Finder
from ..storage.location import DEFAULT_DB_FILENAME

if TYPE_CHECKING:
    from ..config import StorageConfig
from ..storage.reader import ReadonlyConnection
from .clock import Clock, learn
from .options import Options


@dataclass
class Source:
    """One open database of a card: ``name`` is ``card``, ``file``, ``internal`` or ``fallback``."""

    name: str
    path: Path
    conn: ReadonlyConnection
    finder: Finder


@dataclass
class Card:
    label: str
    path: Path | None
    sources: list[Source] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)
    info: list[str] = field(default_factory=list)   # said to everyone (rows waiting in a fallback)
    notes: list[str] = field(default_factory=list)  # said with --verbose (how it was opened)

    @property
    def tagged(self) -> bool:
        """Rows come from more than one database: each says which."""
        return len(self.sources) > 1

    def close(self) -> None:
        for source in self.sources:
            source.conn.close()
        self.sources.clear()


@dataclass
class _Target:
    path: Path | None
    kind: str  # card | file | internal
    root: Path | None = None
    missing_ok: bool = False


class Problem(Exception):
    """A card that cannot be read: the message is the one-line error."""


def _config_storage(opts: Options) -> StorageConfig:
    from ..config import load

    return load(opts.config).storage


def internal_dir(opts: Options) -> Path:
    if opts.config:
        return _config_storage(opts).internal_dir
    from ..config import default_internal_dir

    return default_internal_dir()


def _db_name(opts: Options) -> str:
    return str(_config_storage(opts).db_filename) if opts.config else DEFAULT_DB_FILENAME


def _on_card(root: Path, name: str) -> list[Path]:
    """The databases on a card: the TF card's ``.config/ticos/<name>``; on a robot's system
    card (its root filesystem), the service's ``var/lib/ticos/<name>`` and users'
    ``home/*/.config/ticos/<name>`` (internal storage, as ticos-client kept it)."""
    direct = root / ".config" / "ticos" / name
    if direct.is_file():
        return [direct]
    folders = [root / "var" / "lib" / "ticos"]
    try:
        folders += sorted((root / "home").glob("*/.config/ticos"))
    except OSError:
        pass
    folders.append(root / "root" / ".config" / "ticos")
    stem, dot, ext = name.rpartition(".")
    spare = f"{stem}-fallback{dot}{ext}" if dot else f"{name}-fallback"
    return [f / n for f in folders for n in (name, spare) if (f / n).is_file()]


def _card_targets(root: Path, name: str) -> list[_Target]:
    """``root`` is a card (its database is there), or a folder holding cards' mount points."""
    db = root / ".config" / "ticos" / name
    here = _on_card(root, name) if root.is_dir() else []
    if here or not root.is_dir():
        return [_Target(p, "card", root, missing_ok=p == db) for p in here] or [_Target(db, "card", root, True)]
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        children = []
    found = [_Target(p, "card", c) for c in children for p in _on_card(c, name)]
    return found or [_Target(db, "card", root, missing_ok=True)]


MOUNTS = "/proc/self/mounts"
CARD_PARENTS = ("/media/", "/mnt/")


def _mounted_cards(name: str) -> list[_Target]:
    """Cards mounted under ``/media``, ``/mnt`` (or macOS's ``/Volumes``) holding a database."""
    points: list[Path] = []
    try:
        for line in Path(MOUNTS).read_text().splitlines():
            fields = line.split()
            point = _unescape(fields[1]) if len(fields) > 1 else ""
            if point.startswith(CARD_PARENTS):
                points.append(Path(point))
    except OSError:
        volumes = Path("/Volumes")
        points = sorted(p for p in volumes.iterdir() if p.is_dir()) if volumes.is_dir() else []
    return [_Target(p, "card", root) for root in points for p in _on_card(root, name)]


def _targets(opts: Options) -> list[_Target]:
    name = _db_name(opts)
    targets: list[_Target] = []
    for db in opts.dbs:
        path = Path(db).expanduser()
        if path.is_dir():
            direct = path / name
            targets += [_Target(direct, "file")] if direct.is_file() else _card_targets(path, name)
        else:
            targets.append(_Target(path, "file"))
    for given in opts.tf_roots:
        targets += _card_targets(Path(given).expanduser(), name)
    if targets:
        return targets
    if opts.config and _config_storage(opts).mode == "external":
        root = _config_storage(opts).tf_root or _found_card(opts)
        if root is None:
            return [_Target(None, "card")]
        return _card_targets(Path(root), name)
    internal = internal_dir(opts) / name
    if not internal.is_file() and not opts.config:  # a laptop with a card in it: read the card
        found = _mounted_cards(name)
        if found:
            return found
    return [_Target(internal, "internal")]


def _found_card(opts: Options) -> str | None:
    from .. import storage

    root = storage.find_tf_root()
    if root is None:
        if opts.verbose:
            print("note: no TF card mounted under /media or /mnt (give --tf-root or --db)", file=sys.stderr)
        return None
    return str(root)


# --- labels -------------------------------------------------------------------------------

def _unescape(text: str) -> str:
    text = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _mount_of(path: Path) -> tuple[str, str] | None:
    """(mount point, source device) of the filesystem holding ``path`` (Linux only)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best: tuple[str, str] | None = None
    for line in lines:
        parts = line.split()
        if "-" not in parts or len(parts) < 5:
            continue
        point = _unescape(parts[4])
        source = parts[parts.index("-") + 2] if len(parts) > parts.index("-") + 2 else ""
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, source)
    return best


def volume_label(path: Path) -> str | None:
    """The volume label of the removable filesystem holding ``path``, when it has one."""
    mount = _mount_of(path)
    if mount is None or mount[0] == "/" or not mount[1].startswith("/dev/"):
        return None
    device = os.path.realpath(mount[1])
    try:
        for link in Path("/dev/disk/by-label").iterdir():
            if os.path.realpath(link) == device:
                return _unescape(link.name)
    except OSError:
        pass
    for probe in ([], ["-p"]):  # no udev (a container, a loop device): blkid reads the superblock
        try:
            done = subprocess.run(["blkid", *probe, "-s", "LABEL", "-o", "value", device], capture_output=True,
                                  text=True, timeout=3)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.stdout.strip():
            return done.stdout.strip()
    return None


def _folder_label(t: _Target) -> str:
    if t.root is not None:
        label = t.root.resolve().name or str(t.root)
        if t.path is not None and t.path.parent.is_relative_to(t.root):  # a system card: whose database
            parts = t.path.parent.relative_to(t.root).parts
            parts = parts[:-2] if parts[-2:] == (".config", "ticos") else parts
            where = "/".join(parts) + (" fallback" if t.path.stem.endswith("-fallback") else "")
            label += f" ({where.strip()})" if where.strip() else ""
        return label
    assert t.path is not None
    parts = t.path.resolve().parts
    if len(parts) >= 4 and parts[-3:-1] == (".config", "ticos"):
        return parts[-4] or "/"
    return t.path.name


def _labels(targets: list[_Target]) -> list[str]:
    labels = []
    for t in targets:
        if t.kind == "internal":
            labels.append("internal")
            continue
        where = t.root if t.root is not None else t.path
        label = volume_label(where) if where is not None and where.exists() else None
        labels.append(label or (_folder_label(t) if t.path is not None else "card"))
    for i, label in enumerate(labels):  # the same label twice (two "rootfs" cards): add the folder
        if labels.count(label) > 1 and targets[i].path is not None:
            folder = _folder_label(targets[i])
            labels[i] = label if folder == label else f"{label} ({folder})"
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


# --- opening ------------------------------------------------------------------------------

def recovered_cache() -> Path:
    """Where recovered copies of cards left with -wal/-shm files are kept (this computer's
    cache, never the card): the next look at an unchanged card needs no new copy."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ticos-agent" / "recovered"


def open_source(name: str, path: Path) -> Source:
    from ..storage import open_readonly

    try:
        conn = open_readonly(path, cache=recovered_cache())
    except StorageError as exc:
        raise Problem(str(exc)) from None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except Exception as exc:
        conn.close()
        raise Problem(f"cannot read database {path}: {exc}") from None
    if not tables & {"messages", "memories"}:
        conn.close()
        raise Problem(f"{path} is not a ticos-agent or ticos-client database (no messages table)")
    return Source(name, path, conn, Finder(conn))


def _rows_waiting(source: Source) -> dict[str, int]:
    from ..storage.merge import count_rows

    return count_rows(source.conn)


def _waiting(path: Path, counts: dict[str, int]) -> str:
    detail = ", ".join(f"{k} {v}" for k, v in counts.items())
    return f"fallback {path}: {sum(counts.values())} row(s) not yet merged into the TF card ({detail})"


def open_cards(opts: Options, errors: list[str]) -> list[Card]:
    """Every card the options name, opened; a card that cannot be read adds its one-line
    error to ``errors`` and is left out."""
    from ..storage.location import fallback_path

    targets = _targets(opts)
    labels = _labels(targets)
    card_mode = any(t.kind == "card" for t in targets)
    fb_path = Path(opts.fallback).expanduser() if opts.fallback else (
        fallback_path(internal_dir(opts), _db_name(opts)) if card_mode or targets[0].kind == "internal" else None)
    together = len(targets) == 1 and (card_mode or bool(opts.fallback))
    cards: list[Card] = []
    fallback: Source | None = None
    if fb_path is not None and (opts.fallback or fb_path.is_file()):
        try:
            fallback = open_source("fallback", fb_path)
        except Problem as exc:
            if opts.fallback:
                errors.append(str(exc))
                return []
    counts = _rows_waiting(fallback) if fallback is not None else {}
    waiting = sum(counts.values())
    for target, label in zip(targets, labels):
        card = Card(label, target.path)
        kind = "fallback" if target.path is not None and target.path.stem.endswith("-fallback") else target.kind
        if target.path is not None and (target.path.is_file() or not (together and target.missing_ok)):
            try:
                card.sources.append(open_source(kind, target.path))
                if kind == "fallback":
                    card.info.append(_waiting(target.path, _rows_waiting(card.sources[0])))
            except Problem as exc:
                if not (together and fallback is not None and target.missing_ok and not target.path.exists()):
                    errors.append(str(exc))
                    continue
        if together and fallback is not None and (waiting or not card.sources):
            card.info.append(_waiting(fallback.path, counts))
            card.sources.append(fallback)
            fallback = None
        if card.sources:
            cards.append(card)
        elif target.path is None:
            errors.append(f"no TF card mounted under /media or /mnt and no rows in its fallback {fb_path}; "
                          "give --tf-root or --db")
        else:
            errors.append(f"cannot open database {target.path} read-only: no such file")
    if fallback is not None:
        if waiting and not together and len(targets) > 1:
            card = Card("fallback", fallback.path, [fallback], info=[_waiting(fallback.path, counts)])
            cards.append(card)
        else:
            if waiting and targets[0].kind == "internal":
                print(f"note: {_waiting(fallback.path, counts)}; read them with --tf-root or --config",
                      file=sys.stderr)
            fallback.conn.close()
    for card in cards:
        for source in card.sources:
            if source.conn.note:
                card.notes.append(f"{source.path}: {source.conn.note}")
        card.clock, how = learn(card.sources[0].conn)
        if how:
            card.notes.append(how)
    return cards
