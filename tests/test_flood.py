"""A flood of calls costs bounded memory and time: excess calls are answered busy (stored,
logged, sent back), and /health answers throughout (issue 8, item 3)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from helpers import agent_config, settle
from traces import function_call_done

from ticos_agent import Agent


def robot(**caps) -> dict:
    return {"actuators": {"arm": {"driver": "mock", "kind": "position"}},
            "motions": {"wave": {"arm": [[0.5, 30], [1.0, 0]]}},
            "robot": {"default_library": False, **caps}}


async def test_calls_beyond_the_queue_caps_are_answered_busy(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, **robot(max_queued=4, max_per_response=50, max_queued_seconds=600)))
    await agent.start()
    try:
        peer = await connect(agent)
        await peer.send(*[function_call_done("r1", f"c{i}", "motion", {"motion_tag": "wave"}) for i in range(10)])
        replies = [await peer.receive_json(timeout=5) for _ in range(6)]  # the busy ones come back at once
        assert all(r["type"] == "conversation.item.create" for r in replies)
        outputs = {r["item"]["call_id"]: json.loads(r["item"]["output"]) for r in replies}
        assert set(outputs) == {f"c{i}" for i in range(4, 10)}
        assert all(o["status"] == "busy" and "robot.max_queued" in o["reason"] for o in outputs.values())
        await settle(agent)
        calls = {c["call_id"]: c for c in await agent.store.calls(limit=50)}
        assert {calls[f"c{i}"]["status"] for i in range(4, 10)} == {"busy"}
        assert agent.health()["actuators"]["busy"] == 6
    finally:
        await agent.stop()


async def test_planned_seconds_and_per_response_caps(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, **robot(max_queued=100, max_per_response=3, max_queued_seconds=2.5)))
    await agent.start()
    try:
        peer = await connect(agent)
        # one second each: the third would make 3 s of queued motion on the arm
        await peer.send(*[function_call_done("r1", f"s{i}", "motion", {"motion_tag": "wave"}) for i in range(3)])
        reply = await peer.receive_json(timeout=5)
        out = json.loads(reply["item"]["output"])
        assert reply["item"]["call_id"] == "s2" and out["status"] == "busy" and "max_queued_seconds" in out["reason"]
        await peer.send(*[function_call_done(f"r{i}", f"x{i}", "motion", {"motion_tag": "wave", "speed": 5})
                          for i in range(2, 4)])
        await asyncio.sleep(0.1)
        await peer.send(*[function_call_done("r9", f"p{i}", "motion", {"motion_tag": "wave", "speed": 5})
                          for i in range(4)])
        got = []
        while len(got) < 1:
            r = await peer.receive_json(timeout=5)
            if json.loads(r["item"]["output"])["status"] == "busy":
                got.append(r)
        assert "max_per_response" in json.loads(got[0]["item"]["output"])["reason"] or \
            "max_queued" in json.loads(got[0]["item"]["output"])["reason"]
    finally:
        await agent.stop()


async def test_twenty_thousand_motion_calls_stay_bounded_and_health_answers(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, **robot()))
    await agent.start()
    try:
        peer = await connect(agent)
        frames = [json.dumps(function_call_done(f"r{i % 50}", f"f{i}", "motion", {"motion_tag": "wave"}))
                  for i in range(20_000)]
        sender = asyncio.create_task(peer.send(*frames))
        mid_flood = 0  # /health answers while the flood is being taken in (its latency: bench/drills.py)
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
                    assert resp.status == 200
                    taken = (await resp.json())["counters"]["events"]
                if taken >= 20_000:
                    break
                mid_flood += 1
                await asyncio.sleep(0.01)
        await sender
        h = agent.health()
        assert h["actuators"]["actuators"]["arm"]["queued"] <= 16
        # answered busy by the call intake (too many in flight) or by the arm's queue
        assert h["counters"]["busy_calls"] + h["actuators"]["busy"] >= 19_900  # all but what ran or waits
        await settle(agent)
        stored = [c["status"] for c in await agent.store.calls(limit=500)]
        assert stored.count("busy") >= 490  # the newest 500: all busy but a few that found a free slot
        assert mid_flood >= 1
    finally:
        await agent.stop()
