"""What each view of ``ticos-agent inspect`` says about a card the agent itself wrote."""

from __future__ import annotations

import re

import pytest
from inspect_cards import FIRST, MAIN, build_card, jsonl, rows

from ticos_agent.cli import main


@pytest.fixture(scope="module")
def card_db(tmp_path_factory):
    """A cleanly closed card the agent wrote (shared by this module's tests, which only read it)."""
    return build_card(tmp_path_factory.mktemp("robot"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_transcript_is_the_last_session_as_a_conversation(card_db, capsys):
    code, out, err = run(capsys, "inspect", "--db", str(card_db))
    assert code == 0 and err == ""
    lines = lines_of(out)
    assert lines[0].startswith(f"Session {MAIN} · ") and "9 message(s), 9 call(s)" in lines[0]
    body = [re.sub(r"^\d\d:\d\d:\d\d", "TIME", line) for line in lines[1:]]
    expected = [
        r"TIME  user    Wave at me!",
        r"TIME  robot   Sure, waving now!",
        r"\s+↳ wave x2 done 0\.8 s",
        r"\s+↳ wave busy: actuator 'arm' has 1 commands waiting or running \(robot\.max_queued\)",
        r"\s+↳ happy not shown: no actuator",
        r"\s+↳ nod failed: actuator 'head' \(feetech-sts\) is \w+: .*no-such-tty.*",
        r"\s+↳ get_weather\(city=Paris\) done -> \{\"sky\": \"clear\"\}",
        r"TIME  user    \(not understood: the transcription failed\)",
        r"TIME  user    Tell me a long story",
        r"TIME  robot   Once upon a time there was a little robot who",
        r"\s+✂ cut off by barge-in at \d\d:\d\d:\d\d after 10 words \(0\.\d s into the answer\)",
        r"\s+↳ wave x3 dropped: barge-in",
        r"\s+↳ bow dropped: barge-in",
        r"TIME  user    Stop! Do the moonwalk",
        r"TIME  system  ⚠ the voice agent reported an error",
        r"TIME  robot   I can't moonwalk, sorry\.",
        r"\s+↳ moonwalk failed: unknown motion tag 'moonwalk'; known: bow, nod, wave",
        r"\s+↳ wave not run: cut off before its arguments were complete",
        r"TIME  robot   ✂ cut off by barge-in before saying anything \(0\.\d s into the answer\)",
        r"TIME  user    Good night",
        r"TIME  robot   Good night, sleep well!",
    ]
    assert len(body) == len(expected), "\n".join(body)
    for line, pattern in zip(body, expected):
        assert re.fullmatch(pattern, line), f"{line!r} !~ {pattern!r}"


def test_transcript_of_another_session_by_prefix_and_by_grep(card_db, capsys):
    code, out, _ = run(capsys, "inspect", "transcript", "--db", str(card_db), "--session", "sess_fi")
    assert code == 0
    assert [line.split(None, 2)[1:] for line in lines_of(out)[1:]] == [
        ["user", "Hello robot"], ["robot", "Hello! Nice to meet you."]]
    code, out, _ = run(capsys, "inspect", "--db", str(card_db), "--grep", "HELLO")
    assert code == 0 and lines_of(out)[0].startswith(f"Session {FIRST}")  # the session where it was said
    code, out, _ = run(capsys, "inspect", "--db", str(card_db), "--grep", "moonwalk", "--role", "user")
    assert [line.split(None, 2)[2] for line in lines_of(out)[1:]] == ["Stop! Do the moonwalk"]


def test_transcript_with_a_limit_says_what_it_left_out(card_db, capsys):
    _, out, _ = run(capsys, "inspect", "--db", str(card_db), "--limit", "2")
    lines = lines_of(out)
    assert "(the last 2; 7 before)" in lines[0]
    assert [line.split(None, 2)[2] for line in lines[1:3]] == ["Good night", "Good night, sleep well!"]
    assert lines[3:] == ["7 earlier message(s) of this session not shown (--limit or --since to see them)"]


def test_transcript_as_markdown_for_a_bug_report(card_db, capsys):
    code, out, _ = run(capsys, "inspect", "--db", str(card_db), "--format", "markdown")
    assert code == 0
    assert out.startswith(f"**Session {MAIN.replace('_', chr(92) + '_')} · ")
    assert re.search(r"^- `\d\d:\d\d:\d\d` \*\*robot:\*\* Sure, waving now!$", out, re.M)
    assert "  - ↳ wave x2 done 0.8 s" in out
    assert re.search(r"^  - ✂ cut off by barge-in at .* after 10 words", out, re.M)
    assert re.search(r"^- `[\d:]+` \*\*user:\*\* ⚠ \*\*\(not understood: the transcription failed\)\*\*$", out, re.M)
    assert re.search(r"^- `[\d:]+` \*\*system:\*\* ⚠ \*\*the voice agent reported an error\*\*$", out, re.M)


def test_transcript_as_json_lines_keeps_stable_fields(card_db, capsys):
    _, out, _ = run(capsys, "inspect", "--db", str(card_db), "--format", "jsonl")
    entries = jsonl(out)
    assert {tuple(e) for e in entries} == {("kind", "card", "source", "session_id", "time", "who", "text", "status",
                                            "level", "item_id", "response_id", "call_id")}
    assert entries[0]["kind"] == "session"
    cut = [e for e in entries if e["kind"] == "barge-in"]
    assert [e["response_id"] for e in cut] == ["resp_2", "resp_4"]
    busy = next(e for e in entries if e["call_id"] == "call_busy")
    assert (busy["kind"], busy["status"], busy["level"]) == ("call", "busy", "fault")


def test_messages_calls_events_and_memories(card_db, capsys):
    _, out, _ = run(capsys, "inspect", "messages", "--db", str(card_db), "--role", "assistant")
    lines = lines_of(out)
    assert lines[0].split() == ["time", "session", "role", "text"]
    assert [line.split(None, 4)[4] for line in lines[1:]] == [
        "Hello! Nice to meet you.", "Sure, waving now!", "Once upon a time there was a little robot who [cancelled]",
        "I can't moonwalk, sorry.", "Good night, sleep well!"]
    _, out, _ = run(capsys, "inspect", "calls", "--db", str(card_db), "--grep", "moonwalk")
    assert [line.split(None, 3)[3] for line in lines_of(out)[1:]] == [
        "moonwalk  failed: unknown motion tag 'moonwalk'; known: bow, nod, wave"]
    _, out, _ = run(capsys, "inspect", "events", "--db", str(card_db), "--grep", "speech_started")
    times = [line.split()[1] for line in lines_of(out)[1:]]
    assert len(times) == 2 and all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", t) for t in times)  # local, in ms
    stored = rows(card_db, "SELECT datetime FROM messages WHERE item_id = 'item_U4'")[0][0]
    assert lines_of(out)[1].split()[0] == stored[:10]
    _, out, _ = run(capsys, "inspect", "memories", "--db", str(card_db))
    assert lines_of(out)[1].split(None, 4)[2:] == ["long_term", "nobody", "the child likes waving robots"]


def test_sessions_newest_last_with_their_numbers(card_db, capsys):
    _, out, _ = run(capsys, "inspect", "sessions", "--db", str(card_db))
    lines = lines_of(out)
    assert lines[0].split() == ["session", "start", "end", "length", "messages", "turns", "barge-ins", "calls",
                                "problems"]
    first, main_ = lines[1].split(), lines[2].split()
    assert first[0] == FIRST and first[-5:] == ["2", "1", "0", "0", "0"]
    # 9 messages, 5 user turns, 2 answers cut off (one before any word: the event log), 9 calls;
    # problems: busy, nod failed, moonwalk failed, not run, a failed transcription
    assert main_[0] == MAIN and main_[-5:] == ["9", "5", "2", "9", "5"]


def test_faults_are_grouped_and_counted_with_where_to_look(card_db, capsys):
    code, out, _ = run(capsys, "inspect", "faults", "--db", str(card_db))
    assert code == 0
    found = {}
    for line in lines_of(out)[1:]:
        m = re.match(r"(\w[\w ]*?)\s{2,}(\d+)\s+(\S+ \S+)\s+(\S+ \S+)\s+(\S+ \S+)\s+(.*)", line)
        if m:
            found[(m.group(1), m.group(6))] = (int(m.group(2)), m.group(5))
    outage = next(k for k in found if k[0] == "actuator outage")
    assert outage[1].startswith("actuator 'head' (feetech-sts) down or lost: 1 call(s) failed at 20")
    assert "no-such-tty" in outage[1] and not any(k[0] == "call failed" and "head" in k[1] for k in found)
    assert found[("call failed", "unknown motion tag 'moonwalk' (motion 1)")][0] == 1
    busy = "actuator 'arm' has N commands waiting or running (robot.max_queued) (motion 1)"
    assert found[("call busy", busy)][0] == 1
    assert found[("call not run", "cut off before its arguments were complete (motion 1)")][0] == 1
    assert found[("transcription failed", "the robot did not catch what was said")][0] == 1
    assert found[("call dropped", "barge-in (motion 2)")][0] == 2
    voice = next(v for k, v in found.items() if k[0] == "voice agent error")
    assert voice[0] == 1 and voice[1].startswith(MAIN[:13])
    assert "fault(s) in" in lines_of(out)[-1]


def test_summary_per_day_and_session(card_db, capsys):
    code, out, _ = run(capsys, "inspect", "summary", "--db", str(card_db))
    assert code == 0
    lines = lines_of(out)
    day = lines[0]
    assert re.match(r"\w{3} \d{4}-\d\d-\d\d · 2 session\(s\) · 6 turn\(s\) · robot spoke ≈?\d+s · user speech - · "
                    r"2 barge-in\(s\)$", day), day
    commands = lines[1].strip().removeprefix("commands: ").split(" · ")
    assert commands[0].startswith("wave 4 (") and set(commands[0][8:-1].split(", ")) == {
        "1 done", "1 busy", "1 dropped", "1 not run"}
    assert set(commands[1:]) == {"bow 1 (1 dropped)", "get_weather 1", "happy 1 (1 not shown)", "moonwalk 1 (1 failed)",
                                 "nod 1 (1 failed)"}
    assert lines[2].strip() == ("failures: calls failed 3 of 9 (33.3 %) · busy 1 · "
                                "transcriptions failed 1 of 6 (16.7 %)")
    sessions = [line.split() for line in lines[4:6]]
    assert sessions[0][0] == FIRST and sessions[1][0] == MAIN
    assert sessions[1][3] == "5" and sessions[1][6:9] == ["2", "9", "5"]  # turns; barge-ins, calls, problems


@pytest.mark.parametrize("view", ["transcript", "messages", "calls", "events", "sessions", "faults", "summary"])
def test_filters_that_match_nothing_say_so(card_db, capsys, view):
    code, out, err = run(capsys, "inspect", view, "--db", str(card_db), "--since", "2099-01-01")
    assert code == 0 and err == "" and out.startswith("(") and out.strip().endswith(")")


def test_time_filters_in_local_time_and_ages(card_db, capsys):
    stored = rows(card_db, "SELECT datetime FROM messages WHERE item_id = 'item_U4'")[0][0]
    _, out, _ = run(capsys, "inspect", "messages", "--db", str(card_db), "--since", stored, "--role", "user")
    assert [line.split(None, 4)[4] for line in lines_of(out)[1:]] == ["Stop! Do the moonwalk", "Good night"]
    _, out, _ = run(capsys, "inspect", "messages", "--db", str(card_db), "--until", stored, "--role", "user",
                    "--since", "1h")
    assert "Stop! Do the moonwalk" not in out and "Wave at me!" in out
    _, out, _ = run(capsys, "inspect", "messages", "--db", str(card_db), "--until", "2000-01-01")
    assert out == "(no messages)\n"


@pytest.mark.parametrize("chunk", [1000, 3, 1])
def test_an_exported_transcript_is_the_whole_session_in_chunks(card_db, capsys, monkeypatch, chunk):
    from ticos_agent.inspect import timeline

    monkeypatch.setattr(timeline, "CHUNK", chunk)
    _, page, _ = run(capsys, "inspect", "--db", str(card_db), "--format", "jsonl", "--limit", "1000")
    _, export, _ = run(capsys, "export", "transcript", "--db", str(card_db))
    whole, streamed = jsonl(page), jsonl(export)
    assert [e["kind"] for e in streamed] == [e["kind"] for e in whole]
    assert [e["text"] for e in streamed[1:]] == [e["text"] for e in whole[1:]]
