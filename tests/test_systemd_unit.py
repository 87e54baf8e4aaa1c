"""The shipped systemd unit: hardened, valid, and still a unit the agent can work in.

- ``systemd-analyze security --offline=true`` rates ``systemd/ticos-agent.service`` at 2.5 or
  lower, and the same check does fail on a unit without the hardening;
- ``systemd-analyze verify`` accepts it (with ``ExecStart=`` pointed at a placeholder, since
  /opt/ticos-agent is not installed here) and does report a misspelt directive;
- the unit still grants what the robot needs (devices, card paths, loopback, notify, watchdog);
- the real agent (WebSocket, SQLite WAL on the card, pty serial port, PortAudio into ALSA's
  file plugin, sd_notify with a watchdog) works inside a sandbox built *from the unit file*:
  its ``SystemCallFilter=`` resolved by ``systemd-analyze syscall-filter``, its
  ``RestrictAddressFamilies=``, ``MemoryDenyWriteExecute=``, ``RestrictNamespaces=``, ``UMask=``,
  ``LimitNOFILE=`` and, as root, ``ProtectSystem=strict`` with only the state, runtime, tmp and
  card folders writable and ``/proc`` mounted per ``ProtectProc=``/``ProcSubset=``. Unlike
  systemd (``SystemCallErrorNumber=EPERM``) the emulation kills on a call outside the set, so
  the agent must not even try one. Probes in the same sandbox show that it does bite.

This file is also the sandbox launcher: ``python test_systemd_unit.py --sandbox SPEC -- argv``.
Not emulated: ``DeviceAllow=`` (no serial/GPIO/sound hardware here; the class names are
checked against the kernel's names in ``test_unit_still_grants_what_the_robot_needs``),
``PrivateUsers=``, ``ProtectHome=``, ``IPAddressDeny=`` (BPF) and running as the ``ticos`` user.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "ticos-agent.service"
MAX_EXPOSURE = 2.5
ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if os.access("/usr/bin/systemd-analyze", os.X_OK) else None)
NO_ANALYZE = ("systemd-analyze is missing: install the Debian package 'systemd' "
              "(`make system-deps` does it when run as root)")

# ---------------------------------------------------------------------------------------------
# the unit file and systemd-analyze


def read_unit(path: Path = UNIT) -> list[tuple[str, str, str, int]]:
    """(section, key, value, line number) for every assignment, in file order."""
    out, section = [], ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("["):
            section = s.strip("[]")
            continue
        key, _, value = s.partition("=")
        out.append((section, key.strip(), value.strip(), n))
    return out


def values(key: str, unit: list | None = None) -> list[str]:
    return [v for _, k, v, _ in (unit if unit is not None else read_unit()) if k == key]


def last(key: str, default: str = "", unit: list | None = None) -> str:
    found = values(key, unit)
    return found[-1] if found else default


def analyze(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run([ANALYZE, "--no-pager", *args], capture_output=True, text=True, env=env, timeout=60)


def exposure(path: Path) -> float:
    """The overall exposure ``systemd-analyze security --offline=true`` gives the unit file."""
    r = analyze("security", "--offline=true", str(path))
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    assert m, f"no overall exposure in systemd-analyze's output (rc {r.returncode}):\n{r.stdout}{r.stderr}"
    return float(m.group(1))


def over_threshold(path: Path, limit: float = MAX_EXPOSURE) -> bool:
    """systemd-analyze's own verdict: ``--threshold`` is on its 0-100 scale (2.5 -> 25)."""
    r = analyze("security", "--offline=true", f"--threshold={round(limit * 10)}", str(path))
    return r.returncode != 0


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: group name -> members (calls and @groups)."""
    groups, current = {}, None
    for line in analyze("syscall-filter").stdout.splitlines():
        s = line.strip()
        if line.startswith("@"):
            current = groups.setdefault(s, [])
        elif s and not s.startswith("#") and current is not None:
            current.append(s)
    return groups


def expand(name: str, groups: dict[str, list[str]], seen: set | None = None) -> set[str]:
    if not name.startswith("@"):
        return {name}
    seen = set() if seen is None else seen
    out: set[str] = set()
    for member in groups[name]:
        if member not in seen:
            seen.add(member)
            out |= expand(member, groups, seen)
    return out


def allowed_syscalls(unit: list) -> set[str]:
    """The allow list the unit's ``SystemCallFilter=`` lines add up to (systemd's rules: the
    first line decides allow-list mode, later lines add names or, with ``~``, remove them)."""
    groups, allow = syscall_groups(), None
    for value in values("SystemCallFilter", unit):
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        if allow is None:
            assert not deny, "SystemCallFilter= must start with an allow list"
            allow = set()
        for name in names:
            allow = allow - expand(name, groups) if deny else allow | expand(name, groups)
    assert allow, "the unit has no SystemCallFilter= allow list"
    return allow


def yes(value: str) -> bool:
    return value.lower() in ("1", "yes", "true", "on")


# ---------------------------------------------------------------------------------------------
# the sandbox launcher (runs as a script: python test_systemd_unit.py --sandbox SPEC -- argv)

NO_MOUNT_NAMESPACE = 75  # the launcher's exit status when the mount namespace is not allowed
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 32, 4096, 16384, 1 << 19
MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
               "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000, 0x00000080)  # NEWNS UTS IPC USER PID NET CGROUP TIME


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    enc = (lambda s: None if s is None else os.fsencode(s))
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {source} {target} {fstype} {flags:#x} {data}: {os.strerror(e)}")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _file_system(spec: dict) -> None:
    """ProtectSystem=strict with only ``writable`` writable (and /dev, /proc), /sys read-only
    (ProtectKernelTunables=), and a fresh /proc with the unit's hidepid=/subset=."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, MS_REC | MS_SLAVE)  # nothing done here reaches the host
    writable = [os.path.realpath(p) for p in spec["writable"].values()]
    for path in writable:
        _mount(libc, path, path, None, MS_BIND | MS_REC)
    inside = (lambda t, roots: any(t == r or t.startswith(r.rstrip("/") + "/") for r in roots))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        target, options = _unescape(fields[4]), fields[5].split(",")
        if inside(target, ["/dev", "/proc"] + writable) or "ro" in options:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in options:
            flags |= MOUNT_FLAGS.get(option, 0)
        try:
            _mount(libc, None, target, None, flags)
        except OSError:
            if target == "/":
                raise
    _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, spec["proc_options"])


def _seccomp(spec: dict) -> None:
    """Filters shaped like systemd's: address families, W^X, namespaces, and last (as systemd
    does) the system call allow list, whose default action kills the process."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(Cmp)]
    allow, kill_process = 0x7FFF0000, 0x80000000
    fail = (lambda e: 0x00050000 | e)
    eq, gt, masked_eq = 4, 6, 7
    lib.seccomp_api_get()  # libseccomp probes the kernel once; do it before any filter is loaded

    def rule(ctx, action, name, *cmps):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a call on this architecture
        arr = (Cmp * max(1, len(cmps)))(*[Cmp(*c) for c in cmps])
        r = lib.seccomp_rule_add_array(ctx, action, number, len(cmps), arr)
        if r < 0:
            raise OSError(-r, f"seccomp rule {name}")

    def load(ctx):
        r = lib.seccomp_load(ctx)
        if r < 0:
            raise OSError(-r, "seccomp_load")
        lib.seccomp_release(ctx)

    if spec["families"] is not None:  # RestrictAddressFamilies=: socket() of any other family fails
        ctx = lib.seccomp_init(allow)
        for family in range(64):
            if family not in spec["families"]:
                rule(ctx, fail(errno.EAFNOSUPPORT), "socket", (0, eq, family, 0))
        rule(ctx, fail(errno.EAFNOSUPPORT), "socket", (0, gt, 63, 0))
        load(ctx)
    if spec["mdwe"]:  # MemoryDenyWriteExecute=yes
        ctx = lib.seccomp_init(allow)
        rule(ctx, fail(errno.EPERM), "mmap", (2, masked_eq, 6, 6))
        for name in ("mprotect", "pkey_mprotect"):
            rule(ctx, fail(errno.EPERM), name, (2, masked_eq, 4, 4))
        rule(ctx, fail(errno.EPERM), "shmat", (2, masked_eq, 0o100000, 0o100000))
        load(ctx)
    if spec["restrict_namespaces"]:  # RestrictNamespaces=yes
        ctx = lib.seccomp_init(allow)
        rule(ctx, fail(errno.ENOSYS), "clone3")
        for flag in NAMESPACE_FLAGS:
            rule(ctx, fail(errno.EPERM), "unshare", (0, masked_eq, flag, flag))
            rule(ctx, fail(errno.EPERM), "clone", (0, masked_eq, flag, flag))
        rule(ctx, fail(errno.EPERM), "setns")
        load(ctx)
    ctx = lib.seccomp_init(kill_process)
    for name in spec["syscalls"]:
        rule(ctx, allow, name)
    load(ctx)


def sandbox_main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[argv.index("--sandbox") + 1]).read_text())
    command = argv[argv.index("--") + 1:]
    if spec.get("file_system"):
        try:
            _file_system(spec)
        except PermissionError as e:  # a container without CAP_SYS_ADMIN, or a locked /proc
            print(f"cannot build a private mount namespace here: {e}", file=sys.stderr)
            raise SystemExit(NO_MOUNT_NAMESPACE)
    os.umask(spec["umask"])
    if spec.get("nofile"):
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (spec["nofile"], spec["nofile"]))
    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    _seccomp(spec)
    os.execv(command[0], command)


if __name__ == "__main__" and "--sandbox" in sys.argv:
    sandbox_main(sys.argv)
    raise SystemExit(127)

# ---------------------------------------------------------------------------------------------
# tests

import asyncio  # noqa: E402
import base64  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tty  # noqa: E402

import pytest  # noqa: E402

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)

#: Keys that run the service but do not harden it: a unit made of only these is the "before".
OPERATIONAL = {"Description", "After", "Wants", "Type", "NotifyAccess", "ExecStart", "User", "Group",
               "StateDirectory", "Restart", "RestartSec", "WatchdogSec", "TimeoutStopSec", "KillSignal",
               "WantedBy"}


def write_unit(directory: Path, lines: list[tuple[str, str, str, int]], name: str = "ticos-agent.service") -> Path:
    text, section = [], None
    for sec, key, value, _ in lines:
        if sec != section:
            text.append(f"\n[{sec}]")
            section = sec
        text.append(f"{key}={value}")
    path = directory / name
    path.write_text("\n".join(text).lstrip() + "\n")
    return path


@needs_analyze
def test_shipped_unit_is_rated_at_most_2_5():
    score = exposure(UNIT)
    assert score <= MAX_EXPOSURE, f"systemd-analyze security rates the unit {score} (limit {MAX_EXPOSURE})"
    assert not over_threshold(UNIT), "systemd-analyze --threshold=25 says the unit is over the limit"


@needs_analyze
def test_the_rating_check_fails_on_a_unit_without_the_hardening(tmp_path):
    bare = write_unit(tmp_path, [entry for entry in read_unit() if entry[1] in OPERATIONAL])
    assert values("ExecStart", read_unit(bare)) and values("WatchdogSec", read_unit(bare))
    score = exposure(bare)
    assert score > MAX_EXPOSURE, f"an unhardened unit rated {score}: the check could not fail"
    assert over_threshold(bare)


@needs_analyze
def test_unit_verifies_with_a_placeholder_binary(tmp_path):
    placeholder = tmp_path / "ticos-agent"
    placeholder.write_text("#!/bin/sh\nexit 0\n")
    placeholder.chmod(0o755)
    text = UNIT.read_text()
    binary = values("ExecStart")[0].split()[0]
    assert text.count(f"ExecStart={binary} ") == 1
    unit = tmp_path / "ticos-agent.service"
    unit.write_text(text.replace(f"ExecStart={binary} ", f"ExecStart={placeholder} "))
    r = analyze("verify", "--man=no", str(unit))
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    # and verify does speak up about a directive systemd does not know (here: a misspelling)
    typo = tmp_path / "typo" / "ticos-agent.service"
    typo.parent.mkdir()
    typo.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSytem=", 1))
    r = analyze("verify", "--man=no", str(typo))
    assert "ProtectSytem" in r.stdout + r.stderr


def test_every_directive_has_a_comment_line_above_it():
    lines = UNIT.read_text().splitlines()
    bare = [f"{n}: {line}" for n, line in enumerate(lines, 1)
            if line.strip() and line.strip()[0] not in "#;[" and not (n > 1 and lines[n - 2].startswith("#"))]
    assert not bare, "directives without a comment line directly above them:\n" + "\n".join(bare)


def test_unit_still_grants_what_the_robot_needs():
    unit = read_unit()
    one = (lambda key: last(key, unit=unit))
    assert one("Type") == "notify" and one("NotifyAccess") == "main" and int(one("WatchdogSec")) > 0
    assert one("User") not in ("", "root", "0") and not yes(one("DynamicUser") or "no")
    assert one("ExecStart").startswith("/opt/ticos-agent/.venv/bin/ticos-agent run")
    assert one("StateDirectory") == "ticos"  # $STATE_DIRECTORY is the internal database folder
    assert one("UMask") == "0077" and int(one("LimitNOFILE")) >= 4096
    # devices by their names in /proc/devices (drivers/tty/serial/amba-pl011.c "ttyAMA",
    # usb-serial "ttyUSB", cdc-acm "ttyACM", 8250 "ttyS", gpiolib "gpiochip", i2c-dev "i2c",
    # spidev "spi", ALSA "alsa"; the Pi's gpiomem driver is bcm2835-gpiomem or rpi-gpiomem)
    assert one("DevicePolicy") == "closed" and not yes(one("PrivateDevices") or "no")
    granted = {v.split()[0]: v.split()[1] for v in values("DeviceAllow", unit)}
    for device in ("char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-ttyS", "char-gpiochip", "char-i2c",
                   "char-spi", "char-alsa"):
        assert granted.get(device) == "rw", f"DeviceAllow={device} rw is missing"
    assert any(re.fullmatch(k[len("char-"):].replace("*", ".*"), name)
               for k in granted for name in ("bcm2835-gpiomem", "rpi-gpiomem")), "no DeviceAllow= for gpiomem"
    # the card: writable under /media and /mnt, and a missing folder must not fail the start
    rw = " ".join(values("ReadWritePaths", unit)).split()
    assert "-/media" in rw and "-/mnt" in rw and one("ProtectSystem") == "strict"
    # loopback only by default, and the sockets the agent needs
    assert values("IPAddressAllow", unit) == ["localhost"] and values("IPAddressDeny", unit) == ["any"]
    assert not yes(one("PrivateNetwork") or "no")
    assert set(" ".join(values("RestrictAddressFamilies", unit)).split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert values("SystemCallFilter", unit)[0] == "@system-service" and one("SystemCallArchitectures") == "native"
    # lgpio creates FIFOs in its working directory: it must be a writable one of the service's
    assert one("WorkingDirectory") == "%t/" + one("RuntimeDirectory")
    assert f"LG_WD=%t/{one('RuntimeDirectory')}" in values("Environment", unit)
    assert one("ProcSubset") != "pid", "ProcSubset=pid hides /proc/cpuinfo and /proc/device-tree from gpiozero"


def test_the_card_is_found_in_the_mount_table_the_service_sees(tmp_path):
    """Inside the unit's mount namespace, /media and /mnt are bind mounts of the root file system
    (ReadWritePaths=) and /home is an inaccessible tmpfs (ProtectHome=): the card is still the
    card, and without a card nothing is taken for one."""
    from ticos_agent.storage.location import find_tf_root

    service_view = (
        "/dev/mmcblk0p2 / ext4 ro,relatime 0 0\n"
        "/dev/mmcblk0p1 /boot/firmware vfat ro,relatime 0 0\n"
        "proc /proc proc rw,nosuid,nodev,noexec,relatime,hidepid=invisible 0 0\n"
        "/dev/mmcblk0p2 /media ext4 rw,relatime 0 0\n"
        "/dev/mmcblk0p2 /mnt ext4 rw,relatime 0 0\n"
        "tmpfs /home tmpfs ro,nosuid,nodev,size=4k,mode=000 0 0\n"
        "tmpfs /tmp tmpfs rw,nosuid,nodev 0 0\n"
    )
    card = "/dev/sda1 /media/robot/CARD vfat rw,uid=990,gid=990,fmask=0177,dmask=0077 0 0\n"
    mounts = tmp_path / "mounts"
    mounts.write_text(service_view)
    assert find_tf_root(mounts, removable=lambda disk: disk == "sda") is None
    mounts.write_text(service_view + card)
    assert find_tf_root(mounts, removable=lambda disk: disk == "sda") == Path("/media/robot/CARD")


# --- the agent inside the unit's sandbox ---------------------------------------------------------

PROBE = r"""
import ctypes, errno, json, os, socket, sys
spec = json.loads(sys.argv[1]); r = {}
def attempt(name, fn):
    try:
        fn(); r[name] = "ok"
    except OSError as e:
        r[name] = errno.errorcode.get(e.errno, str(e.errno))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close())
attempt("unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close())
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def clone3():
    if libc.syscall(435, None, 0) < 0:
        raise OSError(ctypes.get_errno(), "clone3")
attempt("clone3", clone3)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
def wx():
    p = libc.mmap(None, 4096, 7, 0x22, -1, 0)
    if p in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
attempt("write_execute", wx)
def write(path):
    with open(path, "w") as f:
        f.write("x")
    os.unlink(path)
if spec["file_system"]:  # never write into the real /etc
    attempt("etc", lambda: write("/etc/.ticos-sandbox-probe"))
for name, folder in spec["writable"].items():
    attempt(name, lambda: write(os.path.join(folder, ".probe")))
attempt("fifo_in_cwd", lambda: (os.mkfifo(".lgd-nfy-probe"), os.unlink(".lgd-nfy-probe")))
attempt("cpuinfo", lambda: open("/proc/cpuinfo").read(1))
attempt("self_mounts", lambda: open("/proc/self/mounts").read(1))
print(json.dumps(r))
"""


def sandbox_spec(tmp: Path, *, file_system: bool) -> tuple[dict, dict]:
    """The sandbox the unit describes, for this machine's folders; and folder -> stand-in."""
    unit = read_unit()
    state, runtime, scratch, card = (tmp / n for n in ("state", "runtime", "tmp", "card"))
    for folder in (state, runtime, scratch, card):
        folder.mkdir()
        folder.chmod(0o700)
    # what the unit makes writable: StateDirectory=, RuntimeDirectory=, PrivateTmp= and
    # ReadWritePaths= (the card stands for /media/<user>/<card>)
    writable = {}
    if last("StateDirectory", unit=unit):
        writable["state"] = str(state)
    if last("RuntimeDirectory", unit=unit):
        writable["runtime"] = str(runtime)
    if yes(last("PrivateTmp", "no", unit)):
        writable["tmp"] = str(scratch)
    if any(p.lstrip("-") == "/media" for p in " ".join(values("ReadWritePaths", unit)).split()):
        writable["card"] = str(card)
    families = values("RestrictAddressFamilies", unit)
    where = {"%t/" + last("RuntimeDirectory", unit=unit): str(runtime), "%S/" + last("StateDirectory", unit=unit): str(state)}
    resolve = (lambda v: next((v.replace(k, p) for k, p in where.items() if v.startswith(k)), v))
    proc = ["hidepid=" + last("ProtectProc", "default", unit).replace("default", "0")]
    if last("ProcSubset", "all", unit) == "pid":
        proc.append("subset=pid")
    spec = {
        "syscalls": sorted(allowed_syscalls(unit)),
        "families": sorted(getattr(socket, f) for f in " ".join(families).split()) if families else None,
        "mdwe": yes(last("MemoryDenyWriteExecute", "no", unit)),
        "restrict_namespaces": yes(last("RestrictNamespaces", "no", unit)),
        "umask": int(last("UMask", "0022", unit), 8),
        "nofile": int(last("LimitNOFILE", "0", unit)) or None,
        "cwd": resolve(last("WorkingDirectory", unit=unit)) or None,
        "env": {k: resolve(v) for k, _, v in (e.partition("=") for e in values("Environment", unit))},
        "file_system": file_system,
        "writable": writable,
        "proc_options": ",".join(proc),
    }
    return spec, {"state": state, "runtime": runtime, "tmp": scratch, "card": card}


def sandboxed(spec_path: Path, *argv: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--sandbox", str(spec_path), "--", *argv]


def tone(n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.integers(500, 20000, n) * rng.choice((-1, 1), n)).astype("<i2")


class Notifications:
    """A NOTIFY_SOCKET like systemd's: collects READY=1, WATCHDOG=1, STOPPING=1, ..."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.path, self.seen, self.stop = path, [], False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                self.seen.extend(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass

    def wait_for(self, message: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (proc is None or proc.poll() is None):
            if message in self.seen:
                return True
            time.sleep(0.02)
        return message in self.seen

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def _libseccomp_missing() -> str | None:
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return "libseccomp.so.2 is missing (Debian package libseccomp2, a dependency of systemd)"
    return None


@needs_analyze
@pytest.mark.parametrize("file_system", [False, True], ids=["filters", "filters+read-only-fs"])
async def test_agent_works_inside_the_units_sandbox(tmp_path, file_system):
    pytest.importorskip("sounddevice", exc_type=OSError)
    import aiohttp
    import numpy as np

    if reason := _libseccomp_missing():
        pytest.skip(reason)
    if file_system and os.geteuid() != 0:
        pytest.skip("the read-only file system and /proc emulation need root (a private mount namespace)")
    spec, folders = sandbox_spec(tmp_path, file_system=file_system)
    spec_path = tmp_path / "sandbox.json"
    spec_path.write_text(json.dumps(spec))

    # 1. the sandbox bites: each probe answers as the unit says it should
    probe = subprocess.run(sandboxed(spec_path, sys.executable, "-c", PROBE, json.dumps(spec)),
                           capture_output=True, text=True, timeout=60, env={**os.environ, **spec["env"]})
    if file_system and probe.returncode == NO_MOUNT_NAMESPACE:
        pytest.skip(probe.stderr.strip())
    assert probe.returncode == 0, probe.stdout + probe.stderr
    got = json.loads(probe.stdout)
    families = spec["families"]
    assert got["netlink"] == ("EAFNOSUPPORT" if families and socket.AF_NETLINK not in families else "ok"), got
    assert got["unix"] == ("ok" if not families or socket.AF_UNIX in families else "EAFNOSUPPORT"), got
    assert (got["clone3"] == "ENOSYS") == spec["restrict_namespaces"], got
    assert got["write_execute"] == ("EPERM" if spec["mdwe"] else "ok")
    assert got["self_mounts"] == "ok"
    if file_system:
        assert got["etc"] == "EROFS"
        assert {k: got[k] for k in spec["writable"]} == dict.fromkeys(spec["writable"], "ok")
        assert got["fifo_in_cwd"] == "ok", "lgpio could not create its FIFOs in the working directory"
        assert got["cpuinfo"] == ("ENOENT" if "subset=pid" in spec["proc_options"] else "ok")
    killed = subprocess.run(sandboxed(spec_path, sys.executable, "-c", "import os; os.chroot('/')"),
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGSYS, "a call outside the allow list was not stopped"

    # 2. the agent: card storage, a serial MCU on a pty, audio, notify + watchdog, SIGTERM
    master, slave = os.openpty()
    tty.setraw(slave)
    heard = bytearray()

    def mcu():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            heard.extend(chunk)

    threading.Thread(target=mcu, daemon=True).start()
    played = folders["tmp"] / "played.raw"
    asound = tmp_path / "asound.conf"
    asound.write_text('</usr/share/alsa/alsa.conf>\n'
                      f'pcm.!default {{ type file; slave.pcm "null"; file "{played}"; format "raw" }}\n')
    config = tmp_path / "robot.toml"
    config.write_text(f"""
[robot]
mouth = "body"
[actuators.body]
driver = "serial-line"
port = "{os.ttyname(slave)}"
motions = {{ wave = 0.3 }}
mouth = "MOUTH {{level}}"
stop = "STOP"
[storage]
mode = "external"
tf_root = "{folders['card']}"
[audio]
send_truncate = true
""")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notify = Notifications(tmp_path / "notify")
    env = {**os.environ, **spec["env"], "ALSA_CONFIG_PATH": str(asound), "HOME": str(folders["state"]),
           "STATE_DIRECTORY": str(folders["state"]), "NOTIFY_SOCKET": str(notify.path),
           "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)  # the watchdog is for the agent itself
    proc = subprocess.Popen(sandboxed(spec_path, sys.executable, "-m", "ticos_agent.cli", "run", "--config",
                                      str(config), "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        if not await asyncio.to_thread(notify.wait_for, "READY=1", 60, proc):
            proc.kill()
            pytest.fail(f"no READY=1 from the agent (exit status {proc.wait()}):\n{proc.communicate()[0]}")
        speech = tone(24000, 7)
        events = [
            {"type": "conversation.item.created", "item": {"id": "item_U1", "type": "message", "role": "user",
                                                           "content": [{"type": "input_audio"}]}},
            {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_U1",
             "content_index": 0, "transcript": "Wave at me!"},
            {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}},
        ] + [
            {"type": "response.audio.delta", "response_id": "resp_1", "item_id": "item_A1", "output_index": 0,
             "content_index": 0, "delta": base64.b64encode(speech[i:i + 2400].tobytes()).decode()}
            for i in range(0, speech.size, 2400)
        ] + [
            {"type": "response.audio_transcript.done", "response_id": "resp_1", "item_id": "item_A1",
             "output_index": 0, "content_index": 0, "transcript": "Sure, waving now!"},
            {"type": "response.output_item.done", "response_id": "resp_1", "output_index": 1,
             "item": {"id": "item_F1", "type": "function_call", "status": "completed", "name": "motion",
                      "call_id": "call_1", "arguments": json.dumps({"motion_tag": "wave"})}},
            {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": []}},
        ]
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/realtime") as ws:
                for event in events:
                    await ws.send_str(json.dumps(event))
                for _ in range(200):  # 1 s of audio plus the wave
                    await asyncio.sleep(0.05)
                    if played.exists() and (np.frombuffer(played.read_bytes(), "<i2") != 0).sum() >= speech.size \
                            and b"MOTION wave" in heard:
                        break
            async with session.get(f"http://127.0.0.1:{port}/health") as r:
                health = await r.json()
        assert health["status"] == "ok" and not health["problems"], health
        assert await asyncio.to_thread(notify.wait_for, "WATCHDOG=1", 5), "no watchdog ping"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        notify.close()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, out
    assert "STOPPING=1" in notify.seen
    for trouble in ("Operation not permitted", "Read-only file system", "Permission denied", "write+execute"):
        assert trouble not in out, out
    # what the robot did and kept
    assert b"MOTION wave" in heard and b"MOUTH" in heard, bytes(heard)
    samples = np.frombuffer(played.read_bytes(), dtype="<i2")
    assert np.array_equal(samples[samples != 0], speech)
    database = folders["card"] / ".config" / "ticos" / "ticos.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert ("user", "Wave at me!") in rows and ("assistant", "Sure, waving now!") in rows
    for path in database.parent.rglob("*"):  # UMask=0077: nothing for group or others
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, oct(path.stat().st_mode)
