"""Many cards, labels, unclean and ticos-client cards, and a card that never changes."""

from __future__ import annotations

import contextlib
import subprocess

import pytest
from inspect_cards import MAIN, build_card, copy_card, jsonl, power_cut
from storage_helpers import LoopCard, make_sdk_v1, snapshot

from ticos_agent.cli import main

VIEWS = ("transcript", "faults", "summary", "messages", "memories", "calls", "events", "sessions")


@pytest.fixture(scope="module")
def card_db(tmp_path_factory):
    return build_card(tmp_path_factory.mktemp("robot"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def every_reading(capsys, where: list[str]) -> list[tuple[int, str, str]]:
    """Every view in every format, and every export: what a person might run on a card."""
    done = []
    for view in VIEWS:
        for fmt in ("text", "jsonl", "csv", "markdown"):
            done.append(run(capsys, "inspect", view, *where, "--format", fmt, "--verbose"))
    for fmt in ("jsonl", "csv", "markdown"):
        done.append(run(capsys, "export", *where, "--events", "--format", fmt))
        done.append(run(capsys, "export", "transcript", *where, "--format", fmt))
    done.append(run(capsys, "inspect", *where, "--grep", "moon", "--since", "1d", "--session", "last"))
    return done


def test_no_view_or_export_changes_a_clean_card(card_db, tmp_path, capsys):
    db = copy_card(card_db, tmp_path / "CARD")
    before = snapshot(db.parent)
    assert list(before) == ["ticos.db"]
    results = every_reading(capsys, ["--db", str(db)])
    assert all(code == 0 for code, _, _ in results), [r for r in results if r[0]]
    assert snapshot(db.parent) == before  # the same files, bytes and mtimes


def test_a_card_left_by_a_power_cut_reads_the_same_and_stays_as_it_was(card_db, tmp_path, capsys):
    db = power_cut(copy_card(card_db, tmp_path / "CARD"))
    before = snapshot(db.parent)
    assert set(before) == {"ticos.db", "ticos.db-wal", "ticos.db-shm"}
    code, out, err = run(capsys, "inspect", "messages", "--db", str(db), "--limit", "2")
    assert code == 0 and out.splitlines()[2].endswith("said just before the power cut")  # the row in the -wal
    assert err == ""  # how it was read is an internal: said with --verbose only
    _, _, err = run(capsys, "inspect", "messages", "--db", str(db), "--verbose")
    assert "read from a recovered copy kept in " in err
    _, out, _ = run(capsys, "inspect", "--db", str(db), "--session", MAIN)
    assert "Good night, sleep well!" in out
    results = every_reading(capsys, ["--db", str(db)])
    assert all(code == 0 for code, _, _ in results)
    assert snapshot(db.parent) == before


def test_a_clean_wal_card_is_quiet_unless_asked(card_db, tmp_path, capsys):
    db = copy_card(card_db, tmp_path / "CARD")
    code, out, err = run(capsys, "inspect", "--db", str(db))
    assert code == 0 and err == "" and "note:" not in out
    _, _, err = run(capsys, "inspect", "--db", str(db), "--verbose")
    assert "WAL database without -wal/-shm files: opened immutable" in err


def test_a_ticos_client_card_reads_in_every_view(tmp_path, capsys):
    root = tmp_path / "OLDCARD"
    db = make_sdk_v1(copy_card_dir(root))
    before = snapshot(db.parent)
    _, out, _ = run(capsys, "inspect", "--tf-root", str(root))
    assert out.splitlines()[0].startswith("Messages without a session · 2024-05-01 10:00:00")
    assert [line.split(None, 2)[1:] for line in out.splitlines()[1:]] == [
        ["user", "hello robot"], ["robot", "hello alice"], ["system", "be kind"],
        ["user", "from a clock set far ahead"]]
    _, out, _ = run(capsys, "inspect", "sessions", "--tf-root", str(root))
    assert out.splitlines()[1].split()[0] == "(none)"
    _, out, _ = run(capsys, "export", "--tf-root", str(root))
    assert [r["kind"] for r in jsonl(out)] == ["message"] * 4 + ["memory"] * 2
    results = every_reading(capsys, ["--tf-root", str(root)])
    assert all(code == 0 for code, _, _ in results)
    assert snapshot(db.parent) == before


def copy_card_dir(root):
    folder = root / ".config" / "ticos"
    folder.mkdir(parents=True)
    return folder / "ticos.db"


def test_many_cards_each_under_its_label_with_the_limit_per_card(card_db, tmp_path, capsys):
    media = tmp_path / "media"
    copy_card(card_db, media / "ROBOT_A")
    power_cut(copy_card(card_db, media / "ROBOT_B"))
    make_sdk_v1(copy_card_dir(media / "ROBOT_C"))
    (media / "not-a-card").mkdir()
    code, out, _ = run(capsys, "inspect", "messages", "--tf-root", str(media), "--limit", "1")
    assert code == 0
    lines = out.splitlines()
    heads = [line for line in lines if line.startswith("== ")]
    assert [h.split()[1] for h in heads] == ["ROBOT_A", "ROBOT_B", "ROBOT_C"]
    assert lines[lines.index(heads[0]) + 2].endswith("Good night, sleep well!")
    assert lines[lines.index(heads[1]) + 2].endswith("said just before the power cut")
    assert lines[lines.index(heads[2]) + 2].endswith("from a clock set far ahead")
    # the same with --db and --tf-root given one by one, exported: each row names its card
    code, out, _ = run(capsys, "export", "messages", "--tf-root", str(media / "ROBOT_A"),
                       "--db", str(media / "ROBOT_C" / ".config" / "ticos" / "ticos.db"), "--limit", "2")
    assert code == 0
    assert [(r["card"], r["source"], r["content"]) for r in jsonl(out)] == [
        ("ROBOT_C", "file", "be kind"), ("ROBOT_C", "file", "from a clock set far ahead"),
        ("ROBOT_A", "card", "Good night"), ("ROBOT_A", "card", "Good night, sleep well!")]


def test_a_session_on_one_card_of_many(card_db, tmp_path, capsys):
    media = tmp_path / "media"
    copy_card(card_db, media / "ROBOT_A")
    make_sdk_v1(copy_card_dir(media / "ROBOT_C"))
    code, out, err = run(capsys, "inspect", "--tf-root", str(media), "--session", "sess_main")
    assert code == 0 and err == ""
    assert f"Session {MAIN}" in out and "no session 'sess_main'" in out  # under ROBOT_C
    code, out, err = run(capsys, "inspect", "--tf-root", str(media), "--session", "sess_nowhere")
    assert code == 1


def test_cards_with_the_same_volume_label_are_told_apart_by_folder(card_db, tmp_path, capsys, monkeypatch):
    from ticos_agent.inspect import cards

    monkeypatch.setattr(cards, "volume_label", lambda path: "rootfs")
    copy_card(card_db, tmp_path / "media" / "rootfs")
    copy_card(card_db, tmp_path / "media" / "rootfs1")
    _, out, _ = run(capsys, "inspect", "sessions", "--tf-root", str(tmp_path / "media"))
    assert [line.split(" ==")[0] for line in out.splitlines() if line.startswith("== ")] == [
        "== rootfs", "== rootfs (rootfs1)"]


@contextlib.contextmanager
def labelled_card(where, label: str):
    """An ext4 image labelled ``label``, loop-mounted at ``<where>/media/<label>`` (skips the
    test where images cannot be made or mounted)."""
    image, root = where / "card.img", where / "media" / label
    root.mkdir(parents=True)
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    try:
        made = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, str(image)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mkfs.ext4 here")
    if made.returncode:
        pytest.skip(f"cannot make an ext4 image: {made.stderr.strip()}")
    done = subprocess.run(["mount", "-o", "loop", str(image), str(root)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot loop-mount an image here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield LoopCard(image, root, "ext4")
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def test_a_read_only_card_with_a_power_cut_wal_never_changes(card_db, tmp_path, capsys):
    """A real ext4 image, loop-mounted read-only, as a card in a laptop's reader."""
    with labelled_card(tmp_path, "ROBOT7") as card:
        db = power_cut(copy_card(card_db, card.root))
        card.remount("ro")
        probe = subprocess.run(["touch", str(card.root / "x")], capture_output=True)
        assert probe.returncode != 0  # really read-only
        before = snapshot(db.parent)
        code, out, _ = run(capsys, "inspect", "messages", "--tf-root", str(card.root), "--limit", "1")
        assert code == 0 and out.splitlines()[1].endswith("said just before the power cut")
        results = every_reading(capsys, ["--tf-root", str(card.root)])
        assert all(code == 0 for code, _, _ in results), [r for r in results if r[0]]
        assert snapshot(db.parent) == before
        from ticos_agent.inspect.cards import volume_label

        label = volume_label(card.root)
        if label is not None:  # blkid or udev's by-label links were there to ask
            assert label == "ROBOT7"
            _, out, _ = run(capsys, "inspect", "sessions", "--tf-root", str(card.root), "--db", str(card_db))
            assert "== ROBOT7 ==" in out


def test_a_robot_system_card_and_cards_found_without_being_named(card_db, tmp_path, capsys, monkeypatch):
    """A robot's root filesystem keeps the service's database in var/lib/ticos and
    ticos-client's in a home; with nothing named and no database on this computer, the cards
    mounted under /media are read."""
    from ticos_agent.inspect import cards

    media = tmp_path / "media"
    system = media / "rootfs"
    (system / "var" / "lib" / "ticos").mkdir(parents=True)
    copy_card(card_db, system / "x")
    (system / "x" / ".config" / "ticos" / "ticos.db").rename(system / "var" / "lib" / "ticos" / "ticos.db")
    make_sdk_v1(copy_card_dir(system / "home" / "pi"))
    copy_card(card_db, media / "DATA")
    before = snapshot(system / "var" / "lib" / "ticos")
    _, out, _ = run(capsys, "inspect", "sessions", "--tf-root", str(system))
    assert [line for line in out.splitlines() if line.startswith("== ")] == [
        f"== rootfs (var/lib/ticos) ==  {system}/var/lib/ticos/ticos.db",
        f"== rootfs (home/pi) ==  {system}/home/pi/.config/ticos/ticos.db"]
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sdb1 {media / 'DATA'} vfat rw 0 0\n/dev/sdc2 {system} ext4 ro 0 0\n"
                      "/dev/sda1 / ext4 rw 0 0\n")
    monkeypatch.setattr(cards, "MOUNTS", str(mounts))
    monkeypatch.setattr(cards, "CARD_PARENTS", (f"{media}/",))
    code, out, _ = run(capsys, "inspect", "sessions")  # HOME has no database: the cards are read
    assert code == 0
    assert [line.split()[1] for line in out.splitlines() if line.startswith("== ")] == ["DATA", "rootfs", "rootfs"]
    assert snapshot(system / "var" / "lib" / "ticos") == before
