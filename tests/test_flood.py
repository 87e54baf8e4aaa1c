"""A flood of calls costs bounded memory and time: excess calls are answered busy (stored,
logged, sent back), and /health answers throughout (issue 8, item 3)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp
from helpers import agent_config, settle, wait_for
from traces import ev, function_call_done

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
        replies = asyncio.create_task(_read_all(peer))  # a voice agent reads (one that does not is dropped)
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
        replies.cancel()
        h = agent.health()
        assert h["actuators"]["actuators"]["arm"]["queued"] <= 16
        # answered busy by the call intake (too many in flight) or by the arm's queue
        assert h["counters"].get("busy_calls", 0) + h["actuators"]["busy"] >= 19_900  # all but what ran or waits
        await settle(agent)
        stored = [c["status"] for c in await agent.store.calls(limit=500)]
        assert stored.count("busy") >= 490  # the newest 500: all busy but a few that found a free slot
        assert mid_flood >= 1
    finally:
        await agent.stop()


async def _read_all(peer) -> None:
    async for _ in peer.ws:
        pass


async def test_frames_already_waiting_on_one_socket_let_the_loop_serve_others_between_them(agent):
    """``receive()`` returns buffered frames without yielding: a flood on one socket would keep
    every timer, request and other socket waiting until it is drained. The socket lets the loop
    in every ``SOCKET_TURN`` (2 ms) instead."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    class Slow:  # 1 ms a frame, on the loop
        def routes(self):
            return {"*": self.take}

        def take(self, event, peer):
            if not seen:
                loop.call_soon(seen.append, "the loop")  # what a timer or another socket waits for
            time.sleep(0.001)
            seen.append(event.type)

    connected, go = threading.Event(), threading.Event()

    async def flood() -> None:  # on a loop of its own: it sends while the agent's loop is held
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime") as ws:
            connected.set()
            go.wait(5)
            for _ in range(60):
                await ws.send_str(json.dumps(ev("custom.thing")))
            while seen.count("custom.thing") < 60:
                await asyncio.sleep(0.01)

    agent.intake.add(Slow(), name="slow")
    sender = threading.Thread(target=asyncio.run, args=(flood(),))
    sender.start()
    await wait_for(connected.is_set)
    go.set()
    time.sleep(0.3)  # holds the agent's loop: the whole burst is in its socket when it reads again
    await wait_for(lambda: seen.count("custom.thing") == 60)
    await asyncio.to_thread(sender.join, 5)
    assert seen.index("the loop") < 10, seen


async def test_a_send_given_up_on_a_full_socket_leaves_the_others_waiting_for_it_to_drain(agent, connect):
    """aiohttp's writers to one socket wait on one shared drain future while its buffer is full;
    cancelling one of them would cancel it for good: the other sends would fail at once, and
    every later one would pile its data onto the socket with no back-pressure and no timeout.
    A send given up leaves that future alone; the stop then closes the socket cleanly."""
    client = await connect(agent)  # reads nothing: the agent's sends to it back up
    await wait_for(lambda: len(agent.peers) == 1)
    peer = next(iter(agent.peers))
    big = {"type": "padding", "text": "x" * (1 << 20)}
    while True:  # until the socket is full: a send that does not return at once
        given_up = asyncio.create_task(peer.send(big))
        await asyncio.sleep(0.05)
        if not given_up.done():
            break
        assert given_up.result() is True
    other = asyncio.create_task(peer.send(big))
    await asyncio.sleep(0.05)
    given_up.cancel()
    later = asyncio.create_task(peer.send(big))
    await asyncio.sleep(0.1)
    assert not other.done() and not later.done()  # still held back by the full socket
    await agent.stop()  # no CancelledError out of the stop; the sends end with the socket
    assert await other is False and await later is False
    await client.ws.close()
