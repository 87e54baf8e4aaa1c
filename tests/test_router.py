"""The intake's routing table: who gets which event, in what order, and a consumer's failure
costing nobody else the event."""

from __future__ import annotations

import logging

import pytest
from helpers import settle, wait_for
from traces import assistant_turn, ev, transcription, user_item

from ticos_agent.errors import BadEvent


async def test_the_table_names_each_event_types_consumers_in_order(agent):
    """In the order they were added, ``"*"`` consumers among them: what the robot does first,
    then the integrators' handlers, then what is only kept (rows, the event log)."""
    table = agent.intake.consumers_of
    assert table("response.done") == ["Turns", "RobotLife", "CallIntake", "IntegratorEvents", "Conversations",
                                      "EventLog", "MemoryRounds"]
    assert table("input_audio_buffer.speech_started") == ["Turns", "RobotLife", "IntegratorEvents", "EventLog"]
    assert table("response.output_item.done") == ["CallIntake", "IntegratorEvents", "EventLog"]
    assert table("error") == ["IntegratorEvents", "PeerErrors", "EventLog"]
    # a type the agent does not act on still reaches the integrators and the event log
    assert table("rate_limits.updated") == ["IntegratorEvents", "EventLog"]
    # the deltas (most frames) do not reach the event log, which stores none
    for delta in ("response.audio.delta", "response.text.delta", "response.function_call_arguments.delta"):
        assert "EventLog" not in table(delta) and "IntegratorEvents" in table(delta), table(delta)
    assert table("response.text.done") == ["IntegratorEvents", "Conversations", "EventLog"]


async def test_a_consumer_of_every_event_can_leave_out_types(agent, connect):
    got: list[tuple[str, str]] = []

    class AllButTranscripts:
        def routes(self):
            return {"*": self.take, "conversation.item.input_audio_transcription.completed": None,
                    "input_audio_buffer.speech_started": None}

        def take(self, event, peer):
            got.append(("mine", event.type))

    class Everything:
        def routes(self):
            return {"*": lambda event, peer: got.append(("all", event.type))}

    undo = agent.intake.add(AllButTranscripts(), name="all-but")
    agent.intake.add(Everything(), name="everything")
    assert "all-but" not in agent.intake.consumers_of("input_audio_buffer.speech_started")
    assert agent.intake.consumers_of("input_audio_buffer.speech_started")[-1] == "everything"
    peer = await connect(agent)
    await peer.send(user_item("u1"), transcription("u1", "hi"), ev("input_audio_buffer.speech_started"),
                    ev("custom.thing"))
    await wait_for(lambda: ("all", "custom.thing") in got)
    assert [g for g in got if g[0] == "mine"] == [("mine", "conversation.item.created"), ("mine", "custom.thing")]
    assert [g[1] for g in got if g[0] == "all"] == ["conversation.item.created",
                                                   "conversation.item.input_audio_transcription.completed",
                                                   "input_audio_buffer.speech_started", "custom.thing"]
    undo()  # the table forgets the exclusions with the consumer
    assert "all-but" not in str(agent.intake.consumers_of("conversation.item.created"))


async def test_a_consumer_that_crashes_costs_the_others_nothing(agent, connect, caplog):
    seen = []

    class Broken:
        def routes(self):
            return {"conversation.item.input_audio_transcription.completed": self.boom}

        def boom(self, event, peer):
            raise KeyError("bug")

    agent.intake.add(Broken(), name="broken-consumer")
    agent.on("conversation.item.input_audio_transcription.completed", lambda e: seen.append(e["transcript"]))
    peer = await connect(agent)
    with caplog.at_level(logging.ERROR):
        await peer.send(user_item("u1"), transcription("u1", "hello robot"))
        reply = await peer.receive_json()
    assert reply["type"] == "error" and reply["error"]["code"] == "internal_error"
    assert "broken-consumer failed" in caplog.text
    await wait_for(lambda: seen)
    assert seen == ["hello robot"]
    await settle(agent)
    rows = await agent.store.messages(limit=5, offset=0)
    assert [(r["role"], r["content"]) for r in rows] == [("user", "hello robot")]
    # and the socket is still good for the next turn
    await peer.send(*assistant_turn("r1", "a1", ["hi"], audio=False))
    await peer.no_reply()


async def test_a_bad_part_of_an_event_is_answered_after_everyone_ran(agent, connect):
    """A function call with bad arguments inside response.done: the error reply comes, and the
    response's message is still stored and the handlers still get the event."""
    done = []
    agent.on("response.done", lambda e: done.append(e["response"]["id"]))
    peer = await connect(agent)
    bad = {"type": "function_call", "id": "f1", "call_id": "c1", "name": "motion", "status": "completed",
           "arguments": '{"speed": 2}'}
    turn = assistant_turn("r1", "a1", ["waving"], audio=False)
    turn[-1]["response"]["output"] = [bad]
    await peer.send(*turn)
    reply = await peer.receive_json()
    assert reply["error"]["code"] == "invalid_arguments" and "motion_tag" in reply["error"]["message"]
    assert reply["error"]["event_id"] == turn[-1]["event_id"]
    await wait_for(lambda: done)
    await settle(agent)
    rows = await agent.store.messages(limit=5, offset=0)
    assert [(r["role"], r["content"], r["status"]) for r in rows] == [("assistant", "waving", "completed")]


async def test_consumers_come_and_go(agent, connect):
    got = []

    class Listener:
        def routes(self):
            return {"session.updated": lambda event, peer: got.append(peer.name)}

    remove = agent.intake.add(Listener())
    peer = await connect(agent)
    await peer.send(ev("session.updated", session={}))
    await wait_for(lambda: got)
    remove()
    await peer.send(ev("session.updated", session={}))
    await settle(agent)
    assert len(got) == 1 and got[0].startswith("ws#")

    class GaSpelling:
        def routes(self):
            return {"response.output_audio.delta": lambda event, peer: None}

    with pytest.raises(ValueError, match="beta spelling"):
        agent.intake.add(GaSpelling())


async def test_bad_event_raised_by_one_consumer_keeps_the_first_error(agent, connect):
    class Picky:
        def __init__(self, code):
            self.code = code

        def routes(self):
            return {"session.updated": self.check}

        def check(self, event, peer):
            raise BadEvent(f"not today ({self.code})", code=self.code)

    agent.intake.add(Picky("first"))
    agent.intake.add(Picky("second"))
    peer = await connect(agent)
    await peer.send(ev("session.updated", session={}))
    reply = await peer.receive_json()
    assert reply["error"]["code"] == "first"
    await peer.no_reply()


async def test_a_consumer_of_one_type_and_of_every_event_gets_both_calls_in_its_place(agent):
    class Both:
        def routes(self):
            return {"*": lambda event, peer: None, "response.done": lambda event, peer: None}

    agent.intake.add(Both(), name="both")
    assert agent.intake.consumers_of("response.done")[-2:] == ["both", "both"]
    assert agent.intake.consumers_of("rate_limits.updated")[-1] == "both"
    assert agent.intake.consumers_of("rate_limits.updated").count("both") == 1
