"""Hostile and broken frames: each gets an error reply and a log line, nothing good is lost."""

from __future__ import annotations

import json
import logging
import sqlite3

import aiohttp
import orjson
import pytest
from helpers import agent_config, settle, stored_call
from traces import ev, transcription, user_item

BAD_FRAMES = [
    ("not json", "{nope", "invalid_json"),
    ("array", "[1, 2, 3]", "invalid_event"),
    ("string", '"hello"', "invalid_event"),
    ("null", "null", "invalid_event"),
    ("no type", '{"event_id": "event_x"}', "missing_type"),
    ("number type", '{"type": 5, "event_id": "event_x"}', "missing_type"),
    ("empty type", '{"type": ""}', "missing_type"),
    ("item not object", '{"type": "conversation.item.created", "event_id": "event_x", "item": "hi"}', "invalid_shape"),
    ("delta not string",
     '{"type": "response.audio_transcript.delta", "event_id": "event_x", "item_id": "i", "delta": 5}',
     "invalid_shape"),
    ("transcript missing", '{"type": "conversation.item.input_audio_transcription.completed", "item_id": "i"}',
     "invalid_shape"),
    ("response not object", '{"type": "response.done", "response": []}', "invalid_shape"),
    ("deep nesting", '{"type": "x", "a": ' + "[" * 100_000 + "]" * 100_000 + "}", "too_deep"),
    ("empty frame", "", "invalid_json"),
]


@pytest.mark.parametrize("name,frame,code", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
async def test_bad_text_frame_gets_error_and_socket_keeps_working(agent, connect, caplog, name, frame, code):
    peer = await connect(agent)
    caplog.set_level(logging.WARNING, logger="ticos_agent")
    await peer.send(user_item("item_U1"))
    await peer.send(frame)
    reply = await peer.receive_json()
    assert reply["type"] == "error"
    assert reply["error"]["code"] == code
    assert reply["error"]["message"]
    if '"event_x"' in frame:
        assert reply["error"]["event_id"] == "event_x"
    assert sum("rejected frame" in r.getMessage() for r in caplog.records) == 1
    await peer.send(transcription("item_U1", "still here"))
    await settle(agent)
    rows = await agent.store.messages()
    assert [(r["content"], r["status"]) for r in rows] == [("still here", "completed")]
    assert agent.health()["counters"]["errors"] == 1


@pytest.mark.parametrize("data,code", [
    (b'{"type": "x", "bad": "\xff\xfe"}', "invalid_utf8"),
    (b'{"type": "x"}\x00', "invalid_frame"),
    (b"\x00\x01\x02", "invalid_frame"),
], ids=["invalid utf-8", "trailing NUL", "binary junk"])
async def test_bad_binary_frames(agent, connect, data, code):
    peer = await connect(agent)
    await peer.send_bytes(data)
    reply = await peer.receive_json()
    assert reply["error"]["code"] == code
    await peer.send_bytes(json.dumps(user_item("item_B1")).encode())
    await peer.send_bytes(json.dumps(transcription("item_B1", "binary works")).encode())
    await settle(agent)
    assert [r["content"] for r in await agent.store.messages()] == ["binary works"]


async def test_oversized_frame_closes_that_socket_with_1009_only(tmp_path, connect):
    from ticos_agent import Agent

    async with Agent(agent_config(tmp_path, server={"max_frame_bytes": 4096})) as agent:
        victim = await connect(agent)
        bystander = await connect(agent)
        await victim.send(json.dumps(ev("x", pad="a" * 5000)))
        msg = await victim.ws.receive(timeout=2)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert victim.ws.close_code == 1009
        await bystander.send(user_item("item_U1"), transcription("item_U1", "unaffected"))
        fresh = await connect(agent)
        await fresh.send(user_item("item_U2"), transcription("item_U2", "new socket"))
        await settle(agent)
        assert sorted(r["content"] for r in await agent.store.messages()) == ["new socket", "unaffected"]
        assert agent.health()["status"] == "ok" and agent.health()["problems"] == []


@pytest.mark.parametrize(("size", "closed"), [(4096, False), (4097, True)])
async def test_the_frame_cap_is_the_largest_frame_taken(tmp_path, connect, size, closed):
    from ticos_agent import Agent

    async with Agent(agent_config(tmp_path, server={"max_frame_bytes": 4096})) as agent:
        peer = await connect(agent)
        head = json.dumps(ev("conversation.item.input_audio_transcription.completed", item_id="item_U1",
                             content_index=0, transcript=""))
        frame = head.replace('"transcript": ""', '"transcript": "' + "a" * (size - len(head)) + '"')
        assert len(frame.encode()) == size
        await peer.send(user_item("item_U1"), frame)
        if closed:
            await peer.ws.receive(timeout=2)
            assert peer.ws.close_code == 1009
        else:
            await settle(agent)
            assert [len(r["content"]) for r in await agent.store.messages()] == [size - len(head)]


async def test_hostile_flood_of_bad_frames_interleaved_with_good_ones(agent, connect):
    peer = await connect(agent)
    for i in range(200):
        await peer.send("}{" if i % 2 else '{"type": 1}')
        await peer.send(user_item(f"item_{i}"), transcription(f"item_{i}", f"line {i}"))
    replies = [await peer.receive_json() for _ in range(200)]
    assert all(r["type"] == "error" for r in replies)
    await settle(agent)
    assert await agent.store.count_messages() == 200


async def test_wrong_argument_types_in_motion_are_rejected_with_the_field(agent, connect):
    from traces import function_call_done

    peer = await connect(agent)
    cases = [({"speed": 1}, "motion_tag"), ({"motion_tag": 7}, "motion_tag"),
             ({"motion_tag": "nod", "repeat": 1.5}, "repeat"), ({"motion_tag": "nod", "repeat": 0}, "repeat"),
             ({"motion_tag": "nod", "wait": "yes"}, "wait"),
             ({"motion_tag": "nod", "speed": -1}, "speed"), ({"motion_tag": "nod", "speed": True}, "speed")]
    for i, (args, field) in enumerate(cases):
        await peer.send(function_call_done("resp_1", f"call_{i}", "motion", args))
        reply, output = await peer.rejected()
        assert reply["error"]["code"] == "invalid_arguments", args
        assert field in reply["error"]["message"], (args, reply)
        outcome = json.loads(output["item"]["output"])
        assert output["item"]["call_id"] == f"call_{i}"
        assert outcome["status"] == "failed" and outcome["field"] == field, (args, outcome)
    emo = [({"emotion_tag": "happy", "intensity": "high"}, "intensity"),
           ({"emotion_tag": "happy", "duration": -2}, "duration"),
           ({"emotion_tag": "happy", "fade_in": float("nan")}, "fade_in")]
    for i, (args, field) in enumerate(emo):
        raw = json.dumps(args).replace("NaN", "NaN")
        await peer.send(function_call_done("resp_1", f"call_e{i}", "emotion", raw))
        reply, output = await peer.rejected()
        assert field in reply["error"]["message"], (args, reply)
        assert json.loads(output["item"]["output"])["field"] == field


async def test_huge_numbers_in_arguments_are_rejected_not_crashing(agent, connect):
    from traces import function_call_done

    peer = await connect(agent)
    raw = '{"motion_tag": "nod", "speed": ' + "9" * 400 + "}"
    await peer.send(function_call_done("resp_1", "call_big", "motion", raw))
    reply, _ = await peer.rejected()
    assert reply["error"]["code"] == "invalid_arguments" and "speed" in reply["error"]["message"]
    assert len(reply["error"]["message"]) < 200


#: arguments the stdlib decoder reads but JSON (and the frame's own decoder) does not have:
#: (function, arguments as sent, the field the refusal names, what its reason says, a good call)
NOT_JSON_ARGUMENTS = [
    ("motion", '{"motion_tag": "wave", "speed": NaN}', "speed", "got NaN", '{"motion_tag": "wave"}'),
    ("motion", '{"motion_tag": "wave", "style": {"pace": NaN}}', "style", "style.pace must be a finite number",
     '{"motion_tag": "wave"}'),  # a field no check reads, passed on to the motion handlers
    ("emotion", '{"emotion_tag": "ha\\ud800ppy"}', "emotion_tag", "lone surrogate (\\ud800)",
     '{"emotion_tag": "happy"}'),
    ("measure", '{"x": Infinity}', "x", "got Infinity", '{"x": 1.5}'),  # an integrator's function
]


@pytest.mark.parametrize("name,raw,field,reason,good", NOT_JSON_ARGUMENTS,
                         ids=["speed NaN", "NaN in an unread field", "lone surrogate in a tag", "Infinity"])
async def test_nan_infinity_and_lone_surrogates_in_arguments_are_unusable_arguments(
        agent, connect, name, raw, field, reason, good):
    """The arguments string is read as strictly as the frame: the call is refused like any
    unusable arguments (an error; the robot's own tools also a failed output naming the field),
    no handler sees it, the same socket's next good call runs, and nothing stored holds half a
    surrogate pair."""
    from traces import function_call_done

    got = []
    agent.on_motion(got.append)
    agent.on_emotion(got.append)
    agent.on_function("measure", lambda call: got.append(call.arguments) or "measured")
    peer = await connect(agent)
    await peer.send(function_call_done("resp_1", "call_bad", name, raw))
    if name == "measure":  # not the robot's tool: the error only (its output goes back when outcomes do)
        error = await peer.receive_json()
        await peer.no_reply(0.3)
    else:
        error, output = await peer.rejected()
        assert output["item"]["call_id"] == "call_bad"
        outcome = json.loads(output["item"]["output"])
        assert (outcome["status"], outcome["field"]) == ("failed", field) and reason in outcome["reason"]
    assert error["type"] == "error" and error["error"]["code"] == "invalid_arguments"
    assert reason in error["error"]["message"] and field in error["error"]["message"], error
    assert (await stored_call(agent, "call_bad"))["status"] == "failed"
    assert got == []
    await peer.send(function_call_done("resp_2", "call_good", name, good))
    assert (await stored_call(agent, "call_good"))["status"] == "done"
    assert len(got) == 1
    await settle(agent)
    assert agent.health()["storage"]["state"] == "ok"
    # the file itself: every text is UTF-8 and each result is JSON without half a surrogate pair
    # (orjson refuses its escape); the arguments are kept as sent, the escape as its six characters
    with sqlite3.connect(agent.store.location.path) as db:
        rows = db.execute("SELECT call_id, CAST(arguments AS BLOB), CAST(result AS BLOB) FROM function_calls "
                          "ORDER BY call_id").fetchall()
    assert [r[0] for r in rows] == ["call_bad", "call_good"]
    assert rows[0][1].decode("utf-8") == raw
    for _, arguments, result in rows:
        arguments.decode("utf-8")
        orjson.loads(result)


#: Arguments whose refusal would repeat what the voice agent sent at length: a long key, a deep path.
LONG_PLACES = [
    ("long key", '{"' + "k" * 60_000 + '": NaN}'),
    ("long key, lone surrogate", '{"a": {"' + "k" * 60_000 + '\\ud800": 1}}'),
    ("deep path", '{' + '"key":{' * 900 + '"x": NaN' + '}' * 900 + '}'),
    ("long keys, deep", '{' + ('"' + "k" * 500 + '":{') * 100 + '"x": Infinity' + '}' * 100 + '}'),
    ("control characters in a key", '{"a\\nWARNING fake line": NaN}'),
]


@pytest.mark.parametrize("raw", [r for _, r in LONG_PLACES], ids=[n for n, _ in LONG_PLACES])
def test_where_a_value_is_not_json_is_told_in_a_few_words(raw):
    """The refusal names the place, but never at the length the voice agent wrote it (it is sent
    back twice, logged and stored): the message and the field stay short, and on one line."""
    from ticos_agent.arguments import function_call
    from ticos_agent.errors import BadArguments

    with pytest.raises(BadArguments) as refused:
        function_call({"type": "function_call", "name": "measure", "call_id": "c1", "arguments": raw})
    message, field = str(refused.value), refused.value.field
    assert len(message) < 400 and field is not None and len(field) <= 64, (len(message), field and len(field))
    assert "\n" not in message and "\n" not in field
    assert "finite number" in message or "lone surrogate" in message


def test_arguments_with_nothing_to_refuse_are_not_walked(monkeypatch):
    """Only arguments that hold something to refuse are walked value by value to find where:
    the walk costs ~15 times the decoding (a 1 MB array of numbers: ~0.7 s here, seconds on a
    Pi Zero, on the event loop), and a good call pays the decoding alone."""
    from ticos_agent import arguments
    from ticos_agent.errors import BadArguments

    walked = []
    real = arguments._refuse_not_json
    monkeypatch.setattr(arguments, "_refuse_not_json", lambda name, value: walked.append(name) or real(name, value))

    def call(raw: object) -> object:
        return arguments.function_call({"type": "function_call", "name": "f", "call_id": "c", "arguments": raw})

    texts = ["1.5", "-2", '"caf\\u00e9 \\ud83d\\ude00 \\\\ud800 \u00e9"', '{"k": null}']
    big = '{"a": [' + ",".join(texts * 50_000) + "]}"
    escaped = '{"motion_tag": "wave", "speed": 1e308, "x": "\\u00e9\\u4e2d \u4e2d"}'
    for raw in (big, escaped, {"a": {"b": [1.5, "é"]}}, ""):
        call(raw)
    assert walked == []
    for raw in ('{"a": [1, NaN]}', '{"a": 1e400}', '{"a": -Infinity}', '{"a": "\\uDBFF"}', '{"\\udc00": 1}',
                '{"a": "\\ud83d"}', '{"a": 1' + "0" * 400 + '.0}'):
        with pytest.raises(BadArguments):
            call(raw)
    assert len(walked) == 7


async def test_absurd_paging_is_a_400_not_a_500(agent, http):
    async with http.get(f"http://127.0.0.1:{agent.port}/v1/messages", params={"offset": str(10**22)}) as resp:
        assert resp.status == 400


async def test_the_voice_agents_own_error_events_are_logged_never_answered(agent, connect, caplog):
    peer = await connect(agent)
    await peer.send({"type": "error", "error": {"type": "invalid_request_error", "message": "bad session"}},
                    {"type": "error"}, {"type": "error", "error": "just a string"})
    await peer.no_reply()
    assert sum("reported an error" in r.getMessage() for r in caplog.records) == 3
    assert any("bad session" in r.getMessage() for r in caplog.records)


async def test_a_huge_session_id_is_not_written_into_every_row(agent, connect):
    """A hostile 1 MB session id would be stored with every message and logged event of the
    session: it is kept as a bounded id, still one per session (two long ids stay apart)."""
    from traces import session_created

    from ticos_agent.connection import MAX_SESSION_ID

    ids = ["s" * 1_000_000, "s" * 999_999 + "t"]  # the same head: only the digest tells them apart
    for n, sid in enumerate(ids):
        peer = await connect(agent)
        await peer.send(session_created(sid), *[x for i in range(20) for x in
                                                (user_item(f"item_{n}_{i}"), transcription(f"item_{n}_{i}", "hi"))])
        await settle(agent)
        await peer.close()
    rows = await agent.store.messages(limit=100)
    kept = {r["session_id"] for r in rows}
    assert len(rows) == 40 and len(kept) == 2
    assert all(len(k) <= MAX_SESSION_ID and k.startswith("s" * 96) for k in kept)
    for k in kept:  # each session's messages are found by its kept id
        assert len(await agent.store.messages(limit=100, session_id=k)) == 20
    await agent.store.flush()
    db = agent.store.location.path
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    assert size < 2_000_000, size  # 40 rows and their events, not 40 MB of the id


async def test_a_call_named_by_a_list_in_response_done_spares_the_good_call_beside_it(agent, connect):
    """``response.done`` output items are not shape-checked: a call whose name is an array is
    refused on its own; the good call after it still runs (no internal error)."""
    from traces import response_done

    peer = await connect(agent)
    bad = {"type": "function_call", "name": ["motion"], "call_id": "call_bad", "arguments": "{}"}
    good = {"type": "function_call", "name": "motion", "call_id": "call_good",
            "arguments": json.dumps({"motion_tag": "nod"})}
    await peer.send(response_done("resp_1", output=[bad, good]))
    reply = await peer.receive_json()
    assert reply["type"] == "error" and reply["error"]["code"] == "invalid_arguments", reply
    assert (await stored_call(agent, "call_good"))["status"] == "done"
    assert agent.counters["errors"] == 1


async def test_unusable_arguments_of_an_interrupted_response_get_the_error_only(agent, connect):
    """Nobody waits for an answer from a response the user talked over: the voice agent gets
    its error event, the model no output (which would reach it after the barge-in)."""
    from traces import function_call_done, speech_started

    peer = await connect(agent)
    await peer.send(ev("response.created", response={"id": "resp_1", "status": "in_progress", "output": []}),
                    speech_started(), function_call_done("resp_1", "call_x", "motion", {"motion_tag": 7}))
    got = [await peer.receive_json()]
    await peer.no_reply(0.3)
    assert [r["type"] for r in got] == ["error"] and got[0]["error"]["code"] == "invalid_arguments"
