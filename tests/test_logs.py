"""The log as a person reads it: the robot's story at INFO, journald priorities under
systemd, peer strings that cannot forge lines, and no aiosqlite chatter at DEBUG."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import aiohttp
from helpers import agent_config, free_port, robot_config, settle, wait_for
from traces import assistant_turn, ev, function_call_done, response_done, speech_started, transcription, user_item

from ticos_agent import Agent
from ticos_agent.logs import JournalFormatter, peer_text, said


def story(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("ticos_agent")]


async def test_info_tells_what_was_heard_said_and_done(tmp_path, connect, caplog):
    caplog.set_level(logging.INFO, logger="ticos_agent")
    agent = Agent(agent_config(tmp_path, actuators={"arm": {"driver": "mock", "kind": "position"}},
                               motions={"wave": {"arm": [[0.05, 30], [0.1, 0]]}}))
    await agent.start()
    try:
        peer = await connect(agent)
        long_reply = "Sure! " + "I am waving at you with all my heart " * 5
        await peer.send(user_item("u1"), transcription("u1", "Wave at me,\nplease!"),
                        ev("response.created", response={"id": "r1", "status": "in_progress", "output": []}),
                        function_call_done("r1", "c1", "motion", {"motion_tag": "wave", "repeat": 2}),
                        *assistant_turn("r1", "a1", [long_reply], audio=False)[1:])
        await wait_for(lambda: any("motion wave x2" in line for line in story(caplog)))
        await peer.send(ev("response.created", response={"id": "r2", "status": "in_progress", "output": []}),
                        speech_started("u2"), response_done("r2", "cancelled"))
        await settle(agent)
        await wait_for(lambda: any("barge-in" in line for line in story(caplog)))
    finally:
        await agent.stop()
    lines = story(caplog)
    text = "\n".join(lines)
    assert re.search(r'heard: "Wave at me, please!"', text), text
    said_line = next(line for line in lines if "said:" in line)
    quoted = said_line.split("said: ", 1)[1]
    assert quoted.startswith('"Sure! I am waving at you') and quoted.endswith('..."') and len(quoted) <= 80 + 5
    assert re.search(r"motion wave x2: done in 0\.[2-9]\d s", text), text
    assert re.search(r"barge-in: stopped response r2 \(audio is off\); no command was queued", text), text
    assert "response cancelled: stopped response r2" not in text  # stopped once, not again by its response.done
    assert "None" not in text


async def test_info_tells_each_emotion_with_its_intensity_duration_and_outcome(tmp_path, connect, caplog):
    caplog.set_level(logging.INFO, logger="ticos_agent")
    agent = Agent(robot_config(tmp_path))
    await agent.start()
    try:
        peer = await connect(agent)
        outcomes = lambda: [line for line in story(caplog) if re.search(r": \w+ in \d", line)]  # noqa: E731
        await peer.send(ev("response.created", response={"id": "r1", "status": "in_progress", "output": []}))
        for n, (name, arguments) in enumerate([
                ("emotion", {"emotion_tag": "happy", "intensity": 0.5, "duration": 0.1}),
                ("motion_and_emotion", {"motion_tag": "wave", "emotion_tag": "neutral", "speed": 2}),
                ("emotion", {"emotion_tag": "furious"})], start=1):
            await peer.send(function_call_done("r1", f"c{n}", name, arguments))
            await wait_for(lambda n=n: len(outcomes()) == n)  # one at a time: none preempts another
        await peer.send(response_done("r1"))
    finally:
        await agent.stop()
    text = "\n".join(story(caplog))
    assert re.search(r"emotion happy at 0\.5 for 0\.1 s: done in \d\.\d\d s", text), text
    assert re.search(r"motion wave at speed 2 \+ emotion neutral: done in \d\.\d\d s", text), text
    assert re.search(r"emotion furious: failed in \d\.\d\d s \(.*furious.*\)", text), text
    assert "None" not in text


def test_peer_strings_are_escaped_and_cut():
    assert peer_text("item\nERROR forged line\x1b[2J") == "item\\nERROR forged line\\x1b[2J"
    assert peer_text("x" * 500).startswith("x" * 200) and peer_text("x" * 500).endswith("...(+300)")
    assert said("  two\n lines  ") == '"two lines"'
    record = logging.LogRecord("ticos_agent.x", logging.WARNING, __file__, 1, "bad id %s", ("a\nb\u009b31m",), None)
    assert JournalFormatter().format(record) == "<4>ticos_agent.x: bad id a\\nb\\u009b31m"



def _run_agent(tmp_path, *args: str, journal: bool, hostile: list[dict]) -> str:
    """Spawn ``ticos-agent run``, send it ``hostile`` frames, stop it; returns what it logged."""
    port = free_port()
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("JOURNAL_STREAM", None)
    if journal:
        st = os.fstat(write_fd)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    proc = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", "run", "--port", str(port), *args],
                            stdout=write_fd, stderr=write_fd, env=env)
    os.close(write_fd)

    async def talk() -> None:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 15
            while True:
                try:
                    ws = await session.ws_connect(f"http://127.0.0.1:{port}/realtime")
                    break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            for frame in hostile:
                await ws.send_str(json.dumps(frame))
            await asyncio.sleep(0.3)
            await ws.close()

    try:
        asyncio.run(talk())
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    with os.fdopen(read_fd) as out:
        return out.read()


HOSTILE = [user_item("u1"),
           {"type": "conversation.item.input_audio_transcription.failed",
            "item_id": "u1\nERROR forged: motor on fire\x1b[31m", "error": {"message": "x" * 5000}}]


def test_under_systemd_lines_carry_priorities_and_no_timestamp(tmp_path):
    out = _run_agent(tmp_path, journal=True, hostile=HOSTILE)
    lines = out.splitlines()
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), out[:2000]
    assert any(line.startswith("<4>") and "SIMULATED" in line for line in lines)
    assert any(line.startswith("<6>") and "ready on ws://" in line for line in lines)
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines if "ready on" in line)
    failed = [line for line in lines if "did not catch" in line]
    assert len(failed) == 1 and failed[0].startswith("<4>")
    assert "u1\\nERROR forged" in failed[0] and "\\x1b[31m" in failed[0] and len(failed[0]) < 600
    assert "\x1b" not in out and not any(line.startswith("ERROR forged") for line in lines)


def test_debug_is_not_drowned_in_aiosqlite(tmp_path):
    out = _run_agent(tmp_path, "--log-level", "debug", journal=False, hostile=HOSTILE[:1])
    assert re.search(r"DEBUG +ticos_agent\.intake: \w+ takes .*response\.done", out), out[:1500]
    assert "aiosqlite" not in out
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO +ticos_agent\.agent: ready on", out, re.M), out[:1500]


def test_a_flood_of_bad_frames_cannot_flood_the_log(tmp_path):
    frames = [{"type": "response.created", "response": "not an object", "n": i} for i in range(3000)]
    out = _run_agent(tmp_path, journal=False, hostile=frames)
    rejected = [line for line in out.splitlines() if "rejected frame" in line]
    assert 1 <= len(rejected) <= 25, len(rejected)
    assert len(out) < 20_000


def test_the_rate_limit_tells_how_many_lines_it_held_back():
    from ticos_agent.logs import RateLimit

    limit = RateLimit(burst=3, window=0.2)

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("ticos_agent.t", logging.WARNING, __file__, 1, msg, ("x",), None)

    passed = [limit.filter(rec("bad frame %s")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limit.filter(rec("another kind %s"))  # other lines are not held back
    time.sleep(0.25)
    record = rec("bad frame %s")
    assert limit.filter(record) and "[7 similar lines suppressed in the last 0.2 s]" in record.getMessage()
    assert limit.filter(logging.LogRecord("x", logging.CRITICAL, __file__, 1, "bad frame %s", ("x",), None))
