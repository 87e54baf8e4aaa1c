"""The commit policy: few commits, a turn in one transaction, nothing older than 1 s lost.

The store commits a conversation record (a message with words, a call, a memory) at most
``COMMIT_DELAY`` (0.8 s) after it was enqueued, an event-log line (or a user's message still
without words) at most ``EVENT_LOG_DELAY`` (2 s) after, or sooner with the next commit; a turn
as soon as it is over (``TURN_SETTLE`` after its last row), and everything at a flush or a
clean stop. The drills run the real agent (``ticos-agent run``) in its own process and kill
it with SIGKILL mid-conversation.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from helpers import db_rows, free_port
from traces import (
    assistant_turn,
    ev,
    function_call_done,
    session_created,
    speech_started,
    transcription,
    user_item,
)

from ticos_agent.storage import open_store
from ticos_agent.storage.store import COMMIT_DELAY, EVENT_LOG_DELAY, TURN_SETTLE


def visible(db: Path, sql: str) -> list[tuple]:
    """What another process would read now (committed rows only)."""
    return db_rows(db, sql, readonly=True)


async def commits_now(store) -> int:
    """The store's commit count once the commit another process already sees is counted (the
    count moves when the writer thread hands the commit back to the loop, just after it)."""
    await asyncio.sleep(0.1)
    return store.health()["commits"]


# --- the store ------------------------------------------------------------------------------

async def first_seen(db: Path, sql: str, want: tuple, limit: float = 4.0) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if want in visible(db, sql):
            return time.monotonic() - t0
        await asyncio.sleep(0.01)
    return None


async def test_a_record_waits_at_most_the_commit_delay(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    await asyncio.sleep(0.2)
    store.record_call(call_id="c1", name="motion", arguments="{}")
    seen = await first_seen(tmp_path / "ticos.db", "SELECT call_id FROM function_calls", ("c1",))
    assert seen is not None and COMMIT_DELAY - 0.1 <= seen < 1.0, seen
    assert await commits_now(store) == 1
    await store.close()


async def test_an_event_log_line_waits_for_the_next_commit_or_its_own_delay(tmp_path):
    """Alone, a line waits ``EVENT_LOG_DELAY``; a record that comes meanwhile takes it along
    (one commit for both), and a user's wordless message is a line's equal."""
    store = await open_store("internal", internal_dir=tmp_path)
    db = tmp_path / "ticos.db"
    await asyncio.sleep(0.2)
    store.log_event("input_audio_buffer.speech_started", event_id="e1")
    seen = await first_seen(db, "SELECT event_id FROM events", ("e1",))
    assert seen is not None and EVENT_LOG_DELAY - 0.1 <= seen < EVENT_LOG_DELAY + 0.3, seen
    assert await commits_now(store) == 1

    t0 = time.monotonic()
    store.log_event("input_audio_buffer.speech_started", event_id="e2", item_id="u2")
    mid = store.add_message(role="user", content="", item_id="u2", status="pending")
    await asyncio.sleep(0.5)
    assert not visible(db, "SELECT event_id FROM events WHERE event_id = 'e2'")
    store.update_message(mid, content="hello robot", status="completed")  # words: the 1 s clock
    seen = await first_seen(db, "SELECT event_id FROM events", ("e2",))
    assert seen is not None and 0.5 + COMMIT_DELAY - 0.1 <= time.monotonic() - t0 < 0.5 + 1.0 + 0.2, seen
    assert visible(db, "SELECT content FROM messages") == [("hello robot",)]
    assert await commits_now(store) == 2
    await store.close()


async def test_slow_commits_shorten_the_wait_so_the_bound_holds(tmp_path, monkeypatch):
    """A card that takes 0.3 s to sync: 0.8 s of waiting plus the commit would pass 1 s."""
    store = await open_store("internal", internal_dir=tmp_path)
    db = tmp_path / "ticos.db"
    real = store._write

    async def slow(events, ops):
        await asyncio.sleep(0.3)
        return await real(events, ops)

    monkeypatch.setattr(store, "_write", slow)
    store.record_call(call_id="warm", name="motion", arguments="{}")
    await store.flush()  # one slow commit: the writer now knows
    t0 = time.monotonic()
    store.record_call(call_id="c1", name="motion", arguments="{}")
    seen = None
    while time.monotonic() - t0 < 3:
        if ("c1",) in visible(db, "SELECT call_id FROM function_calls"):
            seen = time.monotonic() - t0
            break
        await asyncio.sleep(0.01)
    assert seen is not None and 0.3 < seen < 0.95, seen
    await store.close()


async def test_a_turn_commits_together_soon_after_it_ends(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    db = tmp_path / "ticos.db"
    await asyncio.sleep(0.2)
    before = store.health()["commits"]
    store.log_event("input_audio_buffer.speech_started", event_id="e1", item_id="u1")
    mid = store.add_message(role="user", content="", item_id="u1", status="pending")
    store.log_event("conversation.item.created", event_id="e2", item_id="u1")
    await asyncio.sleep(0.05)
    store.update_message(mid, content="wave at me", status="completed")
    store.log_event("conversation.item.input_audio_transcription.completed", event_id="e3", item_id="u1")
    store.record_call(call_id="c1", name="motion", arguments='{"motion_tag":"wave"}', response_id="r1")
    await asyncio.sleep(0.05)
    store.log_event("response.done", event_id="e4", response_id="r1")
    store.add_message(role="assistant", content="waving", item_id="a1", response_id="r1")
    ended = time.monotonic()
    await asyncio.sleep(TURN_SETTLE / 2)
    store.set_call_outcome("c1", "completed", {"ok": True})  # the call's outcome, just after the turn
    store.log_event("rate_limits.updated", event_id="e5")
    snapshots = []
    while time.monotonic() - ended < 2:
        events = visible(db, "SELECT event_id FROM events ORDER BY id")
        messages = visible(db, "SELECT item_id, content FROM messages ORDER BY rowid")
        calls = visible(db, "SELECT call_id, status FROM function_calls")
        snapshots.append((time.monotonic() - ended, events, messages, calls))
        if events:
            break
        await asyncio.sleep(0.005)
    at, events, messages, calls = snapshots[-1]
    # all or nothing: the first time any row of the turn is visible, every row is
    assert [e[0] for e in events] == ["e1", "e2", "e3", "e4", "e5"]
    assert messages == [("u1", "wave at me"), ("a1", "waving")]
    assert calls == [("c1", "completed")]
    assert at < COMMIT_DELAY - 0.2, f"the turn's end did not bring its commit forward ({at:.2f} s)"
    assert await commits_now(store) == before + 1
    await store.close()


async def late_in_a_stream(add, stored, seconds: float, step: float, bound: float) -> list[str]:
    """Call ``add(key)`` every ``step`` seconds for ``seconds``; the keys that another process
    could not yet see (``stored()``) more than ``bound`` seconds after they were added."""
    sent: list[tuple[float, str]] = []
    late: list[str] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        key = f"k{len(sent)}"
        add(key)
        sent.append((time.monotonic(), key))
        await asyncio.sleep(step)
        now, there = time.monotonic(), stored()
        late += [k for at, k in sent if now - at > bound and k not in there]
    return late


async def test_rows_that_keep_coming_are_committed_by_the_delay_not_held_longer(tmp_path):
    """A stream with no pause (a long response): commits every COMMIT_DELAY, not at its end;
    the event-log lines among the records ride with them."""
    store = await open_store("internal", internal_dir=tmp_path)
    db = tmp_path / "ticos.db"

    def add(key: str) -> None:
        store.record_call(call_id=key, name="motion", arguments="{}")
        store.log_event("response.output_item.added", event_id=key)

    def stored() -> set[str]:
        return ({r[0] for r in visible(db, "SELECT call_id FROM function_calls")}
                & {r[0] for r in visible(db, "SELECT event_id FROM events")})

    late = await late_in_a_stream(add, stored, 2.5, 0.03, 1.0)
    assert not late, late[:5]
    commits = store.health()["commits"]
    assert 2 <= commits <= 4, commits  # ~every 0.8 s, not every 30 ms
    await store.close()


async def test_event_log_lines_that_keep_coming_wait_at_most_their_delay(tmp_path):
    """Lines only (audio that never becomes words): commits every EVENT_LOG_DELAY."""
    store = await open_store("internal", internal_dir=tmp_path)
    db = tmp_path / "ticos.db"
    late = await late_in_a_stream(lambda key: store.log_event("input_audio_buffer.committed", event_id=key),
                                  lambda: {r[0] for r in visible(db, "SELECT event_id FROM events")},
                                  4.5, 0.05, EVENT_LOG_DELAY + 0.2)
    assert not late, late[:5]
    assert 1 <= store.health()["commits"] <= 3
    await store.close()


async def test_idle_store_writes_nothing(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path)
    for i in range(20):
        store.log_event("response.done", event_id=f"e{i}")
    await store.flush()
    files = sorted(p for p in tmp_path.iterdir() if p.is_file())
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in files}
    commits = store.health()["commits"]
    await asyncio.sleep(1.5)
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in files} == before
    assert store.health()["commits"] == commits
    await store.close()


async def test_new_databases_get_small_pages_and_existing_ones_keep_theirs(tmp_path):
    from storage_helpers import make_sdk_v1

    store = await open_store("internal", internal_dir=tmp_path / "new")
    store.add_message(role="user", content="hi", item_id="u1")
    await store.close()
    assert visible(tmp_path / "new" / "ticos.db", "PRAGMA page_size") == [(512,)]
    (tmp_path / "old").mkdir()
    make_sdk_v1(tmp_path / "old" / "ticos.db")
    store = await open_store("internal", internal_dir=tmp_path / "old")
    async with store._db.execute("PRAGMA wal_autocheckpoint") as cursor:
        pages = (await cursor.fetchone())[0]
    await store.close()
    assert visible(tmp_path / "old" / "ticos.db", "PRAGMA page_size") == [(4096,)]
    assert pages * 4096 == 4 << 20  # about 4 MiB of WAL between checkpoints, whatever the page size


# --- the state callback ------------------------------------------------------------------------

async def test_a_store_that_opens_degraded_says_so_once(tmp_path, monkeypatch):
    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD", raising=False)
    calls: list[tuple[str, str | None]] = []
    store = await open_store("external", tf_root=tmp_path / "media" / "CARD", internal_dir=tmp_path / "in",
                             on_state=lambda state, reason: calls.append((state, reason)))
    await asyncio.sleep(0.05)
    assert calls == [("degraded", store.health()["reason"])] and "not mounted" in calls[0][1]
    store.add_message(role="user", content="kept", item_id="u1")
    await store.flush()
    await store.close()
    assert len(calls) == 1


async def test_on_state_follows_a_card_pulled_and_put_back(tmp_path):
    from storage_helpers import loop_card

    seen: list[tuple[str, str | None]] = []
    loop_thread = []

    def on_state(state: str, reason: str | None) -> None:
        import threading

        loop_thread.append(threading.current_thread() is threading.main_thread())
        seen.append((state, reason))

    with loop_card(tmp_path) as card:
        store = await open_store("external", tf_root=card.root, internal_dir=tmp_path / "in", probe_interval=0.1)
        store.on_state = on_state
        store.add_message(role="user", content="on the card", item_id="u1")
        await store.flush()
        card.pull()
        store.add_message(role="user", content="in the fallback", item_id="u2")
        await store.flush()
        await asyncio.sleep(0.05)
        assert seen and seen[-1][0] == "degraded" and "no longer mounted" in seen[-1][1]
        await asyncio.to_thread(card.put_back)
        deadline = time.monotonic() + 15
        while seen[-1][0] != "ok" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await store.close()
    assert seen[-1] == ("ok", None)
    assert [s for s, _ in seen] == ["degraded", "ok"]  # a state is told once, not per batch
    assert all(loop_thread)


async def test_a_failing_callback_is_logged_and_changes_nothing(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD", raising=False)

    def broken(state, reason):
        raise RuntimeError("integrator bug")

    store = await open_store("external", tf_root=tmp_path / "nope", internal_dir=tmp_path / "in", on_state=broken)
    await asyncio.sleep(0.05)
    store.add_message(role="user", content="still kept", item_id="u1")
    await store.flush()
    await store.close()
    assert any("on_state callback failed" in r.getMessage() for r in caplog.records)


async def test_the_warning_about_a_plain_folder_names_the_escape_hatch(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("TICOS_ALLOW_UNMOUNTED_CARD", raising=False)
    root = tmp_path / "card"
    root.mkdir()
    store = await open_store("external", tf_root=root, internal_dir=tmp_path / "in")
    await store.close()
    (line,) = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert f"TF card not mounted at {root}" in line and "TICOS_ALLOW_UNMOUNTED_CARD=1" in line
    assert store.health()["reason"] == f"TF card not mounted at {root}"


# --- the drills: a real agent process ---------------------------------------------------------

TURN = 2.0  # seconds: one turn every 2 s, as a voice agent paces it (see bench/sd_writes.py)


def turn_frames(n: int, call: bool) -> list[tuple[float, dict]]:
    """(offset, frame): speech starts; at 0.6 s the user's item and the response; deltas; the
    user's transcription at 1.0 s; at 1.56 s the call (if any) and ``response.done``."""
    u, a, r = f"item_U{n}", f"item_A{n}", f"resp_{n}"
    frames: list[tuple[float, dict]] = [(0.0, speech_started(u)),
                                        (0.6, ev("input_audio_buffer.speech_stopped", item_id=u)),
                                        (0.6, user_item(u))]
    reply = assistant_turn(r, a, [f"word{i} " for i in range(8)])
    head, deltas, tail = reply[:2], reply[2:-3], reply[-3:]
    frames += [(0.62, f) for f in head]
    frames += [(0.65 + 0.85 * i / len(deltas), f) for i, f in enumerate(deltas)]
    frames.append((1.0, transcription(u, f"user turn {n}")))
    if call:
        tail.insert(-1, function_call_done(r, f"call_{n}", "set_light", {"on": True}))
    frames += [(1.56 + 0.002 * i, f) for i, f in enumerate(tail)]
    return sorted(frames, key=lambda p: p[0])


class AgentProcess:
    """``ticos-agent run`` in its own process, storage in a folder."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.dir = tmp / "internal"
        config = tmp / "robot.toml"
        config.write_text(f'[server]\nport = {self.port}\n[storage]\ndir = "{self.dir}"\n[audio]\nenabled = false\n')
        self.proc = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", "run", "--config", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "HOME": str(tmp)})

    @property
    def db(self) -> Path:
        return self.dir / "ticos.db"

    async def ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{self.port}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("the agent did not start")
            await asyncio.sleep(0.05)

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def stored(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(db)  # recovers the WAL a killed process left, as the next start would
    try:
        return {
            "events": {r[0]: r for r in conn.execute("SELECT event_id, type FROM events")},
            "messages": {r[0]: r for r in conn.execute("SELECT item_id, role, content, status FROM messages")},
            "calls": {r[0]: r for r in conn.execute("SELECT call_id, status FROM function_calls")},
            "counts": {"messages": conn.execute("SELECT COUNT(*), COUNT(DISTINCT item_id) FROM messages").fetchone(),
                       "events": conn.execute(  # the robot's own state events have no event_id
                           "SELECT COUNT(event_id), COUNT(DISTINCT event_id) FROM events").fetchone()},
        }
    finally:
        conn.close()


def due(sent: list[tuple[float, dict]], before: float, lines_before: float | None = None) -> dict[str, set]:
    """What must be stored of the frames sent before ``before`` (the agent logs every event but
    the deltas; a user item makes a row, its transcription fills it; ``response.done`` stores
    the assistant's message; a function call is recorded). Event-log lines, and a user's row
    while it has no words, need only be there when sent before ``lines_before`` (default:
    ``before``)."""
    lines_before = before if lines_before is None else lines_before
    out: dict[str, set] = {"events": set(), "messages": set(), "transcripts": set(), "calls": set()}
    for at, frame in sent:
        kind = frame["type"]
        if at < lines_before:
            if not kind.endswith(".delta"):
                out["events"].add(frame["event_id"])
            if kind == "conversation.item.created":
                out["messages"].add(frame["item"]["id"])
        if at >= before:
            continue
        if kind == "conversation.item.input_audio_transcription.completed":
            out["transcripts"].add((frame["item_id"], frame["transcript"]))
            out["messages"].add(frame["item_id"])
        elif kind == "response.done":
            out["messages"].add(f"item_A{frame['response']['id'].split('_')[1]}")
        elif kind == "response.output_item.done" and frame["item"]["type"] == "function_call":
            out["calls"].add(frame["item"]["call_id"])
    return out


async def converse(agent: AgentProcess, turns: int, stop_at: float | None = None
                   ) -> tuple[list[tuple[float, dict]], float]:
    """Send paced turns; ``stop_at`` seconds after the start, SIGKILL the agent and return the
    frames sent (with the wall-clock time each was sent) and the moment of the kill."""
    sent: list[tuple[float, dict]] = []
    async with aiohttp.ClientSession() as session:
        await agent.ready(session)
        ws = await session.ws_connect(f"http://127.0.0.1:{agent.port}/realtime")
        await ws.send_str(json.dumps(session_created("sess_drill")))
        await asyncio.sleep(0.3)
        start = time.monotonic()
        plan = [(n * TURN + off, f) for n in range(turns) for off, f in turn_frames(n, call=n % 2 == 0)]
        for offset, frame in sorted(plan, key=lambda p: p[0]):
            if stop_at is not None and offset >= stop_at:
                break
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send_str(json.dumps(frame))
            sent.append((time.time(), frame))
        if stop_at is not None:
            await asyncio.sleep(max(0.0, start + stop_at - time.monotonic()))
            killed = time.time()
            agent.proc.send_signal(signal.SIGKILL)
        else:
            await asyncio.sleep(0.3)  # let the agent read what was sent
            killed = time.time()
            agent.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(agent.proc.wait, 30)
        await ws.close()
    return sent, killed


async def restart(db: Path) -> None:
    """Open and close the store as the next start would: it puts back what the pending file
    kept of the records that were waiting for their commit."""
    from ticos_agent.storage import open_store

    store = await open_store("internal", internal_dir=db.parent)
    await store.close()


async def check(db: Path, sent: list[tuple[float, dict]], killed: float) -> dict[str, dict]:
    """Nothing lost that arrived more than 1 s before the kill, event-log lines included."""
    await restart(db)
    got = stored(db)
    want = due(sent, killed - 1.0)
    assert want["events"] - set(got["events"]) == set()
    assert want["messages"] - set(got["messages"]) == set()
    assert {(i, t) for i, t in want["transcripts"] if got["messages"].get(i, (0, 0, None))[2] != t} == set()
    assert want["calls"] - set(got["calls"]) == set()
    for kind, (rows, distinct) in got["counts"].items():
        assert rows == distinct, f"{kind} stored twice"
    return got


async def test_sigkill_mid_conversation_loses_nothing_older_than_one_second(tmp_path):
    agent = AgentProcess(tmp_path)
    try:
        # killed 0.6 s into the third turn: its speech_started is still waiting for its commit
        sent, killed = await converse(agent, turns=3, stop_at=2 * TURN + 0.6)
    finally:
        agent.end()
    got = await check(agent.db, sent, killed)
    assert len(due(sent, killed - 1.0)["messages"]) == 4  # two whole turns were due
    last = sent[-1][1]
    assert last["type"] == "input_audio_buffer.speech_started" and killed - sent[-1][0] < 1.0
    assert last["event_id"] not in got["events"], "the drill killed nothing in flight: it proves nothing"


async def test_sigkill_during_a_response_keeps_what_is_older_than_one_second(tmp_path):
    agent = AgentProcess(tmp_path)
    try:
        # killed 1.3 s into the second turn: its user's words (0.3 s before) may be lost; its
        # first lines and its user's item (no words yet, 1-1.3 s before) wait for the turn's
        # commit on the event log's clock: the pending file keeps them
        sent, killed = await converse(agent, turns=2, stop_at=TURN + 1.3)
    finally:
        agent.end()
    left = stored(agent.db)  # as the killed process left the database
    got = await check(agent.db, sent, killed)
    assert set(got["events"]) - set(left["events"]), "nothing was waiting on the event log's clock: no proof"
    assert {"item_U0", "item_A0"} <= set(got["messages"])
    assert got["messages"]["item_U0"][2] == "user turn 0"


async def test_a_clean_stop_flushes_everything(tmp_path):
    agent = AgentProcess(tmp_path)
    try:
        sent, stopped = await converse(agent, turns=2)
    finally:
        agent.end()
    assert agent.proc.returncode == 0
    got = await check(agent.db, sent, stopped + EVENT_LOG_DELAY + 1)  # everything sent
    assert len(got["messages"]) == 4 and len(got["calls"]) == 1


async def test_a_turn_sent_through_the_agent_lands_in_one_transaction(tmp_path):
    """End to end: a whole turn (user speech and transcript, the reply, a call) over the
    socket; another process reading the database sees none of it or all of it."""
    from ticos_agent import Agent

    agent = Agent({"server": {"host": "127.0.0.1", "port": 0}, "storage": {"dir": str(tmp_path / "in")},
                   "audio": {"enabled": False}})
    await agent.start()
    db = tmp_path / "in" / "ticos.db"
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{agent.port}/realtime")
            await ws.send_str(json.dumps(session_created("sess_t")))
            await asyncio.sleep(1.0)  # its own commit, out of the way
            before = agent.health()["storage"]["commits"]
            frames = [f for _, f in turn_frames(7, call=True)]
            for frame in frames:
                await ws.send_str(json.dumps(frame))
            sent = time.monotonic()
            want = {f["event_id"] for f in frames if not f["type"].endswith(".delta")}
            seen: set[str] = set()
            while time.monotonic() - sent < 3 and not seen:
                seen = {r[0] for r in visible(db, "SELECT event_id FROM events")} & want
                if not seen:
                    await asyncio.sleep(0.005)
            at = time.monotonic() - sent
            messages = visible(db, "SELECT item_id, role, content FROM messages ORDER BY rowid")
            calls = visible(db, "SELECT call_id FROM function_calls")
            await asyncio.sleep(0.1)  # the count moves just after the commit is visible
            commits = agent.health()["storage"]["commits"] - before
            await ws.close()
    finally:
        await agent.stop()
    assert seen == want, sorted(want - seen)  # the first time any of it shows, all of it does
    assert messages == [("item_U7", "user", "user turn 7"),
                        ("item_A7", "assistant", "".join(f"word{i} " for i in range(8)))]
    assert calls == [("call_7",)]
    assert commits == 1 and at < COMMIT_DELAY, (commits, at)


async def test_a_paced_conversation_costs_about_one_commit_per_message(tmp_path):
    """Through a real agent: at one turn every 2 s the store makes one commit per turn (its
    words and its reply less than the delay apart, its lines riding along), not one per 50 ms."""
    from ticos_agent import Agent

    agent = Agent({"server": {"host": "127.0.0.1", "port": 0}, "storage": {"dir": str(tmp_path / "in")},
                   "audio": {"enabled": False}})
    await agent.start()
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{agent.port}/realtime")
            start = time.monotonic()
            plan = [(n * TURN + off, f) for n in range(3) for off, f in turn_frames(n, call=True)]
            for offset, frame in sorted(plan, key=lambda p: p[0]):
                await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
                await ws.send_str(json.dumps(frame))
            await asyncio.sleep(1.2)
            commits = agent.health()["storage"]["commits"]
            await ws.close()
    finally:
        await agent.stop()
    assert 3 <= commits <= 4, commits  # 1 per turn (the last turn's trailing rows may add one)


async def test_the_event_log_delay_is_the_robot_makers_choice(tmp_path):
    """``[storage] event_log_delay = 0.8`` holds the event log to the conversation's 1 s bound;
    by default a lone line waits up to 2 s for a record to ride with."""
    from ticos_agent import Agent

    async def first_line_after(delay: float | None, where: Path) -> float | None:
        storage: dict[str, object] = {"dir": str(where)}
        if delay is not None:
            storage["event_log_delay"] = delay
        agent = Agent({"server": {"host": "127.0.0.1", "port": 0}, "storage": storage, "audio": {"enabled": False}})
        await agent.start()
        try:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"http://127.0.0.1:{agent.port}/realtime")
                await ws.send_str(json.dumps(session_created("sess_d")))
                await asyncio.sleep(2.5)  # its lines out of the way
                await ws.send_str(json.dumps(speech_started("item_U1")))
                seen = await first_seen(where / "ticos.db", "SELECT type FROM events",
                                        ("input_audio_buffer.speech_started",))
                await ws.close()
        finally:
            await agent.stop()
        return seen

    strict = await first_line_after(0.8, tmp_path / "strict")
    default = await first_line_after(None, tmp_path / "default")
    assert strict is not None and strict < 1.0, strict
    assert default is not None and EVENT_LOG_DELAY - 0.3 < default < EVENT_LOG_DELAY + 0.5, default
