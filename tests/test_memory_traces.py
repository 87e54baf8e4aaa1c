"""Memory rounds, priming and session_config under realistic traces the feature was not written
against (GA spelling, typed turns, echoes, quick reconnects) and under trouble: summarisers that
raise, answer nonsense or hang, an agent stopping mid-round, session_config files that are links,
huge, not objects, or written by two agents at once. A real agent, a real socket on 127.0.0.1,
real files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time

import pytest
from helpers import agent_config, db_rows, wait_for
from traces import assistant_turn, ev, response_done, session_created, transcription, user_item

from ticos_agent import Agent
from ticos_agent.memory.model import MAX_CONTENT
from ticos_agent.memory.session_config import update_file

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def talk(peer, n: int, *, ga: bool = False) -> None:
    await peer.send(user_item(f"item_U{n}", ga=ga), transcription(f"item_U{n}", f"question {n}"),
                    *assistant_turn(f"resp_{n}", f"item_A{n}", ["answer ", f"{n}"], ga=ga))


async def long_terms(agent) -> list[str]:
    await agent.store.flush()
    return [m["content"] for m in await agent.store.memories(limit=100) if m["type"] == "long_term"][::-1]


def typed_turn(n: int, text: str, *, ga: bool) -> list[dict]:
    """A typed user turn (``input_text``) and the answer."""
    return [ev("conversation.item.created", ga, item={"id": f"item_T{n}", "type": "message", "role": "user",
                                                      "status": "completed",
                                                      "content": [{"type": "input_text", "text": text}]}),
            *assistant_turn(f"resp_t{n}", f"item_B{n}", [f"typed answer {n}"], ga=ga)]


# --------------------------------------------------------------------------- GA spelling

async def test_ga_traces_count_rounds_and_are_summarised(tmp_path, connect):
    seen: list[list[tuple]] = []

    def summarise(messages, latest):
        seen.append([(m["role"], m["content"]) for m in messages])
        return f"summary {len(seen)}"

    agent = Agent(agent_config(tmp_path, memory={"every_rounds": 2}))
    agent.set_summariser(summarise)
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1, ga=True)
        await peer.send(*typed_turn(2, "what is my name?", ga=True))
        await wait_for(lambda: seen, timeout=5)
        assert seen[0] == [("user", "question 1"), ("assistant", "answer 1"), ("user", "what is my name?"),
                           ("assistant", "typed answer 2")]
        await wait_for(lambda: agent.memory.generated == 1)
        assert await long_terms(agent) == ["summary 1"]
        # a response.done with no user turn before it (a response the robot asked for) is not a round
        await peer.send(*assistant_turn("resp_x", "item_X", ["just talking"], ga=True))
        await peer.send(*assistant_turn("resp_y", "item_Y", ["still talking"], ga=True))
        await asyncio.sleep(0.2)
        assert agent.memory.rounds == 0 and len(seen) == 1


async def test_ga_echo_of_the_priming_item_is_no_round_and_no_message(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, memory={"prime": "system", "every_rounds": 1}))
    agent.set_summariser(lambda messages, latest: "never")
    async with agent:
        await agent.store.remember("fact", "The user's name is Lin.")
        peer = await connect(agent)
        event = await peer.receive_json()
        assert event["type"] == "conversation.item.create"
        item = event["item"]
        await peer.send(session_created("sess_ga"),
                        ev("conversation.item.added", item={**item, "status": "completed"}),
                        ev("conversation.item.done", item={**item, "status": "completed"}),
                        response_done("resp_1"))
        await peer.no_reply(0.3)  # the session the item went to: not primed twice
        await agent.store.flush()
        assert await agent.store.count_messages() == 0
        assert agent.memory.rounds == 0 and agent.memory.generated == 0


# --------------------------------------------------------------------------- priming

async def test_quick_reconnects_prime_each_socket_once_and_nothing_piles_up(tmp_path, connect, caplog):
    agent = Agent(agent_config(tmp_path, memory={"prime": "user"}))
    with caplog.at_level(logging.WARNING):
        async with agent:
            await agent.store.remember("fact", "The user's name is Lin.")
            primer = next(routes["session.created"].__self__ for _, routes in agent.intake._consumers
                          if type(getattr(routes.get("session.created"), "__self__", None)).__name__ == "Primer")
            received = 0
            for n in range(40):
                peer = await connect(agent)
                if n % 2:  # half of them read what they get, the other half leave at once
                    event = await peer.receive_json()
                    assert event["type"] == "conversation.item.create" and "Lin" in json.dumps(event)
                    received += 1
                    await peer.send(session_created(f"sess_{n}"))
                    await peer.no_reply(0.05)
                await peer.close()
            await wait_for(lambda: not primer._sessions, timeout=3)  # every closed socket forgotten
            assert received == 20 and primer.sent >= 20
            peer = await connect(agent)
            assert (await peer.receive_json())["type"] == "conversation.item.create"
            await peer.send(session_created("sess_a"))
            await peer.no_reply(0.2)
            await peer.send(session_created("sess_b"))  # a new upstream session: primed again, once
            assert (await peer.receive_json())["type"] == "conversation.item.create"
            await peer.send(session_created("sess_b"), session_created("sess_b"))
            await peer.no_reply(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --------------------------------------------------------------------------- generation trouble

@pytest.mark.parametrize("answer", [42, None, b"bytes", {"text": "x"}, ["a"], "   ", ValueError("boom")])
async def test_a_summariser_that_fails_or_answers_nonsense_loses_nothing(tmp_path, connect, answer):
    def summarise(messages, latest):
        if isinstance(answer, Exception):
            raise answer
        return answer

    agent = Agent(agent_config(tmp_path, memory={"every_rounds": 1, "retries": 1, "retry_delay": 0.01}))
    agent.set_summariser(summarise)
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        await wait_for(lambda: agent.memory.failures == 1, timeout=5)
        assert await long_terms(agent) == []
        agent.set_summariser(lambda messages, latest: " | ".join(m["content"] for m in messages))
        memory = await agent.generate_memory()
        assert memory is not None and memory.content == "question 1 | answer 1"  # taken the next time


async def test_a_gigantic_summary_is_cut_to_the_limit(tmp_path, connect):
    agent = Agent(agent_config(tmp_path, memory={"every_rounds": 1}))
    agent.set_summariser(lambda messages, latest: "Lin " * 2_000_000)
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        await wait_for(lambda: agent.memory.generated == 1, timeout=10)
        [text] = await long_terms(agent)
        assert 0 < len(text) <= MAX_CONTENT and text.startswith("Lin Lin")
        await agent.store.flush()
        assert (await agent.store.unsummarised(10))[0] == []


async def test_a_hanging_summariser_never_holds_up_the_stop(tmp_path, connect):
    """A summariser that never returns (a sync one stuck in I/O, an async one awaiting forever):
    the agent stops within seconds, and the stuck thread cannot keep the process alive."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    def stuck(messages, latest):
        threads.append(threading.current_thread())
        release.wait(60)
        return "too late"

    async def astuck(messages, latest):
        await asyncio.Event().wait()

    try:
        for fn in (stuck, astuck):
            agent = Agent(agent_config(tmp_path / fn.__name__, memory={"every_rounds": 1, "timeout": 30.0}))
            agent.set_summariser(fn)
            await agent.start()
            peer = await connect(agent)
            await talk(peer, 1)
            await wait_for(lambda a=agent: a.memory._task is not None and not a.memory._task.done())
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await asyncio.wait_for(agent.stop(), 5)
            assert time.monotonic() - started < 3
            # nothing was marked: the messages wait for the next round
            path = tmp_path / fn.__name__ / "internal" / "ticos.db"
            assert db_rows(path, "SELECT COUNT(*) FROM memories") == [(0,)]
        assert threads and all(t.daemon for t in threads), threads  # the process can still exit
    finally:
        release.set()


async def test_a_round_running_while_the_agent_stops_keeps_its_memory_and_mark(tmp_path, connect):
    """The summary came back and is being stored when the agent is told to stop: the memory is
    kept and the mark moves with it; a restart summarises only what came after."""
    cfg = agent_config(tmp_path, memory={"every_rounds": 1})
    agent = Agent(cfg)
    agent.set_summariser(lambda messages, latest: f"summary of {len(messages)}")
    await agent.start()
    gate = asyncio.Event()
    store = agent.store
    real = store.remember

    async def slow_remember(*a, **kw):
        await gate.wait()
        return await real(*a, **kw)

    store.remember = slow_remember  # the real write, held while the stop begins
    peer = await connect(agent)
    await talk(peer, 1)
    await wait_for(lambda: agent.memory._task is not None and not agent.memory._task.done())
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(agent.stop())
    await asyncio.sleep(0.2)
    gate.set()
    await asyncio.wait_for(stopping, 5)
    path = tmp_path / "internal" / "ticos.db"
    assert db_rows(path, "SELECT type, content FROM memories") == [("long_term", "summary of 2")]
    seen: list[int] = []
    again = Agent(cfg)
    again.set_summariser(lambda messages, latest: seen.append(len(messages)) or "summary again")
    async with again:
        assert await again.generate_memory() is None  # the two messages were marked with their memory
    assert seen == []


# --------------------------------------------------------------------------- session_config files

async def test_session_config_that_is_a_link_elsewhere(tmp_path, connect):
    ticos = tmp_path / "ticos"
    ticos.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"keep": "me"}))
    os.symlink(elsewhere, ticos / "session_config")
    agent = Agent(agent_config(tmp_path, memory={"session_config_path": str(ticos / "session_config")}))
    async with agent:
        peer = await connect(agent)
        await talk(peer, 1)
        await wait_for(lambda: agent.conversations.stored == 2)
    path = ticos / "session_config"
    doc = json.loads(path.read_text())
    assert doc["model"]["messages"]["nobody"][-1] == {"role": "assistant", "content": "answer 1"}
    assert doc["keep"] == "me"
    assert not path.is_symlink() and os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(elsewhere.read_text()) == {"keep": "me"}  # a link is never written through


def test_session_config_folder_that_cannot_be_written(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        update_file(blocker / "ticos" / "session_config", [{"role": "assistant", "content": "hi"}])
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        try:
            with pytest.raises(PermissionError):
                update_file(folder / "session_config", [])
            assert os.listdir(folder) == []  # no temporary file left behind
        finally:
            folder.chmod(0o700)


async def test_an_agent_whose_session_config_cannot_be_written_still_runs(tmp_path, connect, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    agent = Agent(agent_config(tmp_path, memory={"session_config_path": str(blocker / "session_config")}))
    with caplog.at_level(logging.WARNING):
        async with agent:
            peer = await connect(agent)
            await talk(peer, 1)
            await wait_for(lambda: agent.conversations.stored == 2)
            assert (await agent.remember("Lin likes kites.")).id >= 1
    assert "session_config: could not update" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b'"text"', b"null", b"\xff\xfe garbage", b"{" * 100_000])
def test_session_config_not_an_object_is_kept_aside(tmp_path, content):
    path = tmp_path / "session_config"
    path.write_bytes(content)
    update_file(path, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert json.loads(path.read_text()) == {"model": {"messages": {"nobody": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}}}
    assert (tmp_path / "session_config.bad").read_bytes() == content


def test_a_huge_session_config_is_not_read_whole_nor_rewritten(tmp_path):
    path = tmp_path / "session_config"
    path.write_text(json.dumps({"model": {"instructions": "x" * (64 << 20)}}))
    before = path.stat()
    with pytest.raises(OSError, match="larger than 8 MiB: left alone"):
        update_file(path, [{"role": "assistant", "content": "hello"}])
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert [p.name for p in tmp_path.iterdir()] == ["session_config"]


def test_two_agents_writing_at_once_never_leave_half_a_file(tmp_path):
    path = tmp_path / "session_config"
    path.write_text(json.dumps({"voice": "alloy", "model": {"messages": {"lin": []}}}))
    stop = threading.Event()
    bad: list[str] = []

    def reader():
        while not stop.is_set():
            try:
                doc = json.loads(path.read_text())
            except FileNotFoundError:
                bad.append("missing")
                continue
            except ValueError as exc:
                bad.append(str(exc))
                continue
            if doc.get("voice") != "alloy" or "lin" not in doc["model"]["messages"]:
                bad.append(repr(doc)[:80])

    def writer(who: str):
        for n in range(60):
            update_file(path, [{"role": "assistant", "content": f"{who} {n} " + "x" * 5000}])

    threads = [threading.Thread(target=reader)] + [threading.Thread(target=writer, args=(w,)) for w in "ab"]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert bad == []
    assert [p.name for p in tmp_path.iterdir()] == ["session_config"]  # no temporary file left


def test_a_ticos_client_config_value_with_unicode_digits_is_ignored(tmp_path):
    from ticos_agent.memory.config import ticos_client_memory

    (tmp_path / "session_config").write_text(json.dumps({"model": {"history_conversation_length": "\u00b2"}}))
    assert ticos_client_memory(tmp_path) == {}
    (tmp_path / "session_config").write_text(json.dumps({"model": {"history_conversation_length": " 8 "}}))
    assert ticos_client_memory(tmp_path) == {"history_rounds": 8}
