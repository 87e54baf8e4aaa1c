"""Who may talk to the agent: Host, Origin, token, JSON bodies, connection cap, timeouts.

Real server on loopback, real aiohttp clients and raw sockets. (A real browser attacking
from another origin is in test_browser.py.)"""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from helpers import agent_config, settle, wait_for
from traces import function_call_done, transcription, user_item

from ticos_agent import Agent


@pytest.fixture
def make_agent(start_agent):
    return lambda **server: start_agent(server=server)



async def nothing_happened(agent: Agent, calls: list) -> None:
    await settle(agent)
    assert calls == []
    assert await agent.store.messages(limit=10) == []
    assert await agent.store.calls(limit=10) == []


MOTION = function_call_done("r1", "call_evil", "motion", {"motion_tag": "wave"})


async def test_a_foreign_origin_cannot_open_the_socket_or_post(make_agent):
    agent = await make_agent()
    calls = []
    agent.on_motion(calls.append)
    url = f"http://127.0.0.1:{agent.port}"
    async with aiohttp.ClientSession() as http:
        for origin in ("http://evil.example", "null", "http://127.0.0.1:8080", f"http://localhost:{agent.port}"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(f"{url}/realtime", origin=origin)
            assert info.value.status == 403
            async with http.post(f"{url}/v1/events", json=MOTION, headers={"Origin": origin}) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"]["code"] == "foreign_origin"
            async with http.get(f"{url}/v1/messages", headers={"Origin": origin}) as resp:
                assert resp.status == 403
        await nothing_happened(agent, calls)
        # a voice agent sends no Origin and is served
        async with http.ws_connect(f"{url}/realtime") as ws:
            await ws.send_json(MOTION)
            await wait_for(lambda: calls)
    assert agent.health()["counters"]["refused_requests"] == 12


async def test_an_allowed_origin_is_served(make_agent):
    agent = await make_agent(allowed_origins=["http://dashboard.local:8080"])
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime", origin="http://dashboard.local:8080/"):
            pass
        async with http.get(f"http://127.0.0.1:{agent.port}/health",
                            headers={"Origin": "http://dashboard.local:8080"}) as resp:
            assert resp.status == 200
            assert resp.headers.get("Access-Control-Allow-Origin") is None  # still no CORS


async def test_a_rebinding_host_name_is_refused(make_agent):
    agent = await make_agent(names=["robot.local"])
    url = f"http://127.0.0.1:{agent.port}"
    async with aiohttp.ClientSession() as http:
        for host in (f"evil.example:{agent.port}", "evil.example", f"127.0.0.1.nip.io:{agent.port}"):
            async with http.post(f"{url}/v1/events", json=MOTION, headers={"Host": host}) as resp:
                assert resp.status == 421, host
            async with http.get(f"{url}/v1/messages", headers={"Host": host}) as resp:
                assert resp.status == 421
        for host in (f"127.0.0.1:{agent.port}", f"localhost:{agent.port}", f"[::1]:{agent.port}", "robot.local",
                     f"ROBOT.local.:{agent.port}", f"192.168.1.20:{agent.port}"):
            async with http.get(f"{url}/health", headers={"Host": host}) as resp:
                assert resp.status == 200, host
    await settle(agent)
    assert await agent.store.calls(limit=10) == []


async def test_only_json_bodies_are_accepted(make_agent):
    agent = await make_agent()
    calls = []
    agent.on_motion(calls.append)
    url = f"http://127.0.0.1:{agent.port}/v1/events"
    import json

    body = json.dumps(MOTION)
    async with aiohttp.ClientSession() as http:
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": ctype} if ctype else {}
            async with http.post(url, data=body.encode(), headers=headers) as resp:
                assert resp.status == 415, ctype
        await nothing_happened(agent, calls)
        async with http.post(url, data=body, headers={"Content-Type": "application/json; charset=utf-8"}) as resp:
            assert resp.status == 202
        await wait_for(lambda: calls)


async def test_a_set_token_is_required_from_every_peer_loopback_included(make_agent):
    agent = await make_agent(token="s3cret")
    url = f"http://127.0.0.1:{agent.port}"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{url}/realtime")
        assert info.value.status == 401
        async with http.get(f"{url}/v1/messages") as resp:
            assert resp.status == 401
        async with http.get(f"{url}/v1/messages", headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.ws_connect(f"{url}/realtime", headers={"Authorization": "Bearer s3cret"}) as ws:
            await ws.send_json(user_item("u1"))
        async with http.get(f"{url}/v1/messages?token=s3cret") as resp:
            assert resp.status == 200

    trusting = await make_agent(token="s3cret", trust_loopback=True)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{trusting.port}/v1/messages") as resp:
        assert resp.status == 200


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


async def test_connections_over_the_cap_are_refused_and_the_agent_keeps_serving(make_agent):
    agent = await make_agent(max_connections=8)
    idle = [_raw(agent.port) for _ in range(8)]
    try:
        await asyncio.sleep(0.2)
        extra = _raw(agent.port)
        reply = await asyncio.to_thread(extra.recv, 4096)
        assert reply.startswith(b"HTTP/1.1 503") and b"too_many_connections" in reply
        assert await asyncio.to_thread(extra.recv, 4096) == b""  # closed
        extra.close()
        assert agent.health()["counters"]["refused_connections"] == 1
    finally:
        for s in idle:
            s.close()
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 5
        while True:
            async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
                if resp.status == 200:
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


async def test_a_burst_of_connections_does_not_pass_the_cap(make_agent):
    """Twelve connections the loop accepts in one go (it is busy while they connect): eight are
    served, four refused, though none of the eight had registered with the server yet."""
    agent = await make_agent(max_connections=8)
    burst = [_raw(agent.port) for _ in range(12)]  # the loop is blocked meanwhile: one burst
    try:
        def first_bytes(s: socket.socket) -> bytes:
            s.settimeout(1.0)
            try:
                return s.recv(4096)
            except TimeoutError:
                return b""  # served: an idle connection the server waits on

        replies = await asyncio.gather(*(asyncio.to_thread(first_bytes, s) for s in burst))
        refused = [r for r in replies if r.startswith(b"HTTP/1.1 503")]
        assert len(refused) == 4, replies
        assert agent.health()["counters"]["refused_connections"] == 4
    finally:
        for s in burst:
            s.close()


async def test_unfinished_request_headers_and_idle_sockets_time_out(make_agent):
    agent = await make_agent(request_timeout=1.0)
    slow = _raw(agent.port)
    silent = _raw(agent.port)
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
    started = time.monotonic()
    assert await asyncio.to_thread(slow.recv, 4096) == b""
    assert await asyncio.to_thread(silent.recv, 4096) == b""
    assert 0.8 < time.monotonic() - started < 4
    slow.close()
    silent.close()


async def test_a_websocket_that_answers_nothing_is_closed_and_a_live_one_is_kept(make_agent):
    agent = await make_agent(heartbeat=1.0)
    async with aiohttp.ClientSession() as http:
        live = await http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime")  # answers pings (autoping)
        dead = await http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime", autoping=False)
        reader = asyncio.create_task(live.receive())  # a live client reads: pings are answered
        await wait_for(lambda: agent.health()["connections"] == 1, timeout=6)
        assert not live.closed
        await live.send_json(transcription("u1", "still here"))
        reader.cancel()
        await live.close()
        await dead.close()


async def test_a_peer_that_never_reads_cannot_hold_up_replies_or_the_stop(tmp_path):
    """A client that stops reading: its replies time out, it is dropped, and stop() returns."""
    from ticos_agent import connection

    agent = Agent(agent_config(tmp_path, replies={"function_call_output": True},
                               robot={"max_queued": 1000, "max_per_response": 1000}))
    agent.on_function("set_light", lambda call: {"report": "x" * 20_000}, inline=True)
    connection.SEND_TIMEOUT, old = 1.0, connection.SEND_TIMEOUT
    await agent.start()
    raw = socket.create_connection(("127.0.0.1", agent.port))
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.sendall(b"GET /realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await asyncio.sleep(0.2)
        import json
        import os

        from traces import function_call_done

        def frame(text: str) -> bytes:  # a masked client text frame
            data, mask = text.encode(), os.urandom(4)
            head = bytes([0x81]) + (bytes([0x80 | len(data)]) if len(data) < 126
                                    else bytes([0xFE]) + len(data).to_bytes(2, "big"))
            return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))

        for i in range(1000):  # each answered with a function_call_output this client never reads
            raw.sendall(frame(json.dumps(function_call_done("r1", f"c{i}", "set_light", {"on": True}))))
        await wait_for(lambda: agent.health()["connections"] == 0, timeout=15)  # dropped, not stuck
        started = time.monotonic()
        await agent.stop()
        assert time.monotonic() - started < 5
    finally:
        connection.SEND_TIMEOUT = old
        raw.close()
        await agent.stop()
