"""GET /v1/memories?q=, POST /v1/memories, DELETE /v1/memories/{id}: a real agent on loopback,
a real aiohttp client, a real SQLite file; the guard's rules as tests/test_guard.py checks them."""

from __future__ import annotations

import json

import aiohttp
import pytest
from helpers import wait_for

from ticos_agent.memory.routes import MAX_BODY


@pytest.fixture
def make_agent(start_agent):
    return start_agent


async def test_post_search_list_and_delete(make_agent, http):
    agent = await make_agent()
    changes = []
    agent.on_memory(lambda action, payload: changes.append((action, payload)))
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    async with http.post(url, json={"content": "The user's name is Lin.", "subject": "user", "key": "name",
                                    "value": "Lin", "confidence": 0.9}) as resp:
        assert resp.status == 201
        lin = await resp.json()
    assert lin["content"] == "The user's name is Lin." and lin["kind"] == "fact" and lin["confidence"] == 0.9
    async with http.post(url, json={"content": "A day at the beach.", "kind": "episode", "importance": 0.4,
                                    "title": "Beach"}) as resp:
        assert resp.status == 201
        beach = await resp.json()
    # listing as before, newest first
    async with http.get(url) as resp:
        body = await resp.json()
    assert [m["content"] for m in body["memories"]] == ["A day at the beach.", "The user's name is Lin."]
    assert body["limit"] == 50 and body["offset"] == 0
    # a search
    async with http.get(url, params={"q": "beach"}) as resp:
        assert resp.status == 200
        found = await resp.json()
    assert found["query"] == "beach" and found["limit"] == 5
    assert [(h["source"], h["id"], h["text"], h["kind"]) for h in found["hits"]] == \
        [("memory", str(beach["id"]), "A day at the beach.", "episode")]
    async with http.get(url, params={"q": "zeppelin"}) as resp:
        assert (await resp.json())["hits"] == []
    # delete one; again is 404
    async with http.delete(f"{url}/{lin['id']}") as resp:
        assert resp.status == 200 and await resp.json() == {"forgotten": 1, "id": lin["id"]}
    async with http.delete(f"{url}/{lin['id']}") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    async with http.get(url, params={"q": "Lin"}) as resp:
        assert (await resp.json())["hits"] == []
    await wait_for(lambda: len(changes) == 3)
    assert [(a, p["via"]) for a, p in changes] == [("stored", "http"), ("stored", "http"), ("forgotten", "http")]
    assert changes[2][1]["ids"] == [lin["id"]]


async def test_search_can_include_messages(make_agent, http, connect):
    from traces import transcription, user_item

    agent = await make_agent()
    peer = await connect(agent)
    await peer.send(user_item("u1"), transcription("u1", "my kite is red"))
    await agent.store.flush()
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    async with http.get(url, params={"q": "kite"}) as resp:
        assert (await resp.json())["hits"] == []
    async with http.get(url, params={"q": "kite", "messages": "true"}) as resp:
        hits = (await resp.json())["hits"]
    assert [(h["source"], h["role"], h["text"]) for h in hits] == [("message", "user", "my kite is red")]


@pytest.mark.parametrize(("body", "code", "field", "words"), [
    (b"{not json", "bad_json", None, "not valid JSON"),
    (b"[1, 2]", "bad_json", None, "must be a JSON object"),
    (b"\xff\xfe", "bad_json", None, "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "too_large", None, "larger than"),
    (json.dumps({}).encode(), "bad_field", "content", "content is required"),
    (json.dumps({"content": ""}).encode(), "bad_field", "content", "must not be empty"),
    (json.dumps({"content": 5}).encode(), "bad_field", "content", "must be a string"),
    (json.dumps({"content": "x", "kind": "dream"}).encode(), "bad_field", "kind", "kind must be one of"),
    (json.dumps({"content": "x", "importance": 7}).encode(), "bad_field", "importance", "from 0 to 1"),
    (json.dumps({"content": "x", "contnet": "y"}).encode(), "bad_field", "contnet", "unknown field(s) 'contnet'"),
    (json.dumps({"content": "x", "via": "y"}).encode(), "bad_field", "via", "unknown field(s) 'via'"),
    (json.dumps({"content": "x" * 4001}).encode(), "bad_field", "content", "longer than 4000"),
])
async def test_bad_bodies_are_a_400_naming_the_problem_and_store_nothing(make_agent, http, body, code, field, words):
    agent = await make_agent()
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == (413 if code == "too_large" else 400)
        error = (await resp.json())["error"]
    assert error["code"] == code and words in error["message"] and error.get("field") == field
    assert await agent.store.memories() == []
    async with http.get(f"http://127.0.0.1:{agent.port}/health") as resp:
        assert resp.status == 200  # still serving


async def test_bad_queries_and_ids(make_agent, http):
    agent = await make_agent()
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    for params, field in [({"q": ""}, "query"), ({"q": "x", "limit": "0"}, "limit"),
                          ({"q": "x", "limit": "a"}, "limit"), ({"q": "x", "limit": "51"}, "limit"),
                          ({"limit": "-1"}, "limit"), ({"offset": "x"}, "offset")]:
        async with http.get(url, params=params) as resp:
            assert resp.status == 400, params
            assert (await resp.json())["error"]["field"] == field, params
    for bad in ("abc", "-1", "1.5", "9" * 30):
        async with http.delete(f"{url}/{bad}") as resp:
            assert resp.status == 400 and (await resp.json())["error"]["field"] == "id", bad
    async with http.post(url, data=b"x" * (MAX_BODY + 1), headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 413


async def test_storage_off_is_a_503(make_agent, http):
    agent = await make_agent(storage={"enabled": False})
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    async with http.get(url, params={"q": "x"}) as resp:
        assert resp.status == 503
    async with http.post(url, json={"content": "x"}) as resp:
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "storage_disabled"
    async with http.delete(f"{url}/1") as resp:
        assert resp.status == 503


async def test_writes_need_the_token_when_one_is_set(make_agent, http):
    agent = await make_agent(server={"token": "s3cret"})
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    good = {"Authorization": "Bearer s3cret"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        async with http.post(url, json={"content": "sneaky"}, headers=headers) as resp:
            assert resp.status == 401
        async with http.delete(f"{url}/1", headers=headers) as resp:
            assert resp.status == 401
        async with http.get(url, params={"q": "x"}, headers=headers) as resp:
            assert resp.status == 401
    assert await agent.store.memories() == []
    async with http.post(url, json={"content": "Lin is seven."}, headers=good) as resp:
        assert resp.status == 201
        memory = await resp.json()
    async with http.get(url, params={"q": "seven", "token": "s3cret"}) as resp:
        assert [h["text"] for h in (await resp.json())["hits"]] == ["Lin is seven."]
    async with http.delete(f"{url}/{memory['id']}", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    async with http.delete(f"{url}/{memory['id']}", headers=good) as resp:
        assert resp.status == 200
    assert agent.health()["counters"]["refused_requests"] == 10


async def test_a_page_from_another_origin_cannot_write_read_or_delete(make_agent, http):
    agent = await make_agent()
    memory = await agent.remember("Lin's secret: she is afraid of the dark.")
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    for origin in ("http://evil.example", "null", f"http://localhost:{agent.port}"):
        headers = {"Origin": origin}
        async with http.post(url, json={"content": "planted"}, headers=headers) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "foreign_origin"
        async with http.delete(f"{url}/{memory.id}", headers=headers) as resp:
            assert resp.status == 403
        async with http.get(url, params={"q": "secret"}, headers=headers) as resp:
            assert resp.status == 403
        # a form post (no preflight in a browser) is refused too, before the origin rule even matters
        async with http.post(url, data="content=planted",
                             headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert resp.status == 415
    # a rebinding host name
    async with http.delete(f"{url}/{memory.id}", headers={"Host": "rebind.example"}) as resp:
        assert resp.status == 421
    assert [m["content"] for m in await agent.store.memories()] == [memory.content]


async def test_an_allowed_origin_may_write(make_agent):
    agent = await make_agent(server={"allowed_origins": ["http://dashboard.local:8080"]})
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    async with aiohttp.ClientSession() as http, \
            http.post(url, json={"content": "from the dashboard"},
                      headers={"Origin": "http://dashboard.local:8080"}) as resp:
        assert resp.status == 201
        assert resp.headers.get("Access-Control-Allow-Origin") is None
