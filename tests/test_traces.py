"""Realtime traces the agent has not seen before, shaped the way real sessions emit them.

GA (``gpt-realtime``) and beta (``gpt-4o-realtime-preview``) sessions, barge-in variants, text-only
responses, late/failed/duplicate transcriptions, hostile frames interleaved with good ones, a long
session and ``/health`` afterwards. Everything goes through a real agent on a loopback port, a real
aiohttp WebSocket client and a real SQLite file.

Written by a second engineer against the protocol, not the code; the product bugs it found
(a repeated response.done stored twice, a response.done without an id cutting other responses,
non-string roles stored or lost, wrong nested types dropped without an error) are fixed.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from helpers import health, replies, settle, stored_call, wait_for
from traces import ev, pcm_b64

# Event types a real session emits that the agent does not act on (counted as "ignored").
UNKNOWN_TYPES = {
    "rate_limits.updated", "response.content_part.added", "response.content_part.done",
    "input_audio_buffer.cleared", "output_audio_buffer.started",
    "output_audio_buffer.stopped", "output_audio_buffer.cleared", "conversation.item.retrieved",
}


# --- trace builders -------------------------------------------------------------------------

class Trace:
    """Builds one realtime session's events in GA or beta spelling."""

    def __init__(self, ga: bool, session_id: str = "sess_1"):
        self.ga = ga
        self.session_id = session_id
        self.prev: str | None = None

    def t(self, beta: str, ga: str) -> str:
        return ga if self.ga else beta

    def session(self) -> list[dict]:
        if self.ga:
            sess = {"type": "realtime", "object": "realtime.session", "id": self.session_id,
                    "model": "gpt-realtime-2025-08-28", "output_modalities": ["audio"],
                    "instructions": "You are a friendly robot.", "tool_choice": "auto",
                    "tools": [{"type": "function", "name": "motion", "description": "move",
                               "parameters": {"type": "object", "properties": {"motion_tag": {"type": "string"}}}}],
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                        "transcription": {"model": "gpt-4o-transcribe"},
                                        "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                                           "prefix_padding_ms": 300,
                                                           "silence_duration_ms": 200}},
                              "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin",
                                         "speed": 1.0}},
                    "max_output_tokens": "inf", "tracing": None, "prompt": None, "expires_at": 1756324625}
        else:
            sess = {"id": self.session_id, "object": "realtime.session",
                    "model": "gpt-4o-realtime-preview-2024-12-17", "modalities": ["text", "audio"],
                    "voice": "alloy", "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                    "input_audio_transcription": {"model": "whisper-1"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                       "silence_duration_ms": 500, "create_response": True},
                    "tools": [], "tool_choice": "auto", "temperature": 0.8,
                    "max_response_output_tokens": "inf"}
        return [ev("session.created", session=sess), ev("session.updated", session=sess)]

    def user_speech(self, item_id: str, transcript: str | None, *, deltas: bool = True) -> list[dict]:
        """VAD turn: speech started/stopped, committed, item added (+done in GA), transcription."""
        item = {"id": item_id, "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        if self.ga:
            item["object"] = "realtime.item"
        out = [ev("input_audio_buffer.speech_started", audio_start_ms=1000, item_id=item_id),
               ev("input_audio_buffer.speech_stopped", audio_end_ms=2400, item_id=item_id),
               ev("input_audio_buffer.committed", previous_item_id=self.prev, item_id=item_id),
               ev(self.t("conversation.item.created", "conversation.item.added"), previous_item_id=self.prev,
                  item=item)]
        if self.ga:
            out.append(ev("conversation.item.done", previous_item_id=self.prev, item=item))
        self.prev = item_id
        if transcript is not None:
            out += self.transcription(item_id, transcript, deltas=deltas)
        return out

    def transcription(self, item_id: str, transcript: str, *, deltas: bool = True) -> list[dict]:
        out = []
        if deltas and self.ga:
            words = transcript.split(" ")
            for i, w in enumerate(words):
                out.append(ev("conversation.item.input_audio_transcription.delta", item_id=item_id,
                              content_index=0, delta=w + (" " if i < len(words) - 1 else "")))
        out.append(ev("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                      transcript=transcript,
                      **({"usage": {"type": "tokens", "total_tokens": 20, "input_tokens": 12,
                                    "output_tokens": 8}} if self.ga else {})))
        return out

    def response_created(self, rid: str) -> dict:
        resp = {"object": "realtime.response", "id": rid, "status": "in_progress", "status_details": None,
                "output": [], "usage": None, "metadata": None}
        if self.ga:
            resp.update(conversation_id="conv_1", output_modalities=["audio"], max_output_tokens="inf",
                        audio={"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}})
        return ev("response.created", response=resp)

    def message_item(self, item_id: str, text: str, status: str = "completed", kind: str = "audio") -> dict:
        if kind == "audio":
            part = {"type": self.t("audio", "output_audio"), "transcript": text}
        else:
            part = {"type": self.t("text", "output_text"), "text": text}
        item = {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}
        if self.ga:
            item["object"] = "realtime.item"
        return item

    def assistant_message(self, rid: str, item_id: str, parts: list[str], *, index: int = 0,
                          finish: bool = True, kind: str = "audio") -> list[dict]:
        """Output item added, content part, transcript/text + audio deltas, the done events."""
        empty = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        where = {"response_id": rid, "item_id": item_id, "output_index": index, "content_index": 0}
        out = [ev("response.output_item.added", response_id=rid, output_index=index, item=empty)]
        if self.ga:
            out.append(ev("conversation.item.added", previous_item_id=self.prev, item=empty))
        self.prev = item_id
        part0 = ({"type": "audio", "transcript": ""} if kind == "audio" else {"type": "text", "text": ""})
        out.append(ev("response.content_part.added", **where, part=part0))
        for p in parts:
            if kind == "audio":
                out.append(ev(self.t("response.audio_transcript.delta", "response.output_audio_transcript.delta"),
                              **where, delta=p))
                out.append(ev(self.t("response.audio.delta", "response.output_audio.delta"), **where,
                              delta=pcm_b64(240, 700)))
            else:
                out.append(ev(self.t("response.text.delta", "response.output_text.delta"), **where, delta=p))
        if not finish:
            return out
        text = "".join(parts)
        if kind == "audio":
            out.append(ev(self.t("response.audio.done", "response.output_audio.done"), **where))
            out.append(ev(self.t("response.audio_transcript.done", "response.output_audio_transcript.done"),
                          **where, transcript=text))
            out.append(ev("response.content_part.done", **where, part={"type": "audio", "transcript": text}))
        else:
            out.append(ev(self.t("response.text.done", "response.output_text.done"), **where, text=text))
            out.append(ev("response.content_part.done", **where, part={"type": "text", "text": text}))
        item = self.message_item(item_id, text, kind=kind)
        out.append(ev("response.output_item.done", response_id=rid, output_index=index, item=item))
        if self.ga:
            out.append(ev("conversation.item.done", previous_item_id=None, item=item))
        return out

    def function_call(self, rid: str, item_id: str, call_id: str, name: str, arguments: str, *,
                      index: int = 1, chunks: int = 3) -> list[dict]:
        item = {"id": item_id, "type": "function_call", "status": "in_progress", "name": name,
                "call_id": call_id, "arguments": ""}
        out = [ev("response.output_item.added", response_id=rid, output_index=index, item=item)]
        if self.ga:
            out.append(ev("conversation.item.added", previous_item_id=self.prev, item=item))
        self.prev = item_id
        step = max(1, len(arguments) // chunks)
        for i in range(0, len(arguments), step):
            out.append(ev("response.function_call_arguments.delta", response_id=rid, item_id=item_id,
                          output_index=index, call_id=call_id, delta=arguments[i:i + step]))
        out.append(ev("response.function_call_arguments.done", response_id=rid, item_id=item_id,
                      output_index=index, call_id=call_id, name=name, arguments=arguments))
        done = self.call_item(item_id, call_id, name, arguments)
        out.append(ev("response.output_item.done", response_id=rid, output_index=index, item=done))
        if self.ga:
            out.append(ev("conversation.item.done", previous_item_id=None, item=done))
        return out

    @staticmethod
    def call_item(item_id, call_id, name, arguments, status="completed") -> dict:
        return {"id": item_id, "type": "function_call", "status": status, "name": name, "call_id": call_id,
                "arguments": arguments}

    def response_done(self, rid: str, output: list | None, status: str = "completed",
                      reason: str | None = None) -> dict:
        details = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": reason or "turn_detected"}
        elif status == "incomplete":
            details = {"type": "incomplete", "reason": reason or "max_output_tokens"}
        resp = {"object": "realtime.response", "id": rid, "status": status, "status_details": details,
                "output": output if output is not None else [],
                "usage": {"total_tokens": 300, "input_tokens": 200, "output_tokens": 100}, "metadata": None}
        if self.ga:
            resp.update(conversation_id="conv_1", output_modalities=["audio"])
        return ev("response.done", response=resp)

    def turn(self, rid: str, item_id: str, parts: list[str], kind: str = "audio") -> list[dict]:
        """A whole spoken assistant turn, with rate limits as the real server sends them."""
        return ([self.response_created(rid),
                 ev("rate_limits.updated", rate_limits=[{"name": "requests", "limit": 5000, "remaining": 4999,
                                                         "reset_seconds": 0.012}])]
                + self.assistant_message(rid, item_id, parts, kind=kind)
                + [self.response_done(rid, [self.message_item(item_id, "".join(parts), kind=kind)])])


# --- helpers ------------------------------------------------------------------------------

async def rows(agent, **kw) -> list[dict]:
    """Every stored message, oldest first (the store pages by at most 500)."""
    await settle(agent)
    out: list[dict] = []
    while True:
        page = await agent.store.messages(limit=500, offset=len(out), **kw)
        out += page
        if len(page) < 500:
            return list(reversed(out))


def brief(rs) -> list[tuple]:
    return [(r["role"], r["content"], r["status"], r["item_id"]) for r in rs]


async def finished_calls(agent, n: int) -> list[dict]:
    async def fetch():
        await agent.store.flush()
        return [c for c in await agent.store.calls(limit=500) if c.get("status") not in (None, "received")]

    for _ in range(200):
        got = await fetch()
        if len(got) >= n:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {n} finished calls, got {await fetch()}")


# --- 1. a full GA session (and the same in beta) --------------------------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_full_session_with_function_call(agent, connect, http, ga):
    motions, convo = [], []
    agent.on_motion(motions.append)
    agent.on_conversation(lambda *a: convo.append(a))
    tr = Trace(ga, "sess_full")
    args = '{"motion_tag":"wave","speed":1.5,"repeat":2,"wait":true}'
    trace = tr.session()
    trace += tr.user_speech("item_U1", "Hello robot, how are you?")
    trace += tr.turn("resp_1", "item_A1", ["I'm ", "doing ", "great, ", "thanks!"])
    trace += tr.user_speech("item_U2", "Can you wave at me?")
    # assistant says something, then calls motion; response.done carries both items again
    trace += [tr.response_created("resp_2")]
    trace += tr.assistant_message("resp_2", "item_A2", ["Sure, ", "here ", "you go!"])
    trace += tr.function_call("resp_2", "item_F2", "call_wave", "motion", args)
    trace += [tr.response_done("resp_2", [tr.message_item("item_A2", "Sure, here you go!"),
                                          tr.call_item("item_F2", "call_wave", "motion", args)])]
    # the model answers after the function output the device sent
    trace += [ev(tr.t("conversation.item.created", "conversation.item.added"), previous_item_id="item_F2",
                 item={"id": "item_O2", "type": "function_call_output", "call_id": "call_wave",
                       "output": '{"status":"done"}'})]
    trace += tr.turn("resp_3", "item_A3", ["Did ", "you ", "see ", "that?"])
    trace += tr.user_speech("item_U3", "Yes! Bye.")
    trace += tr.turn("resp_4", "item_A4", ["Bye!"])
    await (peer := await connect(agent)).send(*trace)

    assert await replies(peer) == []  # a clean session gets no error back
    got = await rows(agent)
    assert brief(got) == [
        ("user", "Hello robot, how are you?", "completed", "item_U1"),
        ("assistant", "I'm doing great, thanks!", "completed", "item_A1"),
        ("user", "Can you wave at me?", "completed", "item_U2"),
        ("assistant", "Sure, here you go!", "completed", "item_A2"),
        ("assistant", "Did you see that?", "completed", "item_A3"),
        ("user", "Yes! Bye.", "completed", "item_U3"),
        ("assistant", "Bye!", "completed", "item_A4"),
    ]
    assert {r["session_id"] for r in got} == {"sess_full"}
    assert [r["response_id"] for r in got if r["role"] == "assistant"] == ["resp_1", "resp_2", "resp_3", "resp_4"]
    await wait_for(lambda: motions)
    await settle(agent)
    assert motions == [{"motion_tag": "wave", "speed": 1.5, "repeat": 2, "wait": True}]
    calls = await finished_calls(agent, 1)
    assert [(c["call_id"], c["name"], c["arguments"], c["response_id"], c["item_id"]) for c in calls] == [
        ("call_wave", "motion", args, "resp_2", "item_F2")]
    assert calls[0]["status"] == "done"
    # conversation handler: user "" then transcript; each assistant delta as it came
    user_events = [(i, c) for i, role, c in convo if role == "user"]
    assert user_events == [("item_U1", ""), ("item_U1", "Hello robot, how are you?"),
                           ("item_U2", ""), ("item_U2", "Can you wave at me?"),
                           ("item_U3", ""), ("item_U3", "Yes! Bye.")]
    assert "".join(c for i, role, c in convo if i == "item_A2") == "Sure, here you go!"
    h = await health(agent, http)
    assert h["counters"]["errors"] == 0
    assert h["counters"]["events"] == len(trace)
    assert h["counters"]["dispatches"] == 1
    assert h["counters"]["ignored"] == sum(event["type"] in UNKNOWN_TYPES for event in trace)
    assert h["counters"].get("duplicate_calls", 0) == 1  # the call again inside response.done


# --- 2. barge-in ------------------------------------------------------------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_barge_in_cancelled_response_with_incomplete_call_then_new_response(agent, connect, ga):
    motions = []
    agent.on_motion(motions.append)
    tr = Trace(ga, "sess_barge")
    trace = tr.session() + tr.user_speech("item_U1", "Tell me a long story.")
    trace += [tr.response_created("resp_1")]
    trace += tr.assistant_message("resp_1", "item_A1", ["Once ", "upon ", "a "], finish=False)
    # the call starts streaming, the user talks over the robot
    trace += [ev("response.output_item.added", response_id="resp_1", output_index=1,
                 item={"id": "item_F1", "type": "function_call", "status": "in_progress", "name": "motion",
                       "call_id": "call_cut", "arguments": ""}),
              ev("response.function_call_arguments.delta", response_id="resp_1", item_id="item_F1",
                 output_index=1, call_id="call_cut", delta='{"motion_tag":"bo')]
    trace += [ev("input_audio_buffer.speech_started", audio_start_ms=5100, item_id="item_U2")]
    partial_item = tr.message_item("item_A1", "Once upon a ", status="incomplete")
    trace += [ev("response.output_item.done", response_id="resp_1", output_index=0, item=partial_item),
              tr.response_done("resp_1", [partial_item,
                                          tr.call_item("item_F1", "call_cut", "motion", '{"motion_tag":"bo',
                                                       status="incomplete")], status="cancelled")]
    peer = await connect(agent)
    await peer.send(*trace)
    got_errors = await replies(peer)
    # the cut call is not dispatched, and no error: a barge-in cutting a call is the expected flow
    assert got_errors == []
    assert agent.counters["interruptions"] == 1
    cut = await stored_call(agent, "call_cut")
    assert (cut["status"], json.loads(cut["result"])) == ("dropped", {"status": "dropped",
                                                                      "reason": "response barge-in"})
    # the new turn right after the barge-in
    after = tr.user_speech("item_U2", "Actually, bow instead.")
    after += [tr.response_created("resp_2")]
    after += tr.function_call("resp_2", "item_F2", "call_bow", "motion", '{"motion_tag":"bow"}', index=0)
    after += tr.assistant_message("resp_2", "item_A2", ["Bowing!"], index=1)
    after += [tr.response_done("resp_2", [tr.call_item("item_F2", "call_bow", "motion", '{"motion_tag":"bow"}'),
                                          tr.message_item("item_A2", "Bowing!")])]
    await peer.send(*after)
    assert await replies(peer) == []
    await wait_for(lambda: motions)
    await settle(agent)
    assert [m["motion_tag"] for m in motions] == ["bow"]
    assert brief(await rows(agent)) == [
        ("user", "Tell me a long story.", "completed", "item_U1"),
        ("assistant", "Once upon a ", "cancelled", "item_A1"),
        ("user", "Actually, bow instead.", "completed", "item_U2"),
        ("assistant", "Bowing!", "completed", "item_A2"),
    ]
    calls = {c["call_id"]: c for c in await finished_calls(agent, 2)}
    assert calls["call_cut"]["status"] == "dropped"  # like the rest of the response the barge-in stopped
    assert calls["call_bow"]["status"] == "done"


async def test_barge_in_after_response_done_and_truncated(agent, connect):
    """Speech after the response finished: stored message stays completed; the server's
    ``conversation.item.truncated`` is accepted (no error) and changes nothing stored twice."""
    tr = Trace(True, "sess_trunc")
    trace = tr.session() + tr.user_speech("item_U1", "Sing something.")
    trace += tr.turn("resp_1", "item_A1", ["La ", "la ", "la ", "laaa."])
    trace += [ev("output_audio_buffer.started", response_id="resp_1"),
              ev("input_audio_buffer.speech_started", audio_start_ms=9000, item_id="item_U2"),
              ev("output_audio_buffer.cleared", response_id="resp_1"),
              ev("conversation.item.truncated", item_id="item_A1", content_index=0, audio_end_ms=1500)]
    trace += tr.user_speech("item_U2", "Stop, that's enough.")
    trace += tr.turn("resp_2", "item_A2", ["Okay."])
    peer = await connect(agent)
    await peer.send(*trace)
    assert await replies(peer) == []
    assert brief(await rows(agent)) == [
        ("user", "Sing something.", "completed", "item_U1"),
        ("assistant", "La la la laaa.", "completed", "item_A1"),
        ("user", "Stop, that's enough.", "completed", "item_U2"),
        ("assistant", "Okay.", "completed", "item_A2"),
    ]
    # truncated is a known event; nothing was playing here (audio disabled), so no interruption
    assert agent.counters["ignored"] == sum(event["type"] in UNKNOWN_TYPES for event in trace)
    assert agent.counters.get("interruptions", 0) == 0


async def test_barge_in_stops_queued_motion_of_the_interrupted_response(agent, connect):
    """A long motion queued by resp_1, the user barges in while resp_1 is still in progress:
    the call's outcome says it was dropped/stopped, not that it ran to the end."""
    tr = Trace(False)
    peer = await connect(agent)
    await peer.send(tr.response_created("resp_1"),
                    *tr.function_call("resp_1", "item_F1", "call_long", "motion",
                                      '{"motion_tag":"wave","repeat":20}', index=0),
                    *tr.function_call("resp_1", "item_F2", "call_next", "motion",
                                      '{"motion_tag":"nod","repeat":20}', index=1),
                    *tr.assistant_message("resp_1", "item_A1", ["Waving ", "for a long "], index=2, finish=False))
    await settle(agent)
    await peer.send(ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="item_U2"),
                    tr.response_done("resp_1", [], status="cancelled"))
    calls = {c["call_id"]: c for c in await finished_calls(agent, 2)}
    assert calls["call_next"]["status"] == "dropped"
    assert brief(await rows(agent)) == [("assistant", "Waving for a long ", "cancelled", "item_A1")]


# --- 3. text-only responses --------------------------------------------------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_text_only_responses(agent, connect, ga):
    convo = []
    agent.on_conversation(lambda *a: convo.append(a))
    tr = Trace(ga, "sess_text")
    text_user = {"id": "item_U1", "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": "What is 2+2?"}]}
    trace = tr.session() + [ev(tr.t("conversation.item.created", "conversation.item.added"), item=text_user)]
    trace += tr.turn("resp_1", "item_A1", ["2+2 ", "is ", "4."], kind="text")
    # a text response that only shows up complete in response.done (no deltas seen)
    trace += [tr.response_created("resp_2"),
              tr.response_done("resp_2", [tr.message_item("item_A2", "Anything else?", kind="text")])]
    peer = await connect(agent)
    await peer.send(*trace)
    assert await replies(peer) == []
    assert brief(await rows(agent)) == [
        ("user", "What is 2+2?", "completed", "item_U1"),
        ("assistant", "2+2 is 4.", "completed", "item_A1"),
        ("assistant", "Anything else?", "completed", "item_A2"),
    ]
    await wait_for(lambda: len(convo) >= 4)
    assert [c for i, r, c in convo if i == "item_A1"] == ["2+2 ", "is ", "4."]


# --- 4. transcription failures, late transcriptions, duplicates, unknown ids -------------------

async def test_late_failed_and_unknown_transcriptions(agent, connect):
    tr = Trace(True, "sess_late")
    trace = tr.session()
    trace += tr.user_speech("item_U1", None)
    trace += tr.turn("resp_1", "item_A1", ["Sorry?"])
    trace += tr.user_speech("item_U2", None)
    trace += tr.turn("resp_2", "item_A2", ["Pardon?"])
    trace += tr.user_speech("item_U3", None)
    trace += [ev("conversation.item.input_audio_transcription.failed", item_id="item_U3", content_index=0,
                 error={"type": "transcription_error", "code": "audio_unintelligible",
                        "message": "Audio unintelligible", "param": None})]
    trace += tr.turn("resp_3", "item_A3", ["Hm?"])
    # three turns late; then a retry succeeds after the failure; a failure after success changes nothing
    trace += tr.transcription("item_U1", "first words, late")
    trace += [ev("conversation.item.input_audio_transcription.failed", item_id="item_U2", content_index=0,
                 error={"type": "transcription_error", "code": None, "message": None, "param": None}),
              ev("conversation.item.input_audio_transcription.completed", item_id="item_U2", content_index=0,
                 transcript="second, after a failure"),
              ev("conversation.item.input_audio_transcription.failed", item_id="item_U1", content_index=0,
                 error=None)]
    # an item id never announced: the transcription is kept, not lost
    trace += tr.transcription("item_GHOST", "from nowhere", deltas=False)
    peer = await connect(agent)
    await peer.send(*trace)
    assert await replies(peer) == []
    assert brief(await rows(agent)) == [
        ("user", "first words, late", "completed", "item_U1"),
        ("assistant", "Sorry?", "completed", "item_A1"),
        ("user", "second, after a failure", "completed", "item_U2"),
        ("assistant", "Pardon?", "completed", "item_A2"),
        ("user", "", "transcription_failed", "item_U3"),
        ("assistant", "Hm?", "completed", "item_A3"),
        ("user", "from nowhere", "completed", "item_GHOST"),
    ]


async def test_every_event_twice_stores_nothing_twice(agent, connect):
    """A relay that re-sends each frame (same event_id): one row per item, one dispatch per call."""
    motions = []
    agent.on_motion(motions.append)
    tr = Trace(True, "sess_dup")
    trace = tr.session() + tr.user_speech("item_U1", "Nod please.", deltas=False)
    trace += [tr.response_created("resp_1")]
    trace += tr.function_call("resp_1", "item_F1", "call_nod", "motion", '{"motion_tag":"nod"}', index=0)
    trace += tr.assistant_message("resp_1", "item_A1", ["Nodding."], index=1)
    trace += [tr.response_done("resp_1", [tr.call_item("item_F1", "call_nod", "motion", '{"motion_tag":"nod"}'),
                                          tr.message_item("item_A1", "Nodding.")])]
    peer = await connect(agent)
    for event in trace:
        await peer.send(event, event)
    assert await replies(peer) == []
    await wait_for(lambda: motions)
    assert brief(await rows(agent)) == [
        ("user", "Nod please.", "completed", "item_U1"),
        ("assistant", "Nodding.", "completed", "item_A1"),
    ]
    assert len(motions) == 1


async def test_repeated_response_done_does_not_store_the_message_twice(agent, connect):
    tr = Trace(False)
    done = tr.response_done("resp_1", [tr.message_item("item_A1", "Hello there.")])
    peer = await connect(agent)
    await peer.send(tr.response_created("resp_1"), *tr.assistant_message("resp_1", "item_A1", ["Hello there."]),
                    done, done)
    assert brief(await rows(agent)) == [("assistant", "Hello there.", "completed", "item_A1")]


async def test_unknown_ids_and_odd_response_done(agent, connect):
    tr = Trace(False, "sess_odd")
    trace = tr.session() + [tr.response_created("resp_1")]
    trace += tr.assistant_message("resp_1", "item_A1", ["Part one, "], finish=False)
    # interleaved noise about things the agent never saw
    trace += [tr.response_done("resp_unknown", []),
              ev("response.done", response={"id": "resp_unknown2", "status": "completed"}),  # no output at all
              ev("conversation.item.truncated", item_id="item_nope", content_index=0, audio_end_ms=10),
              ev("conversation.item.deleted", item_id="item_nope"),
              ev("response.audio.done", response_id="resp_zzz", item_id="item_nope", output_index=0,
                 content_index=0),
              ev("response.function_call_arguments.done", response_id="resp_zzz", item_id="item_nope",
                 call_id="call_never_done", arguments="{}")]
    trace += [ev("response.audio_transcript.delta", response_id="resp_1", item_id="item_A1", output_index=0,
                 content_index=0, delta="part two.")]
    # done with null fields: still the final word on resp_1
    trace += [ev("response.done", response={"id": "resp_1", "status": None, "status_details": None,
                                            "output": None, "usage": None})]
    peer = await connect(agent)
    await peer.send(*trace)
    assert await replies(peer) == []
    assert brief(await rows(agent)) == [("assistant", "Part one, part two.", "completed", "item_A1")]


@pytest.mark.parametrize("response", [{}, {"id": 123, "status": "completed"}, {"id": None, "output": []}],
                         ids=["empty", "numeric-id", "null-id"])
async def test_response_done_without_usable_id_leaves_open_response_alone(agent, connect, response):
    tr = Trace(False)
    peer = await connect(agent)
    await peer.send(tr.response_created("resp_1"),
                    *tr.assistant_message("resp_1", "item_A1", ["Still ", "talking, "], finish=False),
                    ev("response.done", response=response),
                    ev("response.audio_transcript.delta", response_id="resp_1", item_id="item_A1", output_index=0,
                       content_index=0, delta="and done."),
                    tr.response_done("resp_1", []))
    await replies(peer)
    assert brief(await rows(agent)) == [("assistant", "Still talking, and done.", "completed", "item_A1")]


# --- 5. hostile frames interleaved with good ones -------------------------------------------------

HOSTILE_OK = {  # frames the agent must answer with exactly one error of this code
    "delta-number": (ev("response.audio_transcript.delta", response_id="resp_1", item_id="item_A1",
                        output_index=0, content_index=0, delta=42), "invalid_shape"),
    "item-id-number": (ev("conversation.item.input_audio_transcription.completed", item_id=7,
                          transcript="x"), "invalid_shape"),
    "item-a-list": (ev("conversation.item.created", item=[1, 2]), "invalid_shape"),
    "response-a-string": (ev("response.done", response="resp_1"), "invalid_shape"),
    "call-id-number": (ev("response.output_item.done", response_id="resp_1", output_index=3,
                          item={"id": "item_Fx", "type": "function_call", "status": "completed", "name": "motion",
                                "call_id": 99, "arguments": '{"motion_tag":"wave"}'}), "invalid_shape"),
    "arguments-number": (ev("response.output_item.done", response_id="resp_1", output_index=3,
                            item={"id": "item_Fy", "type": "function_call", "status": "completed",
                                  "name": "motion", "call_id": "call_argnum", "arguments": 12}),
                         "invalid_arguments"),
    "arguments-deep": (ev("response.output_item.done", response_id="resp_1", output_index=3,
                          item={"id": "item_Fz", "type": "function_call", "status": "completed",
                                "name": "lights", "call_id": "call_deep",
                                "arguments": "[" * 10000 + "]" * 10000}), "invalid_arguments"),
    "type-number": ('{"type": 5, "event_id": "event_bad"}', "missing_type"),
    "not-json": ('{"type": "response.done", ', "invalid_json"),
    "array-frame": ("[1, 2, 3]", "invalid_event"),
    "nested-10k": ('{"type":"session.update","session":' + "[" * 10000 + "]" * 10000 + "}", "too_deep"),
    "literal-nul": ('{"type":"session.update","x":"a\x00b"}', "invalid_frame"),
    "binary-bad-utf8": (b'{"type":"session.update","x":"\xff\xfe"}', "invalid_utf8"),
}

HOSTILE_SILENT = {  # wrong nested types the agent reads but does not answer today
    "user-content-string": ev("conversation.item.created", item={"id": "item_Ux", "type": "message",
                                                                 "role": "user", "content": "hello"}),
    "user-role-number": ev("conversation.item.created", item={"id": "item_Uy", "type": "message", "role": 1,
                                                              "content": [{"type": "input_text", "text": "hi"}]}),
    "output-a-dict": ev("response.done", response={"id": "resp_odd", "status": "completed",
                                                   "output": {"id": "item_x", "type": "message"}}),
}


async def _interleaved(agent, connect, bad):
    """Good turn, the bad frame in the middle of a response, more good turns."""
    tr = Trace(False, "sess_hostile")
    peer = await connect(agent)
    await peer.send(*tr.session(), *tr.user_speech("item_U1", "one"), tr.response_created("resp_1"),
                    *tr.assistant_message("resp_1", "item_A1", ["alpha ", "beta"], finish=False))
    if isinstance(bad, bytes):
        await peer.send_bytes(bad)
    else:
        await peer.send(bad)
    await peer.send(ev("response.audio_transcript.delta", response_id="resp_1", item_id="item_A1", output_index=0,
                       content_index=0, delta=" gamma"),
                    tr.response_done("resp_1", []),
                    *tr.user_speech("item_U2", "two"), *tr.turn("resp_2", "item_A2", ["delta"]))
    got = await replies(peer)
    assert not peer.ws.closed
    stored = brief(await rows(agent, session_id="sess_hostile"))
    return got, stored, peer


GOOD_ROWS = [("user", "one", "completed", "item_U1"), ("assistant", "alpha beta gamma", "completed", "item_A1"),
             ("user", "two", "completed", "item_U2"), ("assistant", "delta", "completed", "item_A2")]


def _answered(bad) -> list[str]:
    """The call ids a hostile frame also gets a failed output for: a call of the robot's own
    tools with unusable arguments (the model hears what to correct); none for other frames."""
    item = bad.get("item") if isinstance(bad, dict) else None
    if not isinstance(item, dict) or item.get("name") not in ("motion", "emotion", "motion_and_emotion") \
            or not isinstance(item.get("call_id"), str) or item.get("status") == "incomplete":
        return []
    return [item["call_id"]]


def _outputs(got: list[dict]) -> list[str]:
    outs = [r["item"] for r in got if r["type"] == "conversation.item.create"]
    assert all(o["type"] == "function_call_output" and json.loads(o["output"])["status"] == "failed" for o in outs)
    return [o["call_id"] for o in outs]


@pytest.mark.parametrize("name", list(HOSTILE_OK))
async def test_hostile_frame_gets_one_error_and_good_frames_are_stored(agent, connect, http, name):
    calls = []
    agent.on_function("*", lambda call: calls.append(call.call_id))
    bad, code = HOSTILE_OK[name]
    got, stored, peer = await _interleaved(agent, connect, bad)
    assert [(r["type"], r["error"]["code"]) for r in got if r["type"] != "conversation.item.create"] == \
        [("error", code)]
    assert _outputs(got) == _answered(bad)
    assert stored == GOOD_ROWS
    assert calls == []
    h = await health(agent, http)
    assert h["counters"]["errors"] == 1 and h["connections"] == 1
    await peer.send(ev("session.update", session={"instructions": "still listening?"}))
    assert await replies(peer, 0.1) == []


@pytest.mark.parametrize("name", list(HOSTILE_SILENT))
async def test_wrong_nested_types_get_an_error(agent, connect, name):
    got, stored, _ = await _interleaved(agent, connect, HOSTILE_SILENT[name])
    assert stored == GOOD_ROWS
    assert [r["type"] for r in got] == ["error"]


@pytest.mark.parametrize("role", [42, {"x": 1}, ["assistant"]], ids=["number", "object", "array"])
async def test_assistant_role_of_wrong_type_is_not_stored_as_is(agent, connect, role):
    """``response.output_item.added`` with a non-string role: the message is kept, as an assistant's."""
    tr = Trace(False)
    peer = await connect(agent)
    await peer.send(tr.response_created("resp_1"),
                    ev("response.output_item.added", response_id="resp_1", output_index=0,
                       item={"id": "item_A1", "type": "message", "role": role, "content": []}),
                    ev("response.audio_transcript.delta", response_id="resp_1", item_id="item_A1", output_index=0,
                       content_index=0, delta="odd role"),
                    tr.response_done("resp_1", []),
                    *tr.turn("resp_2", "item_A2", ["fine"]))
    await replies(peer)
    got = brief(await rows(agent))
    assert got[-1] == ("assistant", "fine", "completed", "item_A2")
    assert got == [("assistant", "odd role", "completed", "item_A1"), ("assistant", "fine", "completed", "item_A2")]


TRICKY = [
    "emoji 👋🤖 family 👨‍👩‍👧‍👦 flag 🇯🇵",
    "RTL: مرحبا بالروبوت שלום \u202eevil\u202c",
    "NUL in the middle: a\u0000b and end\u0000",
    "line seps \u2028 \u2029 tabs\tand\r\nCRLF",
    "combining é vs é, zero-width\u200bspace, BOM \ufeff",
    "quotes \" \\ backslash / slash",
]


@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_unicode_and_nul_transcripts_are_stored_exactly(agent, connect, http, ga):
    convo = []
    agent.on_conversation(lambda *a: convo.append(a))
    tr = Trace(ga, "sess_uni")
    trace = tr.session()
    for i, text in enumerate(TRICKY):
        trace += tr.user_speech(f"item_U{i}", text, deltas=False)
        half = len(text) // 2
        trace += tr.turn(f"resp_{i}", f"item_A{i}", [text[:half], text[half:]])
    peer = await connect(agent)
    # json.dumps escapes (\u0000, surrogate pairs for emoji); one frame goes raw UTF-8 and as binary
    for event in trace:
        await peer.send(event)
    await peer.send_bytes(json.dumps(tr.transcription("item_BIN", "binäry 🤖 \u0000", deltas=False)[0],
                                     ensure_ascii=False).encode())
    assert await replies(peer) == []
    got = await rows(agent)
    expected = []
    for i, text in enumerate(TRICKY):
        expected += [("user", text, "completed", f"item_U{i}"), ("assistant", text, "completed", f"item_A{i}")]
    expected.append(("user", "binäry 🤖 \u0000", "completed", "item_BIN"))
    assert brief(got) == expected
    async with http.get(f"http://127.0.0.1:{agent.port}/v1/messages", params={"limit": "500"}) as r:
        api = (await r.json())["messages"]
    assert sorted(m["content"] for m in api) == sorted(c for _, c, _, _ in expected)
    assert ("item_U2", "user", TRICKY[2]) in convo


async def test_huge_transcript_just_under_the_frame_cap_is_stored(agent, connect):
    big = ("ロボット🤖" * 70000)[:190000]  # ~900 kB of UTF-8 as json.dumps escapes it less; keep < 1 MiB
    tr = Trace(True)
    frame = json.dumps(tr.transcription("item_BIG", big, deltas=False)[0], ensure_ascii=False)
    assert 500_000 < len(frame.encode()) < 1024 * 1024
    peer = await connect(agent)
    await peer.send(frame, *tr.turn("resp_1", "item_A1", ["ok"]))
    assert await replies(peer) == []
    got = await rows(agent)
    assert [r["item_id"] for r in got] == ["item_BIG", "item_A1"]
    assert got[0]["content"] == big


async def test_storm_of_bad_frames_between_good_ones(agent, connect, http):
    """Every HOSTILE_OK frame between the events of a long GA session: one error each, all good stored."""
    tr = Trace(True, "sess_storm")
    good = tr.session()
    expected = []
    for i in range(len(HOSTILE_OK)):
        good += tr.user_speech(f"item_U{i}", f"question {i}")
        good += tr.turn(f"resp_{i}", f"item_A{i}", ["answer ", f"{i}"])
        expected += [("user", f"question {i}", "completed", f"item_U{i}"),
                     ("assistant", f"answer {i}", "completed", f"item_A{i}")]
    bads = [b for b, _ in HOSTILE_OK.values()]
    step = len(good) // (len(bads) + 1)
    peer = await connect(agent)
    for n, bad in enumerate(bads):
        await peer.send(*good[n * step:(n + 1) * step])
        if isinstance(bad, bytes):
            await peer.send_bytes(bad)
        else:
            await peer.send(bad)
    await peer.send(*good[len(bads) * step:])
    # a binary frame of valid JSON is as good as a text one
    await peer.send_bytes(json.dumps(ev("conversation.item.input_audio_transcription.completed",
                                        item_id="item_BIN", content_index=0, transcript="binary ok")).encode())
    got = await replies(peer)
    assert not peer.ws.closed
    assert sorted(r["error"]["code"] for r in got if r["type"] == "error") == sorted(c for _, c in HOSTILE_OK.values())
    assert sorted(_outputs(got)) == sorted(i for b in bads for i in _answered(b))
    stored = brief(await rows(agent))
    assert stored == expected + [("user", "binary ok", "completed", "item_BIN")]
    h = await health(agent, http)
    assert h["counters"]["errors"] == len(bads)
    assert h["counters"]["events"] == len(good) + len(bads) + 1
    assert h["status"] == "ok"


async def test_oversized_frame_closes_only_that_socket(agent, connect):
    peer = await connect(agent)
    await peer.send(json.dumps(ev("session.update", pad="x" * (1024 * 1024 + 10))))
    msg = await peer.ws.receive(timeout=2)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert peer.ws.close_code == 1009
    other = await connect(agent)
    tr = Trace(False)
    await other.send(*tr.turn("resp_1", "item_A1", ["still here"]))
    assert brief(await rows(agent)) == [("assistant", "still here", "completed", "item_A1")]


# --- 6. a long session, then the socket closes mid-response -----------------------------------------

async def test_300_turns_then_close_mid_response(agent, connect, http):
    tr = Trace(True, "sess_long")
    peer = await connect(agent)
    await peer.send(*tr.session())
    expected = []
    sent = 2
    for i in range(300):
        batch = tr.user_speech(f"item_U{i}", f"turn {i} from the user")
        batch += tr.turn(f"resp_{i}", f"item_A{i}", ["reply ", "number ", f"{i}"])
        if i % 50 == 7:  # now and then a tool call in the middle
            batch += [tr.response_created(f"resp_{i}_f")]
            batch += tr.function_call(f"resp_{i}_f", f"item_F{i}", f"call_{i}", "emotion",
                                      '{"emotion_tag":"happy","intensity":0.5}', index=0)
            batch += [tr.response_done(f"resp_{i}_f", [tr.call_item(f"item_F{i}", f"call_{i}", "emotion",
                                                                     '{"emotion_tag":"happy","intensity":0.5}')])]
        await peer.send(*batch)
        sent += len(batch)
        expected += [("user", f"turn {i} from the user", "completed", f"item_U{i}"),
                     ("assistant", f"reply number {i}", "completed", f"item_A{i}")]
    await wait_for(lambda: agent.health()["counters"]["events"] == sent)
    assert agent.conversations.open_items() == 0  # state does not grow with the session
    last = tr.user_speech("item_Ulast", "and one more thing")
    last += [tr.response_created("resp_last")]
    last += tr.assistant_message("resp_last", "item_Alast", ["I was just ", "saying"], finish=False)
    await peer.send(*last)
    sent += len(last)
    await peer.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    await wait_for(lambda: agent.conversations.open_items() == 0)  # the voice agent did not come back in time
    expected += [("user", "and one more thing", "completed", "item_Ulast"),
                 ("assistant", "I was just saying", "incomplete", "item_Alast")]
    got = await rows(agent)
    assert brief(got) == expected
    assert {r["session_id"] for r in got} == {"sess_long"}
    h = await health(agent, http)
    assert h["counters"]["events"] == sent
    assert h["counters"]["errors"] == 0
    assert h["counters"]["dispatches"] == 6
    assert h["connections"] == 0 and h["counters"]["connections_total"] == 1
    assert agent.conversations.open_items() == 0  # what the closed socket held was stored, then forgotten


# --- 7. health after everything; the agent still answers ----------------------------------------------

async def test_health_consistent_after_mixed_traffic_and_agent_still_answers(agent, connect, http):
    tr = Trace(True, "sess_mix")
    a = await connect(agent)
    b = await connect(agent)
    trace_a = tr.session() + tr.user_speech("item_U1", "hi") + tr.turn("resp_1", "item_A1", ["hello"])
    await a.send(*trace_a)
    await a.send("{oops", "[]")
    await b.send_bytes(b"\xc3\x28")
    async with http.post(f"http://127.0.0.1:{agent.port}/v1/events",
                         json=tr.transcription("item_HTTP", "over http", deltas=False)[0]) as r:
        assert r.status == 202
    async with http.post(f"http://127.0.0.1:{agent.port}/v1/events", data=b'{"type": 1}',
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "missing_type"
    errs_a, errs_b = await replies(a), await replies(b)
    assert [x["error"]["code"] for x in errs_a] == ["invalid_json", "invalid_event"]
    assert [x["error"]["code"] for x in errs_b] == ["invalid_utf8"]
    await a.close()
    await wait_for(lambda: agent.health()["connections"] == 1)
    h = await health(agent, http)
    c = h["counters"]
    assert c["events"] == len(trace_a) + 2 + 1 + 2
    assert c["errors"] == 4
    assert c["ignored"] == sum(event["type"] in UNKNOWN_TYPES for event in trace_a)
    assert c["connections_total"] == 2 and h["connections"] == 1
    assert h["status"] == "ok" and h["storage"]["state"] == "ok"
    # the agent still answers on the surviving socket and on a new one
    await b.send(*Trace(False).turn("resp_b", "item_B1", ["still alive"]))
    c2 = await connect(agent)
    await c2.send('{"type":"response.done"}')
    assert (await c2.receive_json())["error"]["code"] == "invalid_shape"
    got = brief(await rows(agent))
    assert ("assistant", "still alive", "completed", "item_B1") in got
    assert ("user", "over http", "completed", "item_HTTP") in got
    assert ("assistant", "hello", "completed", "item_A1") in got


async def test_a_call_cut_off_with_no_barge_in_is_not_run_and_answered_with_an_error(agent, connect):
    """The voice agent cancels its own response (no user speech): the server sends the cut call
    item before the cancelled ``response.done``; nothing stopped that response yet, so the call
    is a fault (not run) and the peer hears why."""
    moved = []
    agent.on_motion(moved.append)
    peer = await connect(agent)
    item = {"id": "item_F1", "type": "function_call", "status": "incomplete", "name": "motion",
            "call_id": "call_half", "arguments": '{"motion_tag":"wa'}
    await peer.send(ev("response.created", response={"id": "resp_1", "status": "in_progress", "output": []}),
                    ev("response.output_item.done", response_id="resp_1", output_index=0, item=item),
                    ev("response.done", response={"id": "resp_1", "status": "cancelled", "output": [item]}))
    got = await replies(peer)
    assert [r["error"]["code"] for r in got] == ["incomplete_function_call"]
    row = await stored_call(agent, "call_half")
    assert row["status"] == "not_dispatched" and moved == []
