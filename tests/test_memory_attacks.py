"""Hostile input against the memory tools and the memory HTTP routes, end to end: a real agent,
a real voice-agent socket and HTTP client on 127.0.0.1, a real SQLite file. Every call gets an
outcome, nothing returns a 500, and the service stays up."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import pytest
from helpers import agent_config, db_rows, settle, stored_call, wait_for
from test_memory_tools import memory_rows, output_of
from traces import ev, function_call_done, function_call_item, response_done, speech_started

from ticos_agent import Agent

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def call_frame(resp_id: str, call_id: str, name: str, raw_arguments: str) -> str:
    """A ``response.output_item.done`` whose arguments string is sent exactly as given."""
    return json.dumps(ev("response.output_item.done", response_id=resp_id, output_index=1,
                         item=function_call_item(call_id, name, raw_arguments)))


async def next_reply(peer, skip: str = "error", timeout: float = 5.0) -> dict:
    """The next frame that is not of type ``skip``."""
    while True:
        reply = await peer.receive_json(timeout=timeout)
        if reply["type"] != skip:
            return reply


# --------------------------------------------------------------------------- the tools

async def test_text_with_nul_control_characters_and_lone_surrogates(agent, connect):
    peer = await connect(agent)
    # NUL and control characters are kept as text and found again
    await peer.send(function_call_done("resp_1", "call_1", "remember", {"content": "Lin\x00 likes \x07kites\x1b[31m"}))
    row = await stored_call(agent, "call_1")
    assert row["status"] == "done", row
    assert memory_rows(agent) == [("fact", "Lin\x00 likes \x07kites\x1b[31m")]
    await peer.send(function_call_done("resp_2", "call_2", "recall", {"query": "kites\x00"}))
    out = await output_of(peer, "call_2")
    assert out["status"] == "done" and out["count"] == 1 and "kites" in out["found"][0]
    assert (await peer.receive_json())["type"] == "response.create"
    # a lone surrogate (valid JSON escape, not valid text) is refused naming the field, sent back
    for n, (name, args, field) in enumerate([("remember", '{"content": "Lin \\ud800 likes boats"}', "content"),
                                             ("remember", '{"content": "ok", "subject": "\\udfff"}', "subject"),
                                             ("recall", '{"query": "boats \\ud83d"}', "query"),
                                             ("forget", '{"query": "\\ud800kites"}', "query")]):
        await peer.send(call_frame(f"resp_s{n}", f"call_s{n}", name, args))
        out = await output_of(peer, f"call_s{n}")
        assert out["status"] == "failed" and out["field"] == field, out
        assert "internal error" not in out["reason"], out
        if name == "recall":
            assert (await peer.receive_json())["type"] == "response.create"
        row = await stored_call(agent, f"call_s{n}")
        assert row["status"] == "failed"
    await settle(agent)
    assert memory_rows(agent) == [("fact", "Lin\x00 likes \x07kites\x1b[31m")]  # nothing else stored, nothing lost
    # the socket still works
    await peer.send(function_call_done("resp_3", "call_3", "remember", {"content": "Lin likes boats."}))
    assert (await stored_call(agent, "call_3"))["status"] == "done"


FTS_QUERIES = ['"', '""', 'kites"', '*', 'kit*', 'NEAR(kites boats)', 'NEAR(', '-kites', 'kites -boats',
               'AND OR', 'kites AND OR boats', 'NOT kites', '^kites', 'content:kites', 'title:x', '{content}: kites',
               '(kites', 'kites)', "'; DROP TABLE memories; --", '%', '_', '\\', 'kites\\%']


async def test_fts_syntax_in_recall_and_forget_is_only_words(agent, connect):
    peer = await connect(agent)
    await peer.send(function_call_done("resp_0", "call_0", "remember", {"content": "Lin likes kites and boats."}))
    assert (await stored_call(agent, "call_0"))["status"] == "done"
    for n, query in enumerate(FTS_QUERIES):
        await peer.send(function_call_done(f"resp_{n}", f"call_q{n}", "recall", {"query": query}))
        out = await output_of(peer, f"call_q{n}")
        assert (await peer.receive_json())["type"] == "response.create"
        if out["status"] == "failed":  # only a query without a word to look for
            assert out["field"] == "query" and "no word" in out["reason"], (query, out)
        else:
            assert out["status"] == "done", (query, out)
            if "kites" in query.lower() or "boats" in query.lower():
                assert out["count"] >= 1, (query, out)
    # forget with syntax: only what holds all the words goes
    for n, query in enumerate(['kites -AND', 'NEAR(zebras', 'content:zebras', '*']):
        await peer.send(function_call_done(f"resp_f{n}", f"call_f{n}", "forget", {"query": query}))
        row = await stored_call(agent, f"call_f{n}")
        assert row["status"] in ("done", "failed"), row
    await settle(agent)
    assert memory_rows(agent) == []  # "kites -AND" is the words kites and "and": both in the memory


@pytest.mark.parametrize("limit, ok", [(0, False), (-1, False), (1e9, False), ("5", False), (None, True),
                                       (20.0, True), (True, False), ([5], False), ({"n": 5}, False),
                                       (float("inf"), False)])
async def test_recall_limits(agent, connect, limit, ok):
    peer = await connect(agent)
    args = {"query": "kites"} if limit is None else {"query": "kites", "limit": limit}
    raw = json.dumps(args).replace("Infinity", "1e999")  # JSON has no Infinity; 1e999 parses to inf
    await peer.send(call_frame("resp_1", "call_1", "recall", raw))
    out = await output_of(peer, "call_1")
    if ok:
        assert out["status"] == "done", out
    else:
        assert out["status"] == "failed" and out["field"] == "limit", out
        assert "internal error" not in out["reason"]


NOT_JSON = ["{not json", "[1, 2]", '"content"', "null", "42", '{"content": "a"', "{" * 100_000 + "}" * 100_000,
            '{"content": NaN}', '{"content": "a", "importance": NaN}', '{"content": "a", "importance": 1e999}']


async def test_arguments_that_are_not_a_json_object(agent, connect):
    peer = await connect(agent)
    for n, raw in enumerate(NOT_JSON):
        await peer.send(call_frame(f"resp_{n}", f"call_{n}", "remember", raw))
        out = await output_of(peer, f"call_{n}")
        assert out["status"] == "failed" and out.get("field") in ("arguments", "content", "importance"), (raw[:40], out)
    await settle(agent)
    assert memory_rows(agent) == []


async def test_huge_content_and_non_string_types(agent, connect):
    peer = await connect(agent)
    cases = [({"content": "x" * 4001}, "content"), ({"content": "é" * 100_000}, "content"),
             ({"content": ["Lin"]}, "content"), ({"content": {"text": "Lin"}}, "content"),
             ({"content": None}, "content"), ({"content": "ok", "kind": 3}, "kind"),
             ({"content": "ok", "kind": "long_term"}, "kind"), ({"content": "ok", "subject": "s" * 201}, "subject"),
             ({"content": "ok", "importance": -0.1}, "importance"),
             ({"content": "ok", "importance": True}, "importance")]
    for n, (args, field) in enumerate(cases):
        await peer.send(function_call_done(f"resp_{n}", f"call_{n}", "remember", args))
        out = await output_of(peer, f"call_{n}")
        assert out["status"] == "failed" and out["field"] == field, (args, out)
    for n, query in enumerate([123, ["x"], {"a": 1}, False, "q" * 100_000]):
        await peer.send(function_call_done(f"resp_q{n}", f"call_q{n}", "recall", {"query": query}))
        out = await output_of(peer, f"call_q{n}")
        assert out["status"] == "failed" and out["field"] == "query", (query, out)
        assert (await peer.receive_json())["type"] == "response.create"
    await settle(agent)
    assert memory_rows(agent) == []
    # exactly the limit is taken
    await peer.send(function_call_done("resp_ok", "call_ok", "remember", {"content": "y" * 4000}))
    assert (await stored_call(agent, "call_ok"))["status"] == "done"


# --------------------------------------------------------------------------- GA spelling

async def test_ga_spelling_streamed_arguments_and_the_copy_in_response_done(agent, connect):
    """GA: the arguments come in response.function_call_arguments.done, the output item carries
    none; response.done repeats the item. Each call runs once."""
    peer = await connect(agent)
    args = json.dumps({"content": "Lin's dog is called Rex."})
    item = function_call_item("call_g1", "remember", "")
    await peer.send(ev("response.created", response={"id": "resp_g", "status": "in_progress", "output": []}),
                    ev("response.output_item.added", response_id="resp_g", output_index=0,
                       item={**item, "status": "in_progress"}),
                    ev("response.function_call_arguments.delta", response_id="resp_g", item_id=item["id"],
                       output_index=0, call_id="call_g1", delta=args[:10]),
                    ev("response.function_call_arguments.done", response_id="resp_g", item_id=item["id"],
                       output_index=0, call_id="call_g1", name="remember", arguments=args),
                    ev("response.output_item.done", response_id="resp_g", output_index=0, item=item),
                    response_done("resp_g", output=[function_call_item("call_g1", "remember", args)]))
    assert (await stored_call(agent, "call_g1"))["status"] == "done"
    await settle(agent)
    assert memory_rows(agent) == [("fact", "Lin's dog is called Rex.")]
    assert agent.counters["duplicate_calls"] == 1
    # recall, GA: found, answered once, followed by response.create
    rargs = json.dumps({"query": "dog"})
    ritem = function_call_item("call_g2", "recall", "")
    await peer.send(ev("response.function_call_arguments.done", response_id="resp_h", item_id=ritem["id"],
                       output_index=0, call_id="call_g2", name="recall", arguments=rargs),
                    ev("response.output_item.done", response_id="resp_h", output_index=0, item=ritem))
    out = await output_of(peer, "call_g2")
    assert out["status"] == "done" and "Rex" in out["found"][0]
    assert (await peer.receive_json())["type"] == "response.create"
    await peer.send(response_done("resp_h", output=[function_call_item("call_g2", "recall", rargs)]))
    await peer.no_reply(0.3)


# --------------------------------------------------------------------------- sockets

async def test_the_same_call_id_on_two_sockets_runs_once(agent, connect):
    one, two = await connect(agent), await connect(agent)
    call = function_call_done("resp_1", "call_dup", "remember", {"content": "Lin likes trains."})
    await asyncio.gather(one.send(call), two.send(call))
    assert (await stored_call(agent, "call_dup"))["status"] == "done"
    await settle(agent)
    assert memory_rows(agent) == [("fact", "Lin likes trains.")]
    assert agent.counters["duplicate_calls"] == 1
    rec = function_call_done("resp_2", "call_rdup", "recall", {"query": "trains"})
    await one.send(rec)
    out = await output_of(one, "call_rdup")
    assert out["count"] == 1
    assert (await one.receive_json())["type"] == "response.create"
    await two.send(rec)
    await two.no_reply(0.3)
    await one.no_reply(0.1)


async def test_two_peers_at_once_each_gets_its_own_answers(agent, connect):
    one, two = await connect(agent), await connect(agent)
    await asyncio.gather(
        one.send(*[function_call_done(f"resp_a{n}", f"call_a{n}", "remember", {"content": f"Alpha fact {n}."})
                   for n in range(20)]),
        two.send(*[function_call_done(f"resp_b{n}", f"call_b{n}", "remember", {"content": f"Beta fact {n}."})
                   for n in range(20)]))
    for n in range(20):
        assert (await stored_call(agent, f"call_a{n}"))["status"] == "done"
        assert (await stored_call(agent, f"call_b{n}"))["status"] == "done"
    await one.send(function_call_done("resp_qa", "call_qa", "recall", {"query": "alpha", "limit": 20}))
    await two.send(function_call_done("resp_qb", "call_qb", "recall", {"query": "beta", "limit": 3}))
    a, b = await output_of(one, "call_qa"), await output_of(two, "call_qb")
    assert a["count"] == 20 and all("Alpha" in line for line in a["found"])
    assert b["count"] == 3 and all("Beta" in line for line in b["found"])


async def test_a_reconnect_mid_response_keeps_the_call_once(agent, connect):
    """The voice agent drops its socket in the middle of a response with a remember call and
    sends the rest (the copy in response.done) on a new socket."""
    one = await connect(agent)
    await one.send(ev("response.created", response={"id": "resp_r", "status": "in_progress", "output": []}),
                   ev("response.audio_transcript.delta", response_id="resp_r", item_id="item_A1",
                      output_index=0, content_index=0, delta="I will remember "),
                   function_call_done("resp_r", "call_rc", "remember", {"content": "Lin's birthday is in May."}))
    await one.close()
    assert (await stored_call(agent, "call_rc"))["status"] == "done"  # the socket's close did not drop it
    two = await connect(agent)
    await two.send(ev("response.audio_transcript.done", response_id="resp_r", item_id="item_A1",
                      output_index=0, content_index=0, transcript="I will remember that."),
                   response_done("resp_r", output=[function_call_item("call_rc", "remember",
                                                                      {"content": "Lin's birthday is in May."})]),
                   function_call_done("resp_r2", "call_rc2", "recall", {"query": "birthday"}))
    out = await output_of(two, "call_rc2")
    assert out["count"] >= 1 and "May" in out["found"][0]
    await settle(agent)
    assert memory_rows(agent) == [("fact", "Lin's birthday is in May.")]


async def test_a_barge_in_while_a_recall_runs_sends_no_stale_answer(agent, connect):
    """The recall started; the user speaks before it ends: no output, no response.create
    (the model must not answer the old question over the user's new words)."""
    gate = asyncio.Event()
    store = agent.store
    real = store.recall

    async def slow_recall(*a, **kw):
        await gate.wait()
        return await real(*a, **kw)

    store.recall = slow_recall  # the real search, held until the barge-in has arrived
    peer = await connect(agent)
    await peer.send(ev("response.created", response={"id": "resp_1", "status": "in_progress", "output": []}),
                    ev("response.audio_transcript.delta", response_id="resp_1", item_id="item_A1",
                       output_index=0, content_index=0, delta="Let me think"),
                    function_call_done("resp_1", "call_q", "recall", {"query": "school"}))
    await wait_for(lambda: agent.counters["dispatches"] >= 1)
    await asyncio.sleep(0.05)
    await peer.send(speech_started())
    await asyncio.sleep(0.05)
    gate.set()
    row = await stored_call(agent, "call_q")
    assert row["status"] == "dropped", row
    await peer.no_reply(0.4)


# --------------------------------------------------------------------------- storage trouble

async def test_memory_calls_while_the_store_is_closed(tmp_path, connect):
    async with Agent(agent_config(tmp_path, replies={"function_call_output": True})) as agent:
        peer = await connect(agent)
        await peer.send(function_call_done("resp_0", "call_0", "remember", {"content": "Lin likes kites."}))
        assert (await output_of(peer, "call_0"))["status"] == "done"
        await agent.store.close()
        for n, (name, args) in enumerate([("remember", {"content": "Lin likes boats."}), ("recall", {"query": "kites"}),
                                          ("forget", {"query": "kites"})]):
            await peer.send(function_call_done(f"resp_c{n}", f"call_c{n}", name, args))
            reply = await next_reply(peer)
            assert reply["type"] == "conversation.item.create" and reply["item"]["call_id"] == f"call_c{n}"
            out = json.loads(reply["item"]["output"])
            assert out["status"] == "failed" and out["reason"].startswith("storage: "), out
            if name == "recall":
                assert (await next_reply(peer))["type"] == "response.create"
        async with peer.session.get(f"http://127.0.0.1:{agent.port}/health") as resp:
            assert resp.status in (200, 503)
            assert "storage" in await resp.json()
        with pytest.raises(Exception) as info:
            await agent.recall("kites")
        assert type(info.value).__name__ == "StorageError"


async def test_a_first_memory_call_on_a_closed_store(tmp_path, connect, caplog):
    """The memory API and the store's memory queries load with this call, on a store already
    closed (no event log: its failures are not what this is about)."""
    cfg = agent_config(tmp_path, replies={"function_call_output": True}, storage={"event_log": False})
    async with Agent(cfg) as agent:
        peer = await connect(agent)
        await agent.store.close()
        caplog.set_level(logging.WARNING)
        for n, (name, args) in enumerate([("recall", {"query": "kites"}), ("remember", {"content": "Lin flies."})]):
            await peer.send(function_call_done(f"resp_{n}", f"call_{n}", name, args))
            reply = await next_reply(peer)
            assert reply["type"] == "conversation.item.create" and reply["item"]["call_id"] == f"call_{n}", reply
            out = json.loads(reply["item"]["output"])
            assert out["status"] == "failed" and out["reason"].startswith("storage: "), out
            if name == "recall":
                assert (await next_reply(peer))["type"] == "response.create"
        assert "internal error" not in caplog.text and "Traceback" not in caplog.text
        async with peer.session.get(f"http://127.0.0.1:{agent.port}/health") as resp:
            assert resp.status in (200, 503) and "storage" in await resp.json()
        await peer.send(function_call_done("resp_m", "call_m", "motion", {"motion_tag": "nod"}))
        assert json.loads((await next_reply(peer))["item"]["output"])["status"] == "done"


async def test_a_memory_call_after_the_stop_is_a_failed_outcome_not_an_internal_error(tmp_path, caplog):
    agent = Agent(agent_config(tmp_path, replies={"function_call_output": True}, storage={"event_log": False}))
    await agent.start()
    await agent.stop()  # the store is closed and the agent has no memories any more
    caplog.set_level(logging.WARNING)
    assert agent.ingest(function_call_done("resp_1", "call_1", "recall", {"query": "kites"})) is None
    await wait_for(lambda: "memory: recall failed" in caplog.text)
    assert "no memories: the agent is not running" in caplog.text
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text


async def test_memory_calls_while_the_database_is_broken(agent, connect, caplog):
    peer = await connect(agent)
    path = agent.store.health()["path"]
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE memories")
    caplog.set_level(logging.WARNING)
    await peer.send(function_call_done("resp_1", "call_1", "remember", {"content": "Lin likes boats."}))
    await peer.send(function_call_done("resp_2", "call_2", "recall", {"query": "boats"}))
    out = await output_of(peer, "call_2")
    assert out["status"] == "failed" and out["reason"].startswith("storage: "), out
    row = await stored_call(agent, "call_1")
    assert row["status"] == "failed" and "storage" in json.dumps(row["result"]), row
    assert "internal error" not in caplog.text
    # motion still works
    await peer.send(function_call_done("resp_3", "call_3", "motion", {"motion_tag": "nod"}))
    assert (await stored_call(agent, "call_3"))["status"] == "done"


# --------------------------------------------------------------------------- a flood

async def test_a_flood_of_remember_calls(tmp_path, connect):
    async with Agent(agent_config(tmp_path)) as agent:
        peer = await connect(agent)
        total = 10_000
        batch = 500
        for start in range(0, total, batch):
            await peer.send(*[function_call_done(f"resp_{n}", f"call_{n}", "remember", {"content": f"Flood fact {n}."})
                              for n in range(start, start + batch)])
        # /health answers during the flood
        async with peer.session.get(f"http://127.0.0.1:{agent.port}/health") as resp:
            assert resp.status == 200
        await stored_call(agent, f"call_{total - 1}", timeout=120)
        await wait_for(lambda: agent.counters["dispatches"] + agent.counters["busy_calls"] >= total, timeout=120)
        await settle(agent)
        stored = len(memory_rows(agent))
        assert stored == agent.counters["dispatches"] and stored + agent.counters["busy_calls"] == total
        assert stored > 0
        statuses = dict(db_rows(agent.store.health()["path"], "SELECT status, COUNT(*) FROM function_calls "
                                "GROUP BY status"))
        assert statuses == {"done": stored, **({"busy": total - stored} if stored < total else {})}, statuses
        await peer.send(function_call_done("resp_x", "call_x", "recall", {"query": "flood"}))
        while True:  # busy answers of the flood may come first
            reply = await peer.receive_json(timeout=30)
            if reply["type"] == "conversation.item.create" and reply["item"]["call_id"] == "call_x":
                break
        assert json.loads(reply["item"]["output"])["count"] == 5


# --------------------------------------------------------------------------- HTTP

async def no_500(resp) -> str:
    text = await resp.text()
    assert resp.status < 500, (resp.status, text[:300])
    assert "Traceback" not in text and "Internal Server Error" not in text, text[:300]
    return text


async def test_http_hostile_bodies_ids_and_queries(agent, http):
    url = f"http://127.0.0.1:{agent.port}/v1/memories"
    json_type = {"Content-Type": "application/json"}
    bodies = [b"", b"{", b"null", b"[]", b'"text"', b"\xff\xfe\x00", b'{"content": "a"}' + b"\x00",
              b"[" * 30_000 + b"]" * 30_000, b'{"content": "\\ud800"}', b'{"content": "a", "importance": NaN}',
              b'{"content": "a", "importance": 1e999}', b'{"content": "a", "nope": 1}', b'{"content": 5}',
              b'{"content": "a", "kind": "long_term", "user_id": "' + b"u" * 300 + b'"}',
              b'{"content": "a", "confidence": "high"}']
    for body in bodies:
        async with http.post(url, data=body, headers=json_type) as resp:
            text = await no_500(resp)
            assert resp.status == 400, (body[:40], text)
            assert json.loads(text)["error"]["code"] in ("bad_json", "bad_field"), (body[:40], text)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/jsonx", ""):
        async with http.post(url, data=b'{"content": "a"}', headers={"Content-Type": ctype}) as resp:
            await no_500(resp)
            assert resp.status == 415, (ctype, resp.status)
    # a huge body, with its length said and without (chunked)
    huge = b'{"content": "' + b"x" * (2 << 20) + b'"}'
    async with http.post(url, data=huge, headers=json_type) as resp:
        await no_500(resp)
        assert resp.status == 413

    async def chunks():
        for _ in range(64):
            yield b"x" * 65536

    async with http.post(url, data=chunks(), headers=json_type) as resp:
        await no_500(resp)
        assert resp.status == 413
    for raw in ("abc", "-1", "1.0", "1e3", "\u00b2", "\u0663\u00b2", "%00", "99999999999999999999", "0x1", " 1",
                "1;DROP", "%F0%9F%98%80"):
        async with http.delete(f"{url}/{raw}") as resp:
            text = await no_500(resp)
            assert resp.status in (400, 404), (raw, resp.status, text)
    async with http.delete(f"{url}/0") as resp:
        assert resp.status == 404
    for q in ['"', '*', 'NEAR(a b', '-x', 'AND OR', '^x', 'content:x', 'x" OR "y', "\x00", "", " ", "q" * 5000,
              "%ED%A0%80", "\u00b2"]:
        async with http.get(url, params={"q": q}) as resp:
            text = await no_500(resp)
            assert resp.status in (200, 400), (q, resp.status, text)
            if resp.status == 400:
                assert json.loads(text)["error"]["field"] == "query", (q, text)
    for limit in ("0", "-1", "1e9", "\u00b2", "\u0663", "99999999999999999999999", "nan", ""):
        async with http.get(url, params={"q": "x", "limit": limit}) as resp:
            await no_500(resp)
        async with http.get(url, params={"limit": limit, "offset": limit}) as resp:
            await no_500(resp)
    async with http.get(f"{url}?q=%ED%A0%80x") as resp:  # a percent-encoded lone surrogate's bytes
        await no_500(resp)
    # the API still works, and nothing hostile was stored
    async with http.post(url, json={"content": "Lin likes kites."}) as resp:
        assert resp.status == 201
    assert [m["content"] for m in await agent.store.memories()] == ["Lin likes kites."]
