"""Cards for the inspector's tests, written by the agent itself: a real :class:`Agent` with a
small robot (an arm on a virtual serial port, a head whose serial port does not exist) takes a
scripted conversation over a real WebSocket and stores it on a TF-card folder.

The conversation (session ``sess_main_42``, after a short ``sess_first_1``):

1. "Wave at me!" -> "Sure, waving now!" with wave x2 (done), wave (busy: robot.max_queued),
   happy (not shown: no actuator shows emotions), nod (failed: the head's port is missing),
   get_weather (done by a handler);
2. a turn whose transcription failed;
3. "Tell me a long story" -> cut off by a barge-in: the running wave x3 is dropped, a bow
   arriving after the barge-in is dropped;
4. "Stop! Do the moonwalk" -> an error event from the voice agent, moonwalk (failed: unknown
   tag), a wave cut off before its arguments were complete (not run), then "I can't moonwalk";
5. a response cut off by a barge-in before it said anything;
6. "Good night" -> "Good night, sleep well!".
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
from helpers import Peer, agent_config
from traces import (
    assistant_turn,
    ev,
    function_call_done,
    response_done,
    session_created,
    speech_started,
    transcription,
    transcription_failed,
    user_item,
)

MAIN = "sess_main_42"
FIRST = "sess_first_1"


def robot_config(tmp: Path) -> dict:
    cfg = agent_config(tmp, storage={"mode": "external", "tf_root": str(tmp / "card")})
    cfg["robot"] = {"default_library": False, "max_queued": 1}
    cfg["actuators"] = {
        "arm": {"driver": "maestro", "port": "loop://", "channels": [0], "min": -10, "max": 90, "home": 0},
        "head": {"driver": "feetech-sts", "port": str(tmp / "no-such-tty"), "ids": [1, 2]},
    }
    cfg["motions"] = {"wave": {"arm": [[0.2, 70], [0.4, 0]]}, "bow": {"arm": [[0.2, 30], [0.4, 0]]},
                      "nod": {"head": [[0.2, [0, 10]], [0.4, [0, 0]]]}}
    cfg["emotions"] = {"happy": {"color": "#FFC800"}}
    return cfg


async def _converse(tmp: Path) -> None:
    from ticos_agent import Agent

    agent = Agent(robot_config(tmp))

    @agent.on_function("get_weather")
    def weather(call):
        return {"sky": "clear"}

    async def settle(seconds: float = 0.05) -> None:
        await asyncio.sleep(seconds)
        await agent.store.flush()

    async with agent, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{agent.port}/realtime"
        first = Peer(http, await http.ws_connect(url))
        await first.send(session_created(FIRST), user_item("item_F1"), transcription("item_F1", "Hello robot"),
                         *assistant_turn("resp_f1", "item_FA1", ["Hello! ", "Nice to meet you."], audio=False))
        await settle()
        await first.close()
        await asyncio.sleep(0.3)
        p = Peer(http, await http.ws_connect(url))
        await p.send(session_created(MAIN))
        await p.send(user_item("item_U1"), transcription("item_U1", "Wave at me!"))
        await p.send(*assistant_turn("resp_1", "item_A1", ["Sure, ", "waving now!"], audio=False)[:-1])
        await p.send(function_call_done("resp_1", "call_wave", "motion", {"motion_tag": "wave", "repeat": 2}),
                     function_call_done("resp_1", "call_busy", "motion", {"motion_tag": "wave"}),
                     function_call_done("resp_1", "call_happy", "emotion", {"emotion_tag": "happy"}),
                     function_call_done("resp_1", "call_nod", "motion", {"motion_tag": "nod"}),
                     function_call_done("resp_1", "call_weather", "get_weather", {"city": "Paris"}),
                     response_done("resp_1"))
        await settle(1.1)  # the wave x2 (0.8 s) is done
        await p.send(user_item("item_U2"), transcription_failed("item_U2"))
        await p.send(user_item("item_U3"), transcription("item_U3", "Tell me a long story"))
        await settle(1.1)
        await p.send(ev("response.created", response={"id": "resp_2", "status": "in_progress", "output": []}),
                     ev("response.audio_transcript.delta", response_id="resp_2", item_id="item_A2", output_index=0,
                        content_index=0, delta="Once upon a time there was a little robot who"),
                     function_call_done("resp_2", "call_long", "motion", {"motion_tag": "wave", "repeat": 3}))
        await settle(0.3)
        await p.send(speech_started("item_U4"),
                     function_call_done("resp_2", "call_bow", "motion", {"motion_tag": "bow"}),
                     response_done("resp_2", "cancelled"))
        await settle(1.1)
        await p.send(user_item("item_U4"), transcription("item_U4", "Stop! Do the moonwalk"))
        await settle(1.1)
        await p.send(ev("response.created", response={"id": "resp_3", "status": "in_progress", "output": []}),
                     ev("error", error={"type": "server_error", "code": "rate_limited", "message": "slow down"}),
                     function_call_done("resp_3", "call_moon", "motion", {"motion_tag": "moonwalk"}),
                     function_call_done("resp_3", "call_cut", "motion", {"motion_tag": "wave"}, status="incomplete"),
                     *assistant_turn("resp_3", "item_A3", ["I can't moonwalk, ", "sorry."], audio=False)[1:])
        await settle(1.1)
        await p.send(ev("response.created", response={"id": "resp_4", "status": "in_progress", "output": []}))
        await settle(0.2)
        await p.send(speech_started("item_U5"), response_done("resp_4", "cancelled"))
        await settle(1.1)
        await p.send(user_item("item_U5"), transcription("item_U5", "Good night"),
                     *assistant_turn("resp_5", "item_A5", ["Good night, ", "sleep well!"], audio=False))
        await settle(0.3)
        await agent.store.flush()
        agent.store.add_memory("long_term", "the child likes waving robots")
        await agent.store.flush()


def build_card(tmp: Path) -> Path:
    """The card folder (``<tmp>/card``) with the conversation; returns the database path."""
    old = {k: os.environ.get(k) for k in ("TICOS_ALLOW_UNMOUNTED_CARD", "GPIOZERO_PIN_FACTORY")}
    os.environ["TICOS_ALLOW_UNMOUNTED_CARD"] = "1"
    os.environ["GPIOZERO_PIN_FACTORY"] = "mock"
    try:
        asyncio.run(_converse(tmp))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    db = tmp / "card" / ".config" / "ticos" / "ticos.db"
    assert db.is_file()
    return db


def copy_card(db: Path, root: Path) -> Path:
    """A copy of the card ``db`` at ``root`` (a card's folder layout)."""
    target = root / ".config" / "ticos" / "ticos.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(db, target)
    return target


CRASH = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')
c.execute("INSERT INTO messages (id, role, content, item_id, user_id, datetime, session_id, status) "
          "VALUES ('9000000001', 'user', 'said just before the power cut', 'item_X', 'nobody', "
          "strftime('%Y-%m-%d %H:%M:%S', 'now', 'localtime'), 'sess_after_cut', 'completed')")
os._exit(0)  # the power cut: -wal and -shm stay beside the database, nothing checkpointed
"""


def power_cut(db: Path) -> Path:
    """Leave ``db`` as a power cut does: a last row only in its -wal, the -shm beside it."""
    subprocess.run([sys.executable, "-c", CRASH, str(db)], check=True)
    assert Path(str(db) + "-wal").is_file() and Path(str(db) + "-shm").is_file()
    return db


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
