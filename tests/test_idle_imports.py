"""Idle memory: what a serving agent does not use yet is not loaded yet, and loads when used.

A TicosClient storing on internal storage, with a voice agent connected that has sent
nothing, holds neither orjson (the first frame loads it), nor the memory API, tools, routes,
model and the store's memory queries (the first memory route, tool call or API call loads
them), nor hmac (only a ``server.token`` is compared with it). Each is then used once, and
loads; the feature works. Run in a fresh interpreter: the test process has loaded them all.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import free_port, run_fresh

WATCHED = ("orjson", "hmac", "ticos_agent.memory.api", "ticos_agent.memory.model", "ticos_agent.memory.tools",
           "ticos_agent.memory.routes", "ticos_agent.storage.memories", "ticos_agent.storage.search")

SCRIPT = """
import asyncio, json, sys, time, aiohttp
sys.path.insert(0, {tests!r})
from traces import function_call_done
from ticos_agent import TicosClient

WATCHED = {watched!r}
stages = {{}}

def note(stage):
    stages[stage] = sorted(m for m in WATCHED if m in sys.modules)

def wait(predicate):
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)

stored = []
c = TicosClient(port={port})
c.enable_local_storage({db!r})
c.set_memory_handler(lambda action, payload: stored.append(payload["via"]))
assert c.start()
base = "http://127.0.0.1:{port}"

async def talk():
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(base + "/realtime")
        await asyncio.sleep(0.3)
        note("serving")
        await ws.send_json({{"type": "session.updated", "session": {{}}}})
        await asyncio.to_thread(wait, lambda: c.agent.counters["events"] >= 1)
        note("frame")
        async with s.get(base + "/v1/memories") as r:
            assert r.status == 200 and (await r.json())["memories"] == [], r.status
        note("route")
        await ws.send_json(function_call_done("resp_1", "call_1", "remember", {{"content": "Lin likes kites."}}))
        await asyncio.to_thread(wait, lambda: stored == ["tool"])
        note("tool")
        await ws.close()

asyncio.run(talk())
hits = c.recall("kites")
assert [h.text for h in hits][:1] == ["Lin likes kites."], hits
note("recall")
c.stop()

from ticos_agent.config import ServerConfig
from ticos_agent.guard import Guard
Guard(ServerConfig(), __import__("collections").Counter())
note("no token")
Guard(ServerConfig(token="secret"), __import__("collections").Counter())
note("token")
print(json.dumps(stages))
"""


def test_a_serving_client_loads_orjson_hmac_and_the_memory_code_only_when_used(tmp_path):
    script = SCRIPT.format(tests=str(Path(__file__).parent), watched=WATCHED, port=free_port(),
                           db=str(tmp_path / "db"))
    stages = json.loads(run_fresh(script, tmp_path, timeout=90).strip().splitlines()[-1])
    # the route lists memories with the read queries; the search (its LIKE escaping, its ranking)
    # comes with the store's memory functions, at the first tool call
    route = ["orjson", "ticos_agent.memory.api", "ticos_agent.memory.model", "ticos_agent.memory.routes"]
    used = sorted([*route, "ticos_agent.memory.tools", "ticos_agent.storage.memories", "ticos_agent.storage.search"])
    assert stages == {
        "serving": [],
        "frame": ["orjson"],
        "route": route,
        "tool": used,
        "recall": used,
        "no token": used,
        "token": sorted(["hmac", *used]),
    }, stages
