"""A handler that blocks the event loop is named, with its file and line, in the log and /health."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from helpers import agent_config, health, wait_for

from ticos_agent import Agent


def done(n: int) -> dict:
    return {"type": "response.done", "event_id": f"event_{n}", "response": {"id": f"resp_{n}", "status": "completed"}}


def stall_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ticos_agent.stall"]


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ticos-loop-watch"]


async def test_an_async_handler_that_sleeps_is_named_while_it_blocks_and_after(start_agent, connect, http, caplog):
    caplog.set_level(logging.WARNING, logger="ticos_agent.stall")
    agent = await start_agent(log={"loop_stall": 0.3})

    async def sleeps_on_the_loop(event):
        time.sleep(1.3)  # the mistake: a blocking call in an async handler

    agent.on("response.done", sleeps_on_the_loop)
    peer = await connect(agent)
    await peer.send(done(1))
    await wait_for(lambda: agent.health()["loop"]["stalls"] == 1, timeout=5)
    while_blocked, after = stall_lines(caplog)
    assert "has been blocked for" in while_blocked and "test_stall.py:" in while_blocked
    assert "sleeps_on_the_loop" in while_blocked
    assert "ran again, after at least 1." in after and "sleeps_on_the_loop" in after
    report = (await health(agent, http))["loop"]
    assert report["stalls"] == 1 and 1.0 <= report["longest_s"] < 3
    assert "sleeps_on_the_loop" in report["last"]
    await peer.send(done(2))  # the socket works on
    await wait_for(lambda: agent.counters["events"] == 2)


async def test_an_inline_handler_that_computes_is_named(start_agent, connect, caplog):
    caplog.set_level(logging.WARNING, logger="ticos_agent.stall")
    agent = await start_agent(log={"loop_stall": 0.3})

    def computes_inline(event):
        spin(1.2)

    agent.on("response.done", computes_inline, inline=True)
    peer = await connect(agent)
    await peer.send(done(1))
    await wait_for(lambda: agent.health()["loop"]["stalls"] == 1, timeout=5)
    lines = stall_lines(caplog)
    assert len(lines) == 2
    # the handler (reached through aiohttp's request task and the intake), then where it spins
    assert all("computes_inline (innermost: " in line and " spin)" in line for line in lines), lines
    assert not any("aiohttp" in line for line in lines)


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def test_a_sync_handler_on_the_handler_thread_blocks_nothing(start_agent, connect, caplog):
    caplog.set_level(logging.WARNING, logger="ticos_agent.stall")
    agent = await start_agent(log={"loop_stall": 0.3})
    agent.on("response.done", lambda event: time.sleep(1.2))
    peer = await connect(agent)
    await peer.send(done(1), done(2))
    await wait_for(lambda: agent.dispatcher.stats()["backlog"] == 0, timeout=5)
    assert agent.health()["loop"]["stalls"] == 0 and stall_lines(caplog) == []


async def test_the_watch_is_on_by_default_stops_with_the_agent_and_can_be_turned_off(tmp_path):
    before = len(watch_threads())
    agent = Agent(agent_config(tmp_path / "a"))
    await agent.start()
    try:
        assert agent.health()["loop"] == {"stall_after_s": 1.0, "stalls": 0, "longest_s": 0.0, "last": None}
        assert len(watch_threads()) == before + 1
    finally:
        await agent.stop()
    assert len(watch_threads()) == before
    off = Agent(agent_config(tmp_path / "b", log={"loop_stall": 0}))
    await off.start()
    try:
        assert off.health()["loop"] is None and len(watch_threads()) == before
    finally:
        await off.stop()


def test_a_threshold_so_small_that_jitter_would_be_a_stall_is_refused():
    from ticos_agent import ConfigError
    from ticos_agent.config import from_dict

    assert from_dict({"log": {"loop_stall": 0}}).log.loop_stall == 0
    with pytest.raises(ConfigError, match=r"log\.loop_stall"):
        from_dict({"log": {"loop_stall": 0.01}})
