"""Realtime traces the agent has never seen, played the way an outside checker would.

A real agent on a loopback port, a real aiohttp WebSocket client, a real SQLite file, and a robot
of simulated ``mock`` actuators whose ``history`` says what each one was told. Expectations come
from the design and the README, not from the code: voice turns in both spellings, barge-in,
streamed and odd function calls, a long session, hostile frames, a reconnect mid-response.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json

import aiohttp
import pytest
from helpers import agent_config, settle, wait_for

from ticos_agent import Agent

_ids = itertools.count(1)

# --- the robot: two simulated actuators, a small library -------------------------------------

MOTIONS = {
    "wave": {"arm": [[0.05, 30], [0.1, 0]]},  # 0.1 s
    "sway": {"arm": [[0.25, 20], [0.5, 0]]},  # 0.5 s a time: long with repeat
}
EMOTIONS = {"happy": {"color": "#FFC800"}, "neutral": {"color": "#202020"}}


def robot_config(tmp_path, **sections) -> dict:
    cfg = agent_config(tmp_path, **sections)
    cfg.update({"robot": {"default_library": False},
                "actuators": {"arm": {"driver": "mock", "kind": "position"},
                              "face": {"driver": "mock", "kind": "light"}},
                "motions": MOTIONS, "emotions": EMOTIONS})
    return cfg


@pytest.fixture
async def robot(tmp_path):
    agents: list[Agent] = []

    async def start(**sections) -> Agent:
        agent = Agent(robot_config(tmp_path / f"r{len(agents)}", **sections))
        await agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.stop()


def ops(agent: Agent, name: str = "arm", since: float = 0.0) -> list[tuple]:
    """What the simulated actuator ``name`` was told: (operation, arguments), oldest first."""
    drv = agent.actuators.drivers[name]
    return [(op, args) for t, op, args in list(drv.history) if t >= since]


def moves(agent: Agent, since: float = 0.0) -> list[float]:
    return [args[0][0] for op, args in ops(agent, "arm", since) if op == "move"]


# --- trace builders (both spellings) -----------------------------------------------------------

BETA_TO_GA = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}


def e(type_: str, **fields) -> dict:
    return {"type": type_, "event_id": f"evt_u{next(_ids):06d}", **fields}


def pcm(samples: int = 240) -> str:
    return base64.b64encode((900).to_bytes(2, "little", signed=True) * samples).decode()


class Voice:
    """One voice agent's session, in GA or beta spelling."""

    def __init__(self, ga: bool, session_id: str = "sess_u"):
        self.ga, self.session_id = ga, session_id

    def t(self, beta: str) -> str:
        return BETA_TO_GA.get(beta, beta) if self.ga else beta

    def session(self) -> list[dict]:
        sess = {"id": self.session_id, "object": "realtime.session"}
        return [e("session.created", session=sess), e("session.updated", session=sess)]

    def user(self, item_id: str, text: str | None) -> list[dict]:
        item = {"id": item_id, "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        out = [e("input_audio_buffer.speech_started", audio_start_ms=100, item_id=item_id),
               e("input_audio_buffer.speech_stopped", audio_end_ms=900, item_id=item_id),
               e("input_audio_buffer.committed", previous_item_id=None, item_id=item_id),
               e(self.t("conversation.item.created"), previous_item_id=None, item=item)]
        if self.ga:
            out.append(e("conversation.item.done", previous_item_id=None, item=item))
        if text is not None:
            out.append(e("conversation.item.input_audio_transcription.completed", item_id=item_id,
                         content_index=0, transcript=text))
        return out

    def created(self, rid: str) -> dict:
        return e("response.created", response={"id": rid, "object": "realtime.response", "status": "in_progress",
                                               "output": []})

    def said(self, rid: str, item_id: str, parts: list[str], *, index: int = 0, finish: bool = True,
             audio: bool = True) -> list[dict]:
        where = {"response_id": rid, "item_id": item_id, "output_index": index, "content_index": 0}
        out = [e("response.output_item.added", response_id=rid, output_index=index,
                 item={"id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
                       "content": []})]
        for p in parts:
            out.append(e(self.t("response.audio_transcript.delta"), **where, delta=p))
            if audio:
                out.append(e(self.t("response.audio.delta"), **where, delta=pcm()))
        if finish:
            out.append(e(self.t("response.audio.done"), **where))
            out.append(e(self.t("response.audio_transcript.done"), **where, transcript="".join(parts)))
            out.append(e("response.output_item.done", response_id=rid, output_index=index,
                         item=self.message(item_id, "".join(parts))))
        return out

    def message(self, item_id: str, text: str, status: str = "completed") -> dict:
        kind = "output_audio" if self.ga else "audio"
        return {"id": item_id, "type": "message", "role": "assistant", "status": status,
                "content": [{"type": kind, "transcript": text}]}

    @staticmethod
    def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
        return {"id": item_id, "type": "function_call", "status": status, "name": name, "call_id": call_id,
                "arguments": arguments}

    def call(self, rid: str, item_id: str, call_id: str, name: str, arguments: str, *, index: int = 1,
             pieces: int = 4) -> list[dict]:
        """A function call as the server streams it: added, argument deltas, done events."""
        out = [e("response.output_item.added", response_id=rid, output_index=index,
                 item=self.call_item(item_id, call_id, name, "", "in_progress"))]
        step = max(1, -(-len(arguments) // pieces))
        for i in range(0, len(arguments), step):
            out.append(e("response.function_call_arguments.delta", response_id=rid, item_id=item_id,
                         output_index=index, call_id=call_id, delta=arguments[i:i + step]))
        out.append(e("response.function_call_arguments.done", response_id=rid, item_id=item_id,
                     output_index=index, call_id=call_id, name=name, arguments=arguments))
        out.append(e("response.output_item.done", response_id=rid, output_index=index,
                     item=self.call_item(item_id, call_id, name, arguments)))
        return out

    @staticmethod
    def done(rid: str, output: list | None = None, status: str = "completed") -> dict:
        details = {"type": status, "reason": "turn_detected"} if status == "cancelled" else None
        return e("response.done", response={"id": rid, "object": "realtime.response", "status": status,
                                            "status_details": details, "output": output or []})


# --- what came back, what was stored ------------------------------------------------------------

async def replies(peer, quiet: float = 0.3, first: float = 1.0) -> list[dict]:
    """Every frame the agent sent until it went quiet."""
    out: list[dict] = []
    while True:
        try:
            msg = await peer.ws.receive(timeout=quiet if out else first)
        except TimeoutError:
            return out
        assert msg.type == aiohttp.WSMsgType.TEXT, f"socket closed or odd frame: {msg.type} {msg.data!r}"
        out.append(json.loads(msg.data))


def codes(frames: list[dict]) -> list[str]:
    return [f["error"]["code"] for f in frames if f.get("type") == "error"]


def outputs(frames: list[dict]) -> dict[str, dict]:
    return {f["item"]["call_id"]: json.loads(f["item"]["output"]) for f in frames
            if f.get("type") == "conversation.item.create" and f["item"].get("type") == "function_call_output"}


async def messages(agent: Agent) -> list[tuple]:
    await settle(agent)
    rows = await agent.store.messages(limit=500)
    return [(r["role"], r["content"], r["status"], r["item_id"]) for r in reversed(rows)]


async def calls(agent: Agent, *call_ids: str, timeout: float = 5.0) -> dict[str, dict]:
    """The stored rows of these calls, once each has an outcome."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await agent.store.flush()
        rows = {c["call_id"]: c for c in await agent.store.calls(limit=500) if c["call_id"] in call_ids}
        if all(cid in rows and rows[cid]["status"] != "received" for cid in call_ids):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no outcome stored for all of {call_ids}: {rows}")
        await asyncio.sleep(0.02)


async def health(agent: Agent, http) -> dict:
    async with http.get(f"http://127.0.0.1:{agent.port}/health") as r:
        assert r.status == 200
        return await r.json()


# --- 6. reconnect mid-response ----------------------------------------------------------------

@pytest.mark.parametrize("ga", [True, False], ids=["ga", "beta"])
async def test_barge_in_on_the_new_socket_stops_the_continued_response(robot, connect, ga):
    """The socket drops while resp_1 streams and its long motion runs; the voice agent goes on
    on a new socket, and the user talks over the robot there: the interrupted response's motion
    stops (design: barge-in drops the interrupted response's motions; ids are the conversation's)."""
    agent = await robot(conversation={"reconnect_grace": 5.0})
    v = Voice(ga, "sess_rc")
    first = await connect(agent)
    await first.send(*v.session(), *v.user("item_U1", "Dance for me"), v.created("resp_1"),
                     *v.said("resp_1", "item_A1", ["Here ", "I "], finish=False),
                     *v.call("resp_1", "item_F1", "call_sway", "motion", '{"motion_tag":"sway","repeat":20}'))
    await wait_for(lambda: moves(agent))  # the 10 s motion runs
    await first.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    second = await connect(agent)
    await second.send(*v.session(), e(v.t("response.audio_transcript.delta"), response_id="resp_1",
                                      item_id="item_A1", output_index=0, content_index=0, delta="go!"),
                      e("input_audio_buffer.speech_started", audio_start_ms=3000, item_id="item_U2"))
    rows = await calls(agent, "call_sway")
    assert rows["call_sway"]["status"] == "dropped"
    await second.send(v.done("resp_1", [v.message("item_A1", "Here I go!", "incomplete")], status="cancelled"))
    assert await replies(second) == []
    assert await messages(agent) == [("user", "Dance for me", "completed", "item_U1"),
                                     ("assistant", "Here I go!", "cancelled", "item_A1")]


async def test_response_done_on_the_new_socket_gives_the_whole_text(robot, connect):
    """Cut after "Hello, ": the voice agent's response.done on the new socket (within the grace)
    carries the item's whole transcript; the stored row has it, not the half the first socket saw."""
    agent = await robot(conversation={"reconnect_grace": 5.0})
    v = Voice(True, "sess_rc2")
    first = await connect(agent)
    await first.send(*v.session(), v.created("resp_1"), *v.said("resp_1", "item_A1", ["Hello, "], finish=False))
    await first.close()
    await wait_for(lambda: agent.health()["connections"] == 0)
    second = await connect(agent)
    await second.send(*v.session(), v.done("resp_1", [v.message("item_A1", "Hello, world!")]))
    assert await replies(second) == []
    assert await messages(agent) == [("assistant", "Hello, world!", "completed", "item_A1")]


async def test_a_message_only_whole_in_its_done_events_is_stored(robot, connect):
    """An item announced by output_item.added whose words come only in output_item.done and
    response.done (no transcript deltas): the words are stored, not lost."""
    agent = await robot()
    v = Voice(False, "sess_nod")
    peer = await connect(agent)
    await peer.send(v.created("resp_1"),
                    e("response.output_item.added", response_id="resp_1", output_index=0,
                      item={"id": "item_A1", "type": "message", "role": "assistant", "content": []}),
                    e("response.output_item.done", response_id="resp_1", output_index=0,
                      item=v.message("item_A1", "Just the words.")),
                    v.done("resp_1", [v.message("item_A1", "Just the words.")]))
    assert await replies(peer) == []
    assert await messages(agent) == [("assistant", "Just the words.", "completed", "item_A1")]
