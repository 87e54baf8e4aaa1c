"""The Store as a MemoryStore: remember/recall/forget, kinds and validation, hostile queries,
the summarisation mark, the search index (batches, background build, no FTS5), the card's
fallback and merge. Real SQLite files in tmp_path, real open_store."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from pathlib import Path

import pytest
from storage_helpers import V1_MESSAGES, make_sdk_v1

from ticos_agent.errors import BadMemory, StorageError, TicosError
from ticos_agent.memory.model import KINDS, MAX_CONTENT, Memory, MemoryFields, MemoryStore
from ticos_agent.storage import fts, memories, open_store
from ticos_agent.storage.finder import MEMORIES, MESSAGES, Finder, Window
from ticos_agent.storage.reader import open_readonly
from ticos_agent.storage.schema import SCHEMA_VERSION
from ticos_agent.storage.store import memory_store


def rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def store(tmp_path):
    s = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    yield s
    await s.close()


def talk(store, *pairs: tuple[str, str], status: str = "completed") -> list[str]:
    return [store.add_message(role=role, content=text, item_id=None, session_id="s1", status=status)
            for role, text in pairs]


# ----------------------------------------------------------------- remember and its kinds

async def test_the_store_is_a_memory_store_and_remembers_each_kind(store, tmp_path):
    for name in [n for n in vars(MemoryStore) if not n.startswith("_")]:  # every method, same parameters
        want = inspect.signature(getattr(MemoryStore, name)).parameters
        have = inspect.signature(getattr(store, name)).parameters
        assert [p for p in want if p != "self"] == list(have)[:len(want) - 1], name
    keywords = [p.name for p in inspect.signature(memories.remember).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert keywords == list(MemoryFields.__annotations__)  # remember's fields, as the store takes them
    assert memory_store(store) is store
    fact = await store.remember("fact", "The user's name is Lin.", subject="user", key="name", value="Lin",
                                confidence=0.9, source="1700000000")
    episode = await store.remember("episode", "Lin showed the robot a dinosaur.", title="Dinosaur day",
                                   importance=0.7)
    summary = await store.remember("long_term", "Lin likes dinosaurs and trains.", user_id="lin")
    assert isinstance(fact, Memory) and fact.id > 0 and episode.id > fact.id and summary.id > episode.id
    assert (fact.kind, fact.subject, fact.key, fact.value, fact.confidence, fact.source) == (
        "fact", "user", "name", "Lin", 0.9, "1700000000")
    assert (episode.title, episode.importance, episode.confidence) == ("Dinosaur day", 0.7, None)
    assert summary.user_id == "lin" and len(summary.datetime) == 19
    # committed when remember returns: another connection sees every field
    got = rows(tmp_path / "ticos.db", "SELECT type, content, subject, key, value, confidence, title, importance "
                                      "FROM memories ORDER BY id")
    assert got == [("fact", "The user's name is Lin.", "user", "name", "Lin", 0.9, None, None),
                   ("episode", "Lin showed the robot a dinosaur.", None, None, None, None, "Dinosaur day", 0.7),
                   ("long_term", "Lin likes dinosaurs and trains.", None, None, None, None, None, None)]
    # ticos-client's columns read as before
    assert rows(tmp_path / "ticos.db", "SELECT id, type, content, user_id, datetime FROM memories")[0][:4] == (
        fact.id, "fact", "The user's name is Lin.", "nobody")
    assert await store.latest_memory() == summary
    assert await store.latest_memory("episode") == episode
    assert await store.latest_memory("fact") == fact
    assert [m.id for m in await store.facts()] == [fact.id]
    again = await store.remember("fact", "The user's name is Lin.")
    assert again == fact  # the identical memory is not stored twice
    assert rows(tmp_path / "ticos.db", "SELECT COUNT(*) FROM memories") == [(3,)]
    newer = await store.remember("fact", "Lin is seven.", subject="user")
    assert [m.id for m in await store.facts()] == [newer.id, fact.id]
    assert [m.id for m in await store.facts(limit=1)] == [newer.id]
    assert await store.memories() and (await store.memories())[0]["title"] is None


@pytest.mark.parametrize("args, kwargs, field", [
    (("note", "x"), {}, "kind"),
    (("Fact", "x"), {}, "kind"),
    (("fact", ""), {}, "content"),
    (("fact", "   \n"), {}, "content"),
    (("fact", None), {}, "content"),
    (("fact", "x" * (MAX_CONTENT + 1)), {}, "content"),
    (("fact", "x"), {"confidence": 1.5}, "confidence"),
    (("fact", "x"), {"confidence": -0.1}, "confidence"),
    (("fact", "x"), {"confidence": float("nan")}, "confidence"),
    (("fact", "x"), {"confidence": True}, "confidence"),
    (("episode", "x"), {"importance": "high"}, "importance"),
    (("fact", "x"), {"subject": 3}, "subject"),
])
async def test_remember_refuses_bad_values_with_a_value_error_naming_the_field(store, tmp_path, args, kwargs, field):
    with pytest.raises(BadMemory) as caught:
        await store.remember(*args, **kwargs)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TicosError)
    assert caught.value.field == field
    await store.flush()
    assert rows(tmp_path / "ticos.db", "SELECT COUNT(*) FROM memories") == [(0,)]
    ok = await store.remember("fact", "x" * MAX_CONTENT, confidence=1, importance=0)
    assert ok.confidence == 1.0 and ok.importance == 0.0 and set(KINDS) == {"long_term", "fact", "episode"}


# ----------------------------------------------------------------- recall

async def test_recall_ranks_memories_before_messages_and_filters_messages(store):
    talk(store, ("user", "My dog is called Biscuit."), ("assistant", "Biscuit is a lovely name for a dog!"),
         ("system", "Biscuit system prompt"), ("user", "What is the weather?"))
    mem = await store.remember("fact", "The user's dog is called Biscuit.", subject="user")
    await store.remember("fact", "The user likes rain.")
    hits = await store.recall("biscuit")
    assert [h.source for h in hits] == ["memory", "message", "message"]
    assert hits[0].id == str(mem.id) and hits[0].kind == "fact"
    assert {h.role for h in hits[1:]} == {"user", "assistant"}  # no system message
    assert all(h.rank <= hits[i + 1].rank for i, h in enumerate(hits[:-1]))
    assert [h.source for h in await store.recall("biscuit", messages=False)] == ["memory"]
    assert len(await store.recall("biscuit", limit=1)) == 1
    # every word first; when that finds too few, any word
    assert (await store.recall("dog biscuit"))[0].id == str(mem.id)
    assert any(h.text == "What is the weather?" for h in await store.recall("weather rain", limit=5))
    assert await store.recall("zebra") == []
    assert hits[0].as_dict()["source"] == "memory"


@pytest.mark.parametrize("query", ['"name" OR (x', "*", "name*", "NEAR(name dog)", "content:dog", "name AND",
                                   "'; DROP TABLE memories; --", "dog^", '"""', "-dog", "a:b:c", "(((", "\x00dog"])
async def test_hostile_queries_are_words_never_syntax(store, tmp_path, query):
    await store.remember("fact", "The user's name is Lin and the dog's name is Rex.")
    talk(store, ("user", "name dog content"))
    await store.flush()
    try:
        hits = await store.recall(query)
    except BadMemory as exc:  # only a query without any word
        assert exc.field == "query" and not any(ch.isalnum() for ch in query)
    else:
        if any(w in query.lower() for w in ("name", "dog")):  # its words are searched, as words
            assert hits and hits[0].source == "memory", (query, hits)
    assert rows(tmp_path / "ticos.db", "SELECT COUNT(*) FROM memories") == [(1,)]


@pytest.mark.parametrize("query", ["", "   ", "?!", "*", "()", '"'])
async def test_a_query_without_words_is_a_clear_error(store, query):
    with pytest.raises(BadMemory, match="no word"):
        await store.recall(query)
    with pytest.raises(BadMemory):
        await store.forget(query=query)


async def test_recall_sees_messages_just_stored_and_indexes_them_in_batches(store, tmp_path):
    talk(store, ("user", "I planted tomatoes today."))
    hits = await store.recall("tomatoes")  # a search first brings the index up to date
    assert [h.text for h in hits] == ["I planted tomatoes today."]
    mark = rows(tmp_path / "ticos.db", fts.SQL_GET_MARK)[0][0]
    assert mark == rows(tmp_path / "ticos.db", "SELECT MAX(rowid) FROM messages")[0][0]
    # without a search, a few messages are not indexed per commit (the SD budget) ...
    talk(store, ("user", "The cucumbers are growing."), ("assistant", "Cucumbers like sun."))
    await store.flush()
    assert rows(tmp_path / "ticos.db", fts.SQL_GET_MARK)[0][0] == mark
    # ... yet searching finds them (the rows above the mark are scanned), as inspect's grep does
    conn = open_readonly(tmp_path / "ticos.db")
    try:
        finder = Finder(conn)
        assert finder.fts_index() is not None
        assert [r["content"] for r in finder.newest(MESSAGES, Window(grep="cucumbers"), 10)] == [
            "Cucumbers like sun.", "The cucumbers are growing."]
        assert [r["content"] for r in finder.newest(MESSAGES, Window(grep="tomatoes"), 10)] == [
            "I planted tomatoes today."]
    finally:
        conn.close()
    store._fts_pending = 10_000  # as after INDEX_BATCH messages: the writer indexes them
    store._commit_now()
    await until(lambda: store._fts_pending == 0, what="a batch indexed")
    assert rows(tmp_path / "ticos.db", fts.SQL_GET_MARK)[0][0] == mark + 2


async def test_an_indexed_message_that_changes_is_searched_by_its_new_text(store):
    mid = talk(store, ("assistant", "The capital is Lyon."))[0]
    assert [h.text for h in await store.recall("lyon")] == ["The capital is Lyon."]
    store.update_message(mid, content="The capital is Paris.")
    await store.flush()
    assert await store.recall("lyon") == []
    assert [h.text for h in await store.recall("paris")] == ["The capital is Paris."]


# ----------------------------------------------------------------- forget

async def test_forget_by_query_ids_and_everything_returns_counts(store):
    a = await store.remember("fact", "The user's sister is called Mei.")
    await store.remember("fact", "Mei likes kites.")
    c = await store.remember("episode", "We flew a kite.", title="Kites")
    d = await store.remember("long_term", "Lin likes trains.")
    assert await store.forget(query="sister mei") == 1  # every word must match
    assert [h.text for h in await store.recall("mei", messages=False)] == ["Mei likes kites."]
    assert await store.recall("sister", messages=False) == []
    assert {h.text for h in await store.recall("kites", messages=False)} == {"We flew a kite.", "Mei likes kites."}
    assert await store.forget(ids=[c.id, 99999, a.id]) == 1
    assert [h.text for h in await store.recall("kites", messages=False)] == ["Mei likes kites."]
    assert await store.forget(query="nothing matches this") == 0
    assert await store.forget(everything=True) == 2
    assert await store.recall("trains", messages=False) == [] and await store.latest_memory() is None
    assert d.id
    with pytest.raises(BadMemory):
        await store.forget()
    with pytest.raises(BadMemory):
        await store.forget(query="x", everything=True)
    with pytest.raises(BadMemory):
        await store.forget(ids=["1"])  # type: ignore[list-item]


async def test_forgotten_text_leaves_the_search_the_tables_and_the_file(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    await store.remember("fact", "The user's secret word is Quixotrel.")
    await store.remember("fact", "The user likes tea.")
    talk(store, ("user", "My secret word is Quixotrel, keep it."), ("assistant", "I will keep Quixotrel."),
         ("user", "Nice weather."))
    store.record_call(call_id="c1", name="remember", arguments='{"content": "secret word Quixotrel"}')
    store.set_call_outcome("c1", "completed", {"stored": "secret word Quixotrel"})
    store.record_call(call_id="c2", name="motion", arguments='{"motion_tag": "wave"}')
    assert len(await store.recall("quixotrel")) == 3
    assert await store.forget(query="quixotrel", messages=True) == 3
    assert await store.recall("quixotrel") == []
    assert [h.text for h in await store.recall("tea weather")] == ["The user likes tea.", "Nice weather."]
    await store.close()
    db = tmp_path / "ticos.db"
    assert rows(db, "SELECT arguments, result FROM function_calls WHERE call_id = 'c1'") == [("{}", None)]
    assert rows(db, "SELECT arguments FROM function_calls WHERE call_id = 'c2'") == [('{"motion_tag": "wave"}',)]
    assert rows(db, "SELECT COUNT(*) FROM messages") == [(1,)]
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("ticos.db"))
    assert b"quixotrel" not in data.lower()  # not in any page: table, index, WAL
    assert b"tea" in data  # what was kept is still there


async def test_the_mark_waits_for_a_transcript_still_to_come(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    try:
        first = talk(store, ("user", "hello"), ("assistant", "hi"))
        waiting = store.add_message(role="user", content="", item_id="u2", session_id="s1", status="pending")
        talk(store, ("assistant", "an answer before the question's transcript"), ("user", "next"))
        await store.flush()
        got, mark = await store.unsummarised(10)
        assert [m["content"] for m in got] == ["hello", "hi"] and mark == int(first[1])  # not past the wait
        await store.mark_summarised(mark)
        store.update_message(waiting, content="what is a dinosaur", status="completed")
        await store.flush()
        got, _ = await store.unsummarised(10)
        assert [m["content"] for m in got] == ["what is a dinosaur", "an answer before the question's transcript",
                                               "next"]
    finally:
        await store.close()


async def test_the_summarisation_mark_survives_a_restart(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    assert await store.unsummarised(10) == ([], None)
    ids = talk(store, ("user", "one"), ("assistant", "two"), ("system", "not this"), ("user", "three"))
    talk(store, ("assistant", "still speaking"), status="pending")
    talk(store, ("user", "transcription lost"), status="transcription_failed")
    await store.flush()
    got, mark = await store.unsummarised(2)
    assert [m["content"] for m in got] == ["one", "two"] and mark == int(ids[1])
    assert set(got[0]) == {"id", "role", "content", "datetime"}
    await store.mark_summarised(mark)
    await store.close()
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    got, mark2 = await store.unsummarised(10)
    assert [m["content"] for m in got] == ["three"] and mark2 == int(ids[3])
    await store.mark_summarised(mark2)
    await store.mark_summarised(mark)  # an older mark never moves it back
    assert await store.unsummarised(10) == ([], None)
    later = talk(store, ("user", "four"))
    await store.flush()
    assert (await store.unsummarised(10))[0][0]["id"] == later[0]
    recent = await store.recent_messages(3)
    assert [m["content"] for m in recent] == ["two", "three", "four"]  # finished user/assistant, oldest first
    with pytest.raises(BadMemory):
        await store.mark_summarised(-1)
    await store.close()


# ----------------------------------------------------------------- old databases, no FTS5, a big backlog

async def test_a_ticos_client_database_is_migrated_indexed_in_the_background_and_searchable(tmp_path):
    db = make_sdk_v1(tmp_path / "ticos.db")
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                     [(str(1714557700 + i), "user", f"old message {i} about cheese{i % 7}", None, "nobody",
                       "2024-05-01 11:00:00") for i in range(6000)])
    conn.commit()
    conn.close()
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    try:
        # the old memories are indexed at open; the 6000 messages chunk by chunk in the writer
        assert [h.text for h in await store.recall("birthday", messages=False)] == ["alice's birthday is in May"]
        new = talk(store, ("user", "A brand new cheese3 message"))
        await store.flush()  # the writer was never blocked by the build
        await until(lambda: store._fts_upto is not None and not store._fts_behind, what="the index caught up")
        assert store._fts_steps >= 3
        hits = await store.recall("cheese3", limit=50)
        assert len(hits) == 50 and all("cheese3" in h.text for h in hits)
        assert [h.text for h in await store.recall("hello robot")][:1] == ["hello robot"]
        # the history ticos-client had is not summarised again; what comes now is
        got, _ = await store.unsummarised(10)
        assert [m["id"] for m in got] == new
        assert rows(db, "SELECT MAX(version) FROM db_version") == [(SCHEMA_VERSION,)]
        assert rows(db, "SELECT id, role, content FROM messages WHERE id = ?", (V1_MESSAGES[0][0],)) == [
            V1_MESSAGES[0][:3]]
    finally:
        await store.close()


async def test_without_fts5_search_scans_and_the_index_comes_later(tmp_path, monkeypatch):
    monkeypatch.setattr(fts, "has_fts5", lambda conn: False)
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    await store.remember("fact", "The robot's owner is Ana.")
    talk(store, ("user", "Ana likes oranges"), ("assistant", "Oranges are good"))
    assert [h.source for h in await store.recall("ana")] == ["memory", "message"]
    assert next(h.text for h in await store.recall("oranges ana")) == "Ana likes oranges"  # more words first
    assert await store.forget(query="owner ana") == 1
    await store.close()
    assert rows(tmp_path / "ticos.db", "SELECT name FROM sqlite_master WHERE name LIKE '%fts%'") == []
    monkeypatch.undo()
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    await until(lambda: store._fts_upto is not None and not store._fts_behind, what="indexed at the next open")
    # through the index now: both hold every word, so the newest comes first
    assert [h.text for h in await store.recall("oranges")] == ["Oranges are good", "Ana likes oranges"]
    assert next(h.text for h in await store.recall("oranges ana")) == "Ana likes oranges"  # more words first
    await store.close()


# ----------------------------------------------------------------- the card: fallback and merge

async def test_memories_and_the_mark_survive_the_fallback_and_the_merge(tmp_path):
    card, internal = tmp_path / "card", tmp_path / "in"
    card_db = card / ".config" / "ticos" / "ticos.db"
    store = await open_store("external", tf_root=card, internal_dir=internal, require_mount=False,
                             probe_interval=0.2, commit_delay=0.05)
    try:
        await store.remember("fact", "Card fact before the loss.")
        before = talk(store, ("user", "said on the card"))
        await store.flush()
        await store._db.execute("PRAGMA max_page_count = 1")  # the card fails: the next batch falls back
        store.add_message(role="system", content="x" * 8000, item_id="big")
        fact = await store.remember("fact", "Lin's kite is red.", subject="user", key="kite", value="red",
                                    confidence=0.8, source=before[0])
        assert store.health()["mode"] == "internal"
        assert [h.text for h in await store.recall("kite", messages=False)] == ["Lin's kite is red."]
        with pytest.raises(StorageError, match="TF card is away"):
            await store.forget(query="kite")
        spoken = talk(store, ("user", "said on the fallback"))
        await store.flush()
        got, mark = await store.unsummarised(10)
        assert [m["id"] for m in got][-1] == spoken[0]
        await store.mark_summarised(mark)
        await until(lambda: store.health()["mode"] == "external" and store.health()["state"] == "ok",
                    what="merged back onto the card")
        assert fact.id
        got = rows(card_db, "SELECT content, subject, key, value, confidence, source_id FROM memories ORDER BY id")
        assert got == [
            ("Card fact before the loss.", None, None, None, None, None),
            ("Lin's kite is red.", "user", "kite", "red", 0.8, before[0])]
        assert rows(card_db, "SELECT value FROM ticos_state WHERE name = 'summarised'") == [(int(spoken[0]),)]
        assert await store.unsummarised(10) == ([], None)
        assert [h.text for h in await store.recall("kite", messages=False)] == ["Lin's kite is red."]
        assert await store.forget(query="kite") == 1
        assert [h.text for h in await store.recall("fallback")] == ["said on the fallback"]
    finally:
        await store.close()


async def test_inspect_reads_memories_of_a_card_it_may_not_change(tmp_path):
    store = await open_store("internal", internal_dir=tmp_path, commit_delay=0.05)
    await store.remember("episode", "The birthday party.", title="Party", importance=0.9)
    await store.remember("fact", "Lin likes cake.")
    await store.close()
    db = tmp_path / "ticos.db"
    db.chmod(0o400)
    tmp_path.chmod(0o500)
    try:
        before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
        conn = open_readonly(db)
        try:
            finder = Finder(conn)
            shown = finder.newest(MEMORIES, Window(grep="party"), 10)
            assert [(r["content"], r["title"], r["importance"]) for r in shown] == [
                ("The birthday party.", "Party", 0.9)]
            assert [r["content"] for r in finder.newest(MEMORIES, Window(grep="CAKE"), 10)] == ["Lin likes cake."]
        finally:
            conn.close()
        assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    finally:
        tmp_path.chmod(0o700)
