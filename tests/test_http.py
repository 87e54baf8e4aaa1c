"""The HTTP side: /health, the read API, POST /v1/events, auth for non-loopback peers."""

from __future__ import annotations

import time

from helpers import settle
from traces import assistant_turn, session_created, transcription, user_item


async def test_health_reports_storage_connections_and_counters(agent, connect, http):
    peer = await connect(agent)
    await peer.send(user_item("item_U1"), "garbage")
    await peer.receive_json()
    async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["version"]
    assert body["uptime_s"] >= 0
    assert body["connections"] == 1
    assert body["counters"]["events"] == 2 and body["counters"]["errors"] == 1
    assert body["storage"]["state"] == "ok" and body["storage"]["path"].endswith("ticos.db")
    assert "handlers" in body and "audio" in body and "actuators" in body
    assert body["status"] == "ok" and body["problems"] == []  # simulated robot, audio off by config
    assert resp.headers.get("Access-Control-Allow-Origin") is None


async def test_messages_api_pages_newest_first_and_filters_by_session(agent, connect, http):
    peer = await connect(agent)
    await peer.send(session_created("sess_1"))
    for i in range(5):
        await peer.send(user_item(f"u{i}"), transcription(f"u{i}", f"msg {i}"))
    other = await connect(agent)
    await other.send(session_created("sess_2"), *assistant_turn("r1", "a1", ["other"]))
    await settle(agent)
    base = f"http://127.0.0.1:{agent.port}/v1/messages"
    async with http.get(base, params={"limit": "2"}) as resp:
        page1 = (await resp.json())["messages"]
    async with http.get(base, params={"limit": "2", "offset": "2", "session": "sess_1"}) as resp:
        page2 = (await resp.json())["messages"]
    async with http.get(base, params={"session": "sess_1"}) as resp:
        everything = (await resp.json())["messages"]
    assert [m["content"] for m in everything] == ["msg 4", "msg 3", "msg 2", "msg 1", "msg 0"]
    assert page1[0]["content"] == "other"
    assert [m["content"] for m in page2] == ["msg 2", "msg 1"]
    async with http.get(base, params={"limit": "x"}) as resp:
        assert resp.status == 400


async def test_memories_api(agent, http):
    agent.store.add_memory("long_term", "likes waving")
    await agent.store.flush()
    async with http.get(f"http://127.0.0.1:{agent.port}/v1/memories") as resp:
        body = await resp.json()
    assert [m["content"] for m in body["memories"]] == ["likes waving"]


async def test_post_event_uses_the_socket_path(agent, http):
    url = f"http://127.0.0.1:{agent.port}/v1/events"
    async with http.post(url, json=user_item("item_P1")) as resp:
        assert resp.status == 202
    async with http.post(url, json=transcription("item_P1", "posted")) as resp:
        assert resp.status == 202
    json_body = {"Content-Type": "application/json"}
    async with http.post(url, data=b"{broken", headers=json_body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_json"
    async with http.post(url, data=b"x" * (2 << 20), headers=json_body) as resp:
        assert resp.status == 413
    await settle(agent)
    assert [m["content"] for m in await agent.store.messages()] == ["posted"]


async def test_slow_handler_does_not_block_socket_or_health(agent, connect, http):
    import threading

    release = threading.Event()
    agent.on("conversation.item.created", lambda event: release.wait(5))
    peer = await connect(agent)
    await peer.send(user_item("item_U1"))
    start = time.monotonic()
    async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
        assert resp.status == 200
    await peer.send(transcription("item_U1", "fast"))
    await settle(agent)
    assert [m["content"] for m in await agent.store.messages()] == ["fast"]
    assert time.monotonic() - start < 2.0
    release.set()


async def test_non_loopback_bind_refused_without_token(tmp_path):
    import pytest

    from ticos_agent.config import ConfigErrors, from_dict

    with pytest.raises(ConfigErrors) as info:
        from_dict({"server": {"host": "0.0.0.0"}})
    assert "server.token" in str(info.value)
    assert from_dict({"server": {"host": "0.0.0.0", "token": "s3cret"}}).as_dict()["server"]["token"] == "********"
