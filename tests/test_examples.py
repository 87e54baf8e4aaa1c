"""The example programs run as shipped (simulated hardware), so they cannot silently rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script,args,expect", [
    ("serial_robot.py", ["--demo"], "stopped"),
    ("rgb_emotion_robot.py", [], "back to neutral"),
    ("custom_function_handler.py", ["--self-test"], '"status": "done"'),
])
def test_example_runs(tmp_path, script, args, expect):
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                         timeout=90, env={**os.environ, "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert expect in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
