"""The ticos-client 0.7.2 anchor's own environment, for ``bench/load.py``.

ticos-client (the SDK ticos-agent replaces) comes from the package registry into its own
virtual environment in a cache folder outside the repository (``$TICOS_BENCH_CACHE``, default
``~/.cache/ticos-bench``), created with the same Python as the running interpreter so both
sides are measured on one interpreter version. Installing it is part of the benchmark, not of
``make test``. Run on its own to install and print where it is::

    .venv/bin/python bench/ticos_client_env.py

The SDK needs a ``~/.config/ticos/config.toml`` (it refuses to start without one);
:func:`make_home` writes one for a benchmark HOME with every endpoint on 127.0.0.1 (port 9, where
nothing listens) and leaves ``session_config`` to the SDK (it creates ``{}``): with no
``agent_id`` there is no config fetch at start, with no ``variables`` no variables upload, and
without ``model.enable_memory_generation = "client"`` no memory summaries (cloud features
ticos-agent does not have). The process also runs with ``bench/netguard`` on its
``PYTHONPATH``, which refuses and logs any outbound connection.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VERSION = "0.7.2"
CONFIG_TOML = """\
# written by ticos-bench: every endpoint on loopback, where nothing answers
[api]
base_url = "ws://127.0.0.1:9"
api_key = "bench-not-a-key"

[executor]
ticos_server_url = "http://127.0.0.1:9"
"""


class Unavailable(Exception):
    """ticos-client could not be installed or run here; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("TICOS_BENCH_CACHE") or Path.home() / ".cache" / "ticos-bench")


def venv_dir() -> Path:
    return cache_dir() / f"ticos-client-{VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}"


def python(install: bool = True) -> Path:
    """The anchor's interpreter, installing the environment first when needed (and allowed)."""
    venv = venv_dir()
    py = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and py.exists():
        return py
    if not install:
        raise Unavailable(f"not installed in {venv} (and --no-install was given)")
    base = getattr(sys, "_base_executable", None) or sys.executable
    print(f"installing ticos-client {VERSION} into {venv} ...", flush=True)
    for cmd in ([base, "-m", "venv", "--clear", str(venv)],
                [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 f"ticos-client=={VERSION}"]):
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            raise Unavailable(f"{' '.join(cmd[-2:])} failed: {' | '.join(tail) or run.returncode}")
    check = subprocess.run([str(py), "-c", "import ticos_client, uvicorn, fastapi"], capture_output=True, text=True)
    if check.returncode != 0:
        raise Unavailable(f"ticos-client installed but does not import: {check.stderr.strip().splitlines()[-1:]}")
    freeze = subprocess.run([str(py), "-m", "pip", "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True).stdout
    (venv / "freeze.txt").write_text(freeze)
    marker.touch()
    return py


def versions() -> str:
    """The versions that matter for the anchor's speed, from the install's ``pip freeze``."""
    freeze = venv_dir() / "freeze.txt"
    if not freeze.exists():
        return ""
    keep = ("ticos-client", "fastapi", "starlette", "uvicorn", "uvloop", "websockets", "httptools", "pydantic")
    pins = [line for line in freeze.read_text().splitlines() if line.split("==")[0].lower() in keep]
    return ", ".join(pins)


def make_home(home: Path) -> Path:
    conf = home / ".config" / "ticos"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "config.toml").write_text(CONFIG_TOML)
    return home


if __name__ == "__main__":
    try:
        print(python())
        print(versions())
    except Unavailable as exc:
        sys.exit(f"ticos-client {VERSION} unavailable: {exc}")
