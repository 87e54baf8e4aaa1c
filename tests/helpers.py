"""Test helpers shared by the test modules: an agent's config, a voice-agent client, waiting,
reading back what an agent did and stored.

Fixtures live in ``conftest.py``; what a test calls lives here (import it as ``helpers``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


def db_rows(path, sql: str = "SELECT id, content FROM messages ORDER BY rowid", *, readonly: bool = False) -> list:
    """What another process reads from the database at ``path`` now (committed rows only);
    ``[]`` when the table is not there yet. ``readonly`` opens it with ``mode=ro``."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) if readonly else sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def run_fresh(script: str, home, timeout: float = 60) -> str:
    """Run ``script`` in a fresh interpreter (what a process loads at start cannot be seen from
    the test process, which has loaded everything) with ``HOME`` set to ``home``; its standard
    output, after checking it exited 0."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "HOME": str(home)})
    assert out.returncode == 0, out.stderr
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_config(tmp_path, **sections) -> dict:
    cfg = {
        "server": {"host": "127.0.0.1", "port": 0},
        "storage": {"dir": str(tmp_path / "internal")},
        "audio": {"enabled": False},
        "conversation": {"reconnect_grace": 0.2},  # what a closed socket left open is stored soon
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


# --- the robot of the trace tests: two simulated actuators, a small library (conftest's ``robot``) ---

MOTIONS = {
    "wave": {"arm": [[0.05, 30], [0.1, 0]]},  # 0.1 s
    "sway": {"arm": [[0.25, 20], [0.5, 0]]},  # 0.5 s a time: long with repeat
}
EMOTIONS = {"happy": {"color": "#FFC800"}, "neutral": {"color": "#202020"}}


def robot_config(tmp_path, **sections) -> dict:
    """``agent_config`` with an arm (a simulated position actuator) and a face (a simulated light)."""
    cfg = agent_config(tmp_path, **sections)
    cfg.update({"robot": {"default_library": False},
                "actuators": {"arm": {"driver": "mock", "kind": "position"},
                              "face": {"driver": "mock", "kind": "light"}},
                "motions": MOTIONS, "emotions": EMOTIONS})
    return cfg


#: frames the test's peers sent, by the agent's port (what :func:`settle` waits for; emptied
#: before each test by conftest, since ports are handed out again)
_SENT: dict[int, int] = {}


class Peer:
    """A voice agent: a real aiohttp WebSocket client."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws
        peer = ws.get_extra_info("peername")
        self._port = int(peer[1]) if peer else 0

    async def send(self, *events) -> None:
        for event in events:
            await self.ws.send_str(event if isinstance(event, str) else json.dumps(event))
            _SENT[self._port] = _SENT.get(self._port, 0) + 1

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)
        _SENT[self._port] = _SENT.get(self._port, 0) + 1

    async def receive_json(self, timeout: float = 2.0) -> dict:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
        return json.loads(msg.data)

    async def rejected(self) -> tuple[dict, dict]:
        """The two answers to a call of the robot's own tools with unusable arguments: the voice
        agent's ``error`` event and the model's failed ``function_call_output``, in whichever
        order they came."""
        got = [await self.receive_json() for _ in range(2)]
        error = next(r for r in got if r["type"] == "error")
        output = next(r for r in got if r["type"] == "conversation.item.create")
        assert output["item"]["type"] == "function_call_output"
        return error, output

    async def no_reply(self, timeout: float = 0.2) -> None:
        try:
            msg = await self.ws.receive(timeout=timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected reply {msg.type} {msg.data!r}")

    async def close(self) -> None:
        await self.ws.close()


async def settle(agent, *, rounds: int = 3) -> None:
    """Let the agent handle what was sent, then flush storage to disk. The agent takes a long
    burst in turns (2 ms of frames, then the loop's other work): this waits until it has taken
    in as many frames as the test's peers sent it, or took in none for 0.25 s (a frame it
    refused, a socket it closed)."""
    loop = asyncio.get_running_loop()
    port = getattr(agent, "port", None)
    seen, since = -1, loop.time()
    while port and agent.counters["events"] < _SENT.get(port, 0) and loop.time() - since < 0.25:
        if agent.counters["events"] != seen:
            seen, since = agent.counters["events"], loop.time()
        await asyncio.sleep(0.01)
    for _ in range(rounds):
        await asyncio.sleep(0.02)
    if agent.store is not None:
        await agent.store.flush()


def wait_sync(predicate, timeout: float = 3.0) -> None:
    """``wait_for`` for a test that runs no loop (``TicosClient``'s own thread runs the agent)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


async def wait_for(predicate, timeout: float = 3.0, interval: float = 0.01):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def stored_call(agent, call_id: str, timeout: float = 4.0, *, session: str | None = None) -> dict:
    """The stored row of a function call once it has an outcome (not just ``received``): of
    ``session``, or the newest of that call id (a restarted voice agent may reuse it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await agent.store.flush()
        rows = [c for c in await agent.store.calls(limit=500)  # newest first
                if c["call_id"] == call_id and session in (None, c["session_id"])]
        if rows and rows[0]["status"] != "received":  # not an older session's row while the newest waits
            return rows[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no outcome stored for call {call_id}")
        await asyncio.sleep(0.02)


async def calls(agent, *call_ids: str, timeout: float = 5.0) -> dict[str, dict]:
    """The stored rows of these calls (by call id), once each has an outcome."""
    return {call_id: await stored_call(agent, call_id, timeout) for call_id in call_ids}


async def messages(agent) -> list[tuple]:
    """The newest 500 stored messages, oldest first: (role, content, status, item_id)."""
    await settle(agent)
    rows = await agent.store.messages(limit=500)
    return [(r["role"], r["content"], r["status"], r["item_id"]) for r in reversed(rows)]


async def messages_all(agent) -> list[tuple]:
    """Every stored message (the store pages by at most 500), oldest first, as :func:`messages`."""
    await settle(agent)
    out: list[dict] = []
    while True:
        page = await agent.store.messages(limit=500, offset=len(out))
        out += page
        if len(page) < 500:
            return [(r["role"], r["content"], r["status"], r["item_id"]) for r in reversed(out)]


async def replies(peer: Peer, quiet: float = 0.3, first: float = 1.0) -> list[dict]:
    """Everything the agent sent back until it goes quiet: ``first`` seconds for the first reply
    (a busy CI machine may take longer than ``quiet`` for the frames before it), then ``quiet``
    seconds of quiet."""
    out: list[dict] = []
    while True:
        try:
            msg = await peer.ws.receive(timeout=quiet if out else max(first, quiet))
        except TimeoutError:
            return out
        assert msg.type == aiohttp.WSMsgType.TEXT, f"socket closed or odd frame: {msg.type} {msg.data!r}"
        out.append(json.loads(msg.data))


async def health(agent, http: aiohttp.ClientSession) -> dict:
    async with http.get(f"http://127.0.0.1:{agent.port}/health") as r:
        assert r.status == 200
        return await r.json()


def ops(agent, name: str = "arm", since: float = 0.0) -> list[tuple]:
    """What the simulated actuator ``name`` was told: (operation, arguments), oldest first."""
    drv = agent.actuators.drivers[name]
    return [(op, args) for t, op, args in list(drv.history) if t >= since]


def moves(agent, since: float = 0.0) -> list[float]:
    """Where the simulated ``arm`` was told to move (its first channel), oldest first."""
    return [args[0][0] for op, args in ops(agent, "arm", since) if op == "move"]


def session_config_messages(home: str | None = None) -> list[dict]:
    """What ``~/.config/ticos/session_config`` gives the voice agent as the conversation so far."""
    path = Path(home or os.environ["HOME"]) / ".config" / "ticos" / "session_config"
    return json.loads(path.read_text())["model"]["messages"]["nobody"]


def move_times(agent, since: float = 0.0) -> list[float]:
    """When the simulated ``arm`` was told to move (loop time), oldest first."""
    drv = agent.actuators.drivers["arm"]
    return [t for t, op, _ in list(drv.history) if op == "move" and t >= since]


#: the colours of ``EMOTIONS`` as the simulated face is given them (0..1 per channel)
HAPPY = (0xFF / 255, 0xC8 / 255, 0x00 / 255)
NEUTRAL = (0x20 / 255, 0x20 / 255, 0x20 / 255)


def lights(agent, since: float = 0.0) -> list[tuple]:
    """(colour, brightness) the simulated face was told to show, oldest first."""
    return [(args[0], args[1]) for op, args in ops(agent, "face", since) if op == "light"]


@dataclass
class Seen:
    """What a :func:`recording_client`'s handlers were given, oldest first."""

    messages: list[dict] = field(default_factory=list)
    motions: list[dict] = field(default_factory=list)
    emotions: list[dict] = field(default_factory=list)
    functions: list[tuple] = field(default_factory=list)  # (name, arguments)
    convo: list[tuple] = field(default_factory=list)  # (item_id, role, content)


def recording_client(port: int, store_dir):
    """A ``TicosClient`` on ``port`` (not started) keeping its messages in ``store_dir``, with a
    handler of every kind recording what it is given: ``(client, seen)``."""
    from ticos_agent import SaveMode, TicosClient

    client = TicosClient(port=port, save_mode=SaveMode.INTERNAL)
    client.enable_local_storage(str(store_dir))
    seen = Seen()
    client.set_message_handler(seen.messages.append)
    client.set_motion_handler(seen.motions.append)
    client.set_emotion_handler(seen.emotions.append)
    client.set_function_call_handler(lambda name, args: seen.functions.append((name, args)))
    client.set_conversation_handler(lambda item_id, role, content: seen.convo.append((item_id, role, content)))
    return client, seen


# --- real parts: a pty device's frames, MockFactory pin timelines, the outputs on a socket ---


def timeline(pin) -> list[tuple[float, float]]:
    """(monotonic time, value) of every change of a MockPin (it stores deltas; the last change's
    absolute time is ``_last_change``)."""
    t, rel = 0.0, []
    for s in pin.states:
        t += s.timestamp
        rel.append((t, float(s.state)))
    if not rel:
        return []
    offset = pin._last_change - rel[-1][0]
    return [(offset + a, v) for a, v in rel]


async def frames_settle(dev, quiet: float = 0.3, timeout: float = 5.0) -> list:
    """The device's frames once nothing new arrived for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    n = -1
    while n != len(dev.frames) and time.monotonic() < deadline:
        n = len(dev.frames)
        await asyncio.sleep(quiet)
    return list(dev.frames)


class Outputs:
    """Collects the function_call_output replies on a peer's socket, by call_id."""

    def __init__(self, peer):
        self.peer = peer
        self.got: dict[str, dict] = {}
        self.at: dict[str, float] = {}

    async def wait(self, *call_ids: str, timeout: float = 8.0) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        while not all(c in self.got for c in call_ids):
            left = deadline - time.monotonic()
            assert left > 0, f"no outcome for {[c for c in call_ids if c not in self.got]}; got {self.got}"
            reply = await self.peer.receive_json(timeout=left)
            if reply.get("type") == "conversation.item.create" and reply["item"].get("type") == "function_call_output":
                cid = reply["item"]["call_id"]
                self.got[cid] = json.loads(reply["item"]["output"])
                self.at[cid] = time.monotonic()
        return {c: self.got[c] for c in call_ids}

    async def one(self, call_id: str, timeout: float = 8.0) -> dict:
        return (await self.wait(call_id, timeout=timeout))[call_id]


# --- what the agent's bounded state holds (tests of long sessions) ---

def call_intake(agent):
    """The agent's call consumer (the agent keeps no name for it): the owner of a route it takes."""
    from ticos_agent.calls import CallIntake

    for _, handler in agent.intake._table["response.function_call_arguments.done"]:
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, CallIntake):
            return owner
    raise AssertionError("no CallIntake routed")


def sizes(agent) -> dict[str, int]:
    turns, convo, calls = agent.turns, agent.conversations, call_intake(agent)
    return {
        "turns.active": sum(len(v) for v in turns._active.values()),
        "turns.active_peers": len(turns._active),
        "turns.interrupted": len(turns._interrupted),
        "turns.interrupted_sessions": max((len(v) for v in turns._interrupted.values()), default=0),
        "turns.orphans": len(turns._orphans),
        "calls.seen": len(calls._seen),
        "calls.seen_sessions": max((len(v) for v in calls._seen.values()), default=0),
        "calls.streamed": len(calls._streamed),
        "calls.in_flight": calls._in_flight,
        "conversation.users": len(convo._users),
        "conversation.open": len(convo._open),
        "conversation.stored": len(convo._stored),
        "conversation.waiting": len(convo._waiting),
        "life.peers": len(agent.life._peers),
        "life.timers": len(agent.life._timers),
        "peers": len(agent.peers),
    }
