"""A custom handler: the voice agent calls a non-motion function and gets a result back.

    python examples/custom_function_handler.py            # serve on ws://127.0.0.1:9999/realtime
    python examples/custom_function_handler.py --self-test

Built-in motions and emotions keep working next to it (simulated robot here); with
``[replies] function_call_output = true`` every call's result goes back to the voice agent as
a ``function_call_output`` item. ``--self-test`` plays the voice agent over a real WebSocket.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp

from ticos_agent import Agent


def make_agent(port: int) -> Agent:
    agent = Agent({"server": {"port": port}, "storage": {"enabled": False}, "audio": {"enabled": False},
                   "replies": {"function_call_output": True}})

    @agent.on_function("get_battery")
    def get_battery(call):  # sync handlers run in a thread
        return {"percent": 87, "charging": False}

    @agent.on_function("set_volume")
    async def set_volume(call):  # async handlers run as tasks
        level = int(call.arguments.get("level", 50))
        return {"volume": max(0, min(100, level))}

    return agent


def call_event(name: str, call_id: str, arguments: dict) -> str:
    item = {"id": f"item_{call_id}", "type": "function_call", "status": "completed", "name": name,
            "call_id": call_id, "arguments": json.dumps(arguments)}
    return json.dumps({"type": "response.output_item.done", "response_id": "resp_1", "output_index": 0, "item": item})


async def self_test() -> None:
    async with (
        make_agent(0) as agent,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime") as ws,
    ):
        await ws.send_str(call_event("get_battery", "call_1", {}))
        await ws.send_str(call_event("set_volume", "call_2", {"level": 140}))
        await ws.send_str(call_event("motion", "call_3", {"motion_tag": "nod", "speed": 2.0}))
        for _ in range(3):
            msg = json.loads((await ws.receive(timeout=10)).data)
            item = msg.get("item", {})
            print(msg["type"], item.get("call_id"), item.get("output"))


async def serve(port: int) -> None:
    async with make_agent(port):
        await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="custom function handler example")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--port", type=int, default=9999)
    a = ap.parse_args()
    try:
        asyncio.run(self_test() if a.self_test else serve(a.port))
    except KeyboardInterrupt:
        pass
