"""Where the database lives: the mount table, the card root, the paths for each mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from ticos_agent.errors import ConfigError
from ticos_agent.storage import Location, SaveMode, find_tf_root, resolve_location
from ticos_agent.storage.location import decode_mount_field, disk_of

PI_ROOT = "/dev/mmcblk0p2 / ext4 rw,noatime 0 0\n/dev/mmcblk0p1 /boot/firmware vfat rw 0 0\n"


def mounts(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mounts"
    path.write_text(PI_ROOT + text)
    return path


def never(disk: str) -> bool:
    return False


def test_sd_card_in_second_slot_is_found(tmp_path):
    table = mounts(tmp_path, "/dev/mmcblk1p1 /media/pi/TFCARD vfat rw 0 0\n")
    assert find_tf_root(table, removable=never) == Path("/media/pi/TFCARD")


def test_octal_escapes_in_mount_point_are_decoded(tmp_path):
    table = mounts(tmp_path, r"/dev/mmcblk1p1 /media/pi/My\040Card\134x vfat rw 0 0" + "\n")
    assert find_tf_root(table, removable=never) == Path("/media/pi/My Card\\x")


def test_usb_reader_needs_the_removable_flag(tmp_path):
    table = mounts(tmp_path, "/dev/sda1 /media/pi/USB exfat rw 0 0\n/dev/sdb1 /mnt/card vfat rw 0 0\n")
    asked = []

    def removable(disk):
        asked.append(disk)
        return disk == "sdb"

    assert find_tf_root(table, removable=removable) == Path("/mnt/card")
    assert asked == ["sda", "sdb"]


def test_sysfs_removable_file_is_read_by_default(tmp_path):
    table = mounts(tmp_path, "/dev/sdz1 /media/x vfat rw 0 0\n")
    # No /sys/block/sdz here: a non-removable answer, so no card.
    assert find_tf_root(table) is None


@pytest.mark.parametrize("line", [
    "/dev/mmcblk0p3 /media/data ext4 rw 0 0",          # the boot card's own disk
    "/dev/mmcblk1p1 /home/pi/card vfat rw 0 0",        # not under /media or /mnt
    "tmpfs /media/ram tmpfs rw 0 0",                   # not a block device
    "/dev/nvme0n1p1 /mnt/ssd ext4 rw 0 0",             # fixed disk
    "server:/export /mnt/nfs nfs rw 0 0",
])
def test_non_cards_are_ignored(tmp_path, line):
    assert find_tf_root(mounts(tmp_path, line + "\n"), removable=never) is None


def test_folder_named_like_a_card_is_not_a_card(tmp_path):
    table = mounts(tmp_path, "/dev/nvme0n1p1 /media/pi/TF ext4 rw 0 0\n")
    assert find_tf_root(table, removable=never) is None


def test_root_on_usb_disk_excludes_that_disk(tmp_path):
    path = tmp_path / "m"
    path.write_text("/dev/sda2 / ext4 rw 0 0\n/dev/sda3 /mnt/data ext4 rw 0 0\n/dev/mmcblk0p1 /media/sd vfat rw 0 0\n")
    assert find_tf_root(path, removable=lambda d: True) == Path("/media/sd")


def test_dev_root_uses_the_boot_partition_to_know_the_boot_disk(tmp_path):
    path = tmp_path / "m"
    path.write_text("/dev/root / ext4 rw 0 0\n/dev/mmcblk0p1 /boot vfat rw 0 0\n"
                    "/dev/mmcblk0p3 /media/data ext4 rw 0 0\n/dev/mmcblk1p1 /media/card vfat rw 0 0\n")
    assert find_tf_root(path, removable=never) == Path("/media/card")


def test_missing_mount_table_means_no_card(tmp_path):
    assert find_tf_root(tmp_path / "nope") is None


def test_helpers():
    assert decode_mount_field(rb"a\040b\011c\012d") == "a b\tc\nd"
    assert disk_of("/dev/mmcblk1p1") == "mmcblk1"
    assert disk_of("/dev/sdb") == "sdb"
    assert disk_of("/dev/nvme0n1p2") == "nvme0n1"
    assert disk_of("tmpfs") is None


def test_internal_path(tmp_path):
    loc = resolve_location(SaveMode.INTERNAL, internal_dir=tmp_path, db_filename="x.db")
    assert loc == Location(tmp_path / "x.db", SaveMode.INTERNAL, SaveMode.INTERNAL, None)


def test_internal_default_is_the_sdk_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_location("internal").path == tmp_path / ".config" / "ticos" / "ticos.db"


def test_external_path_under_card_root(tmp_path):
    loc = resolve_location("external", tf_root=tmp_path / "card", internal_dir=tmp_path)
    assert loc.path == tmp_path / "card" / ".config" / "ticos" / "ticos.db"
    assert (loc.mode, loc.requested, loc.degraded) == (SaveMode.EXTERNAL, SaveMode.EXTERNAL, None)


def test_external_without_card_falls_back_with_reason(tmp_path, monkeypatch):
    monkeypatch.setattr("ticos_agent.storage.location.find_tf_root", lambda *a, **k: None)
    loc = resolve_location("EXTERNAL", internal_dir=tmp_path)
    assert loc.path == tmp_path / "ticos-fallback.db"
    assert (loc.mode, loc.requested) == (SaveMode.INTERNAL, SaveMode.EXTERNAL)
    assert "no TF card" in loc.degraded


def test_save_mode_values_and_strings():
    assert SaveMode.INTERNAL.value == "internal" and SaveMode.EXTERNAL.value == "external"
    assert SaveMode.coerce("External") is SaveMode.EXTERNAL
    with pytest.raises(ConfigError) as err:
        SaveMode.coerce("cloud")
    assert isinstance(err.value, ValueError) and "save_mode" in str(err.value)
