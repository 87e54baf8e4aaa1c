"""Where the database lives: internal storage, the TF (microSD) card, or a fallback.

``SaveMode.INTERNAL`` keeps the database at ``~/.config/ticos/ticos.db`` (or a directory the
configuration gives, such as the systemd state directory). ``SaveMode.EXTERNAL`` keeps it at
``<card root>/.config/ticos/ticos.db``; the card root is given or found in the mount table by
:func:`find_tf_root`. Both paths are the ones the ticos-client SDK used, so existing
databases are opened in place.

:func:`resolve_location` only computes paths; it never touches the disk beyond reading the
mount table. When EXTERNAL is asked for and no card is found it answers with the internal
location and says why in ``Location.degraded``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..errors import ConfigError

DEFAULT_DB_FILENAME = "ticos.db"
#: Event-log rows older than this many days are pruned (``[storage] event_log_days``).
DEFAULT_EVENT_RETENTION_DAYS = 30
#: The longest an event-log line (or a user message with no words yet) waits for its commit
#: (seconds): long enough for a voice turn's lines to ride with its one commit (here, beside the
#: other storage defaults the config declares, so the config need not load the writer).
EVENT_LOG_DELAY = 2.0
CARD_MOUNT_PARENTS = ("/media", "/mnt")
#: ``ticos.db`` -> ``ticos-fallback.db``: where EXTERNAL mode keeps what the card could not take.
FALLBACK_SUFFIX = "-fallback"


class SaveMode(Enum):
    """Where to keep the database; values match the ticos-client SDK's ``SaveMode``."""

    INTERNAL = "internal"
    EXTERNAL = "external"

    @classmethod
    def coerce(cls, value: SaveMode | str | object) -> SaveMode:
        """Accept a ``SaveMode``, the SDK's enum, or ``"internal"``/``"external"`` (any case)."""
        if isinstance(value, cls):
            return value
        raw = getattr(value, "value", value)
        if isinstance(raw, str):
            try:
                return cls(raw.strip().lower())
            except ValueError:
                pass
        raise ConfigError("save_mode", value, "'internal' or 'external'")


@dataclass(frozen=True)
class Location:
    """A resolved database location.

    ``path`` is the database file, ``mode`` the mode actually used, ``requested`` the mode
    asked for, and ``degraded`` the human-readable reason a fallback happened (``None`` when
    the requested location is in use).
    """

    path: Path
    mode: SaveMode
    requested: SaveMode
    degraded: str | None = None

    def fallen_back(self, path: Path, reason: str) -> Location:
        """This location's request served from internal ``path`` instead, because of ``reason``."""
        return Location(path=path, mode=SaveMode.INTERNAL, requested=self.requested, degraded=reason)


def default_internal_dir() -> Path:
    """``~/.config/ticos``, the SDK's internal directory."""
    return Path.home() / ".config" / "ticos"


def fallback_path(internal_dir: str | os.PathLike[str] | None = None,
                  db_filename: str = DEFAULT_DB_FILENAME) -> Path:
    """The fallback database of EXTERNAL mode: ``<internal dir>/<stem>-fallback<suffix>``.

    A file of its own, next to (never inside) the INTERNAL database: every row in it is
    waiting for the card, so all of it is merged into the card when the card is back, and
    the INTERNAL mode's own history is never moved.
    """
    internal = Path(internal_dir) if internal_dir is not None else default_internal_dir()
    name = Path(db_filename)
    return internal / f"{name.stem}{FALLBACK_SUFFIX}{name.suffix}"


def resolve_location(
    mode: SaveMode | str,
    *,
    tf_root: str | os.PathLike[str] | None = None,
    internal_dir: str | os.PathLike[str] | None = None,
    db_filename: str = DEFAULT_DB_FILENAME,
) -> Location:
    """Compute the database path for ``mode``.

    INTERNAL: ``<internal_dir or ~/.config/ticos>/<db_filename>``.
    EXTERNAL: ``<tf_root or find_tf_root()>/.config/ticos/<db_filename>``; when no card root is
    given and none is mounted, the fallback database (:func:`fallback_path`) with
    ``degraded`` explaining why.
    """
    requested = SaveMode.coerce(mode)
    internal = Path(internal_dir) if internal_dir is not None else default_internal_dir()
    internal_loc = Location(internal / db_filename, SaveMode.INTERNAL, requested)
    if requested is SaveMode.INTERNAL:
        return internal_loc
    root = Path(tf_root) if tf_root is not None else find_tf_root()
    if root is None:
        return internal_loc.fallen_back(fallback_path(internal, db_filename), NO_CARD_FOUND)
    return Location(card_db_path(root, db_filename), SaveMode.EXTERNAL, requested)


NO_CARD_FOUND = "no TF card found: no removable SD/USB device mounted under /media or /mnt"


def card_db_path(root: Path, db_filename: str = DEFAULT_DB_FILENAME) -> Path:
    """``<root>/.config/ticos/<db_filename>``, the SDK's place on the card."""
    return root / ".config" / "ticos" / db_filename


def card_root_of(db_path: Path) -> Path:
    """The card root of a card database path (the inverse of :func:`card_db_path`)."""
    return db_path.parent.parent.parent


_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def decode_mount_field(field: bytes) -> str:
    r"""Undo the mount table's octal escapes (``\040`` space, ``\011`` tab, ``\134`` backslash)."""
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field))


_DISK_PATTERNS = (
    re.compile(r"^(mmcblk\d+)(?:p\d+)?$"),
    re.compile(r"^(nvme\d+n\d+)(?:p\d+)?$"),
    re.compile(r"^((?:sd|vd|hd)[a-z]+)\d*$"),
)


def disk_of(device: str) -> str | None:
    """The whole-disk name of a ``/dev`` block device path (``/dev/mmcblk1p1`` -> ``mmcblk1``)."""
    if not device.startswith("/dev/"):
        return None
    name = os.path.basename(device)
    for pattern in _DISK_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return None


def sysfs_removable(disk: str, sys_block: str = "/sys/block") -> bool:
    """True when ``/sys/block/<disk>/removable`` reads ``1``."""
    try:
        return Path(sys_block, disk, "removable").read_text().strip() == "1"
    except OSError:
        return False


def _under_card_parent(mountpoint: str) -> bool:
    return any(mountpoint == p or mountpoint.startswith(p + "/") for p in CARD_MOUNT_PARENTS)


def find_tf_root(
    mounts: str | os.PathLike[str] = "/proc/self/mounts",
    *,
    removable: Callable[[str], bool] = sysfs_removable,
) -> Path | None:
    """The TF/microSD card's mount point from the mount table, or ``None``.

    A candidate is a block device mounted under ``/media`` or ``/mnt`` that is either an
    SD/MMC device (``mmcblk*``) or a disk the kernel marks removable (``removable(disk)``,
    by default ``/sys/block/<disk>/removable``), and that is not the disk holding the root
    filesystem (a Pi boots from ``mmcblk0``; when ``/`` shows as ``/dev/root``, the disk of
    ``/boot`` counts). The first candidate in table order wins. Folder names play no part.
    Symlinked device paths (``/dev/disk/by-uuid/...``) are resolved.
    """
    try:
        raw = Path(mounts).read_bytes()
    except OSError:
        return None
    entries: list[tuple[str, str]] = []
    system_disks: dict[str, str | None] = {}
    for line in raw.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        device, mountpoint = decode_mount_field(fields[0]), decode_mount_field(fields[1])
        if device.startswith("/dev/") and os.path.islink(device):
            device = os.path.realpath(device)
        disk = disk_of(device)
        if mountpoint in ("/", "/boot", "/boot/firmware"):
            system_disks[mountpoint] = disk
        if disk is not None:
            entries.append((disk, mountpoint))
    # Older Pi OS lists "/" as /dev/root; the boot partition then tells which disk it is.
    root_disk = system_disks.get("/") or system_disks.get("/boot/firmware") or system_disks.get("/boot")
    for disk, mountpoint in entries:
        if disk == root_disk or not _under_card_parent(mountpoint):
            continue
        if disk.startswith("mmcblk") or removable(disk):
            return Path(mountpoint)
    return None


#: Set to ``1`` to accept a ``tf_root`` that is a plain directory (tests, development).
ALLOW_UNMOUNTED_ENV = "TICOS_ALLOW_UNMOUNTED_CARD"


def mount_required(require_mount: bool | None) -> bool:
    """``require_mount`` as given, or (``None``) True unless ``TICOS_ALLOW_UNMOUNTED_CARD=1``."""
    if require_mount is not None:
        return bool(require_mount)
    return os.environ.get(ALLOW_UNMOUNTED_ENV, "").strip() != "1"


def is_mount_point(path: str | os.PathLike[str], mounts: str | os.PathLike[str] = "/proc/self/mounts") -> bool:
    """True when ``path`` is a mount point: ``os.path.ismount`` (another device than its parent)
    or listed in the mount table (a bind mount of the same device)."""
    path = os.fspath(path)
    if os.path.ismount(path):
        return True
    try:
        raw = Path(mounts).read_bytes()
    except OSError:
        return False
    real = os.path.realpath(path)
    return any(len(f) >= 2 and decode_mount_field(f[1]) == real for f in (line.split() for line in raw.splitlines()))


def card_problem(root: Path, *, is_mounted: Callable[[Path], bool] = is_mount_point) -> str | None:
    """Why the card root ``root`` cannot be used (``"TF card not mounted at <root>"``), or ``None``.

    The root itself is never created: a missing root, or one that is a plain directory of the
    system disk (the card not inserted, or not mounted yet), is not a card. A folder inside a
    mounted card is accepted, as ticos-client's ``tf_root_dir`` allowed.
    """
    if not root.is_dir() or not (is_mounted(root) or _off_system_disk(root)):
        return f"{NOT_MOUNTED}{root}"
    return None


NOT_MOUNTED = "TF card not mounted at "


def with_card_hint(problem: str) -> str:
    """``problem`` as the WARNING says it: a card root refused because it is not a mount
    point (a plain folder of the system disk, or missing) names the escape hatch."""
    if problem.startswith(NOT_MOUNTED):
        return (f"{problem} (a folder that is not a mount point is not taken for the card, so that the "
                f"system disk is not filled in its place; set {ALLOW_UNMOUNTED_ENV}=1 to accept one)")
    return problem


def _off_system_disk(path: Path) -> bool:
    """A folder on a filesystem other than ``/`` (ticos-client allowed any folder on the card)."""
    try:
        return os.stat(path).st_dev != os.stat("/").st_dev
    except OSError:
        return False


def mount_of(path: str | os.PathLike[str],
             mountinfo: str | os.PathLike[str] = "/proc/self/mountinfo") -> tuple[str, int, str] | None:
    """The mount holding ``path`` by name: (mount point, device number, source), from the
    mount table (the longest mount point that is ``path`` or one of its parents), or ``None``.

    Read only when the cheap check of the card changed, to say what happened to it.
    """
    try:
        raw = Path(mountinfo).read_bytes()
    except OSError:
        return None
    target = os.path.abspath(os.fspath(path))
    best: tuple[str, int, str] | None = None
    for line in raw.splitlines():
        fields = line.split()
        if len(fields) < 5 or b"-" not in fields[6:]:
            continue
        point = decode_mount_field(fields[4])
        if not (target == point or target.startswith(point.rstrip("/") + "/")):
            continue
        if best is not None and len(point) < len(best[0]):
            continue
        try:
            major, minor = (int(x) for x in fields[2].split(b":"))
        except ValueError:
            continue
        dash = fields.index(b"-", 6)
        source = decode_mount_field(fields[dash + 2]) if len(fields) > dash + 2 else "?"
        best = (point, os.makedev(major, minor), source)  # later (stacked) mounts win ties
    return best
