"""Third-party drivers: a separately installed package registers a driver through the
``ticos_agent.drivers`` entry points and is driven from config; a plug-in that fails to load
is logged and skipped, and a config naming it gets an error that says why.

The package is installed the way pip lays it out (the module next to its ``*.dist-info`` with
``entry_points.txt``) into a temporary directory put on ``PYTHONPATH`` of a fresh interpreter,
so nothing needs the network and the test environment itself is left untouched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

TINY_DRIVER = '''
"""A driver from another package: it writes what it is told to a file."""

from ticos_agent.actuators import Driver
from ticos_agent.options import Integer, Path


class TinyDriver(Driver):
    """Writes every operation to a file (a stand-in for real hardware)."""

    options = {
        "log": Path(doc="file that receives the work", example="/tmp/tiny.log"),
        "axes": Integer(1, "values per target", minimum=1, maximum=4),
    }

    @classmethod
    def channels(cls, options):
        return options["axes"]

    async def open(self):
        self._fh = open(self.opts["log"], "a")

    def _write(self, text):
        self._fh.write(text + "\\n")
        self._fh.flush()

    def safe(self):
        self._write("safe")

    def move(self, targets, seconds):
        self._write(f"move {targets} {seconds:.2f}")

    async def close(self):
        self._fh.close()


def not_a_driver():
    pass
'''

ENTRY_POINTS = """
[ticos_agent.drivers]
tiny = tiny_driver:TinyDriver
broken = broken_driver:BrokenDriver
notadriver = tiny_driver:not_a_driver
mock = tiny_driver:TinyDriver
"""


@pytest.fixture
def site(tmp_path):
    """A directory holding the installed package ``ticos-tiny-driver`` (and a broken one)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tiny_driver.py").write_text(TINY_DRIVER)
    (site / "broken_driver.py").write_text('raise ImportError("needs libfoo, which is not installed")\n')
    info = site / "ticos_tiny_driver-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ticos-tiny-driver\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "top_level.txt").write_text("tiny_driver\nbroken_driver\n")
    return site


def run(site, *args, code=None, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "ticos_agent.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, **kw)


def robot(tmp_path, driver="tiny") -> tuple:
    log = tmp_path / "tiny.log"
    path = tmp_path / "robot.toml"
    path.write_text(textwrap.dedent(f"""
        [robot]
        default_library = false
        [actuators.tail]
        driver = "{driver}"
        log = "{log}"
        axes = 2
        [motions.wag]
        tail = [[0.05, [10, -10]], [0.1, [0, 0]]]
    """))
    return path, log


DRIVE = """
import asyncio, json, sys
from ticos_agent.actuators import ActuatorSystem
from ticos_agent.config import load
from ticos_agent.events import MotionArgs

config = load(sys.argv[1])

async def main():
    system = ActuatorSystem(config.actuators)
    await system.start()
    out = await system.motion(MotionArgs("wag", repeat=2))
    await system.stop()
    print(json.dumps(out.as_dict()))

asyncio.run(main())
"""


def test_a_driver_from_another_package_is_driven_from_config(site, tmp_path):
    path, log = robot(tmp_path)
    out = run(site, str(path), code=DRIVE)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "done"
    assert log.read_text().splitlines() == [
        "safe",
        "move [10.0, -10.0] 0.05", "move [0.0, 0.0] 0.05",
        "move [10.0, -10.0] 0.05", "move [0.0, 0.0] 0.05",
        "safe",
    ]
    # the broken plug-ins were logged and skipped; the one reusing a built-in name too
    assert "'broken'" in out.stderr and "needs libfoo" in out.stderr
    assert "'notadriver'" in out.stderr and "not a ticos_agent Driver subclass" in out.stderr
    assert "'mock'" in out.stderr and "built in" in out.stderr


def test_without_the_package_the_driver_is_unknown(tmp_path):
    path, _ = robot(tmp_path)
    out = run(tmp_path / "nowhere", "config", "--config", str(path))
    assert out.returncode == 2 and "actuators.tail.driver: got 'tiny'" in out.stderr


def test_a_config_naming_a_plugin_that_failed_to_load_says_why(site, tmp_path):
    path, _ = robot(tmp_path, driver="broken")
    out = run(site, "config", "--config", str(path))
    assert out.returncode == 2
    line = next(line for line in out.stderr.splitlines() if "actuators.tail.driver" in line)
    assert "'tiny'" in line and "installed but failed to load: ImportError: needs libfoo" in line


def test_example_and_effective_config_show_the_plugin(site, tmp_path):
    example = run(site, "config", "--example")
    assert example.returncode == 0, example.stderr
    assert '#[actuators.tiny]\n' in example.stdout and '#log = "/tmp/tiny.log"' in example.stdout
    path, log = robot(tmp_path)
    out = run(site, "config", "--config", str(path))
    assert out.returncode == 0, out.stderr
    assert f'driver = "tiny"\nrole = "tail"\nlog = "{log}"\naxes = 2' in out.stdout


def test_the_daemon_serves_a_function_call_with_a_plugin_driver(site, tmp_path):
    path, log = robot(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(site)}
    proc = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", "run", "--config", str(path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        call = {"type": "response.output_item.done", "event_id": "e1",
                "item": {"id": "item_F1", "type": "function_call", "status": "completed", "name": "motion",
                         "call_id": "call_1", "arguments": json.dumps({"motion_tag": "wag"})}}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/events", data=json.dumps(call).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 202
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and log.read_text().count("move") < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert log.read_text().splitlines()[1:3] == ["move [10.0, -10.0] 0.05", "move [0.0, 0.0] 0.05"], output
    assert "needs libfoo" in output  # logged, skipped, and the agent served anyway
