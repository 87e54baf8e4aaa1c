"""A card written in one time zone, read on a computer in another: every view shows the
robot's local time, events and messages on one clock."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

WRITE = """
import asyncio, sys
from ticos_agent.storage import open_store

async def main():
    store = await open_store("internal", internal_dir=sys.argv[1])
    store.log_event("session.created", session_id="sess_tokyo")
    store.log_event("conversation.item.created", session_id="sess_tokyo", item_id="item_T")
    store.add_message(role="user", content="konnichiwa", item_id="item_T", session_id="sess_tokyo")
    store.log_event("response.created", session_id="sess_tokyo", response_id="r1")
    store.log_event("input_audio_buffer.speech_started", session_id="sess_tokyo")
    store.log_event("response.done", session_id="sess_tokyo", response_id="r1")
    store.add_message(role="assistant", content="hello from", item_id="item_A", session_id="sess_tokyo",
                      status="cancelled", response_id="r1")
    await store.close()

asyncio.run(main())
"""


def cli(tz: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TZ": tz, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "ticos_agent.cli", *argv], capture_output=True, text=True,
                          timeout=60, env=env)


def test_the_robot_in_tokyo_read_in_utc(tmp_path):
    subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], check=True, timeout=60,
                   env={**os.environ, "TZ": "JST-9"})
    db = str(tmp_path / "ticos.db")
    messages = cli("UTC0", "inspect", "messages", "--db", db)
    stored = messages.stdout.splitlines()[1][:19]  # the robot's own local time, as stored
    events = cli("UTC0", "inspect", "events", "--db", db, "--verbose")
    assert "the robot's clock is UTC+09:00 (this computer's is UTC+00:00)" in events.stderr
    created = next(line for line in events.stdout.splitlines() if "conversation.item.created" in line)
    assert created[:19] == stored  # the event log on the robot's clock, not this computer's
    at_home = cli("JST-9", "inspect", "events", "--db", db, "--verbose")
    assert "the robot's clock" not in at_home.stderr and at_home.stdout == events.stdout
    transcript = cli("UTC0", "inspect", "--db", db)
    cut = next(line for line in transcript.stdout.splitlines() if "cut off by barge-in" in line)
    after = (dt.datetime.fromisoformat(stored) + dt.timedelta(seconds=1)).strftime("%H:%M:%S")
    assert f"at {stored[11:19]}" in cut or f"at {after}" in cut  # the same second, or the next
    since = cli("UTC0", "inspect", "messages", "--db", db, "--since", stored)
    assert "konnichiwa" in since.stdout  # --since is the robot's local time too
