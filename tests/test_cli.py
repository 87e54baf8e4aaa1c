"""The command line as a person uses it: config errors on one screen, masked secrets, doctor, run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request

import pytest


def cli(*args, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "ticos_agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_broken_config_is_refused_with_every_error_named(tmp_path):
    bad = tmp_path / "robot.toml"
    bad.write_text('[server]\nport = "ninety"\nhost = "0.0.0.0"\n[storage]\nmode = "cloud"\n[soup]\nx = 1\n'
                   '[actuators.head]\ndriver = "warp-drive"\n')
    out = cli("run", "--config", str(bad))
    assert out.returncode == 2
    for key in ("server.port", "server.token", "storage.mode", "soup", "actuators.head.driver"):
        assert key in out.stderr, (key, out.stderr)
    assert len(out.stderr.splitlines()) < 25


def test_config_prints_effective_values_with_secrets_masked(tmp_path):
    cfg = tmp_path / "robot.toml"
    cfg.write_text('[server]\nhost = "0.0.0.0"\ntoken = "hunter2"\n')
    out = cli("config", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    data = tomllib.loads(out.stdout)  # TOML now (a file to copy); --json gives the same data as JSON
    assert data["server"]["token"] == "********" and "hunter2" not in out.stdout
    assert data["storage"]["mode"] == "internal" and "actuators" in data
    as_json = cli("config", "--config", str(cfg), "--json")
    assert json.loads(as_json.stdout) == data


def test_doctor_reports_each_check(tmp_path):
    out = cli("doctor", env={"HOME": str(tmp_path)})
    assert "[" in out.stdout and "config" in out.stdout and "actuator head" in out.stdout


def test_run_serves_health_and_stops_gracefully_on_sigterm(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", "run", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HOME": str(tmp_path)})
    try:
        body = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    body = json.load(resp)
                break
            except OSError:
                time.sleep(0.05)
        assert body is not None and body["simulated"] is True
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "SIMULATED" in output
    assert output.index("server: stopped") < output.index("actuators: stopped") < output.index("storage: flushed")
    assert (tmp_path / ".config" / "ticos" / "ticos.db").exists()


async def replay(trace, *args: str) -> tuple[int | None, bytes, bytes]:
    """``ticos-agent replay TRACE ARGS...`` in its own process: (exit status, stdout, stderr)."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ticos_agent.cli", "replay", str(trace), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out, err


async def test_replay_sends_a_trace_and_reports_errors(agent, tmp_path):
    from helpers import settle
    from traces import transcription, user_item

    trace = tmp_path / "trace.jsonl"
    lines = [json.dumps(user_item("r1")), json.dumps(transcription("r1", "replayed")), "{oops"]
    trace.write_text("\n".join(lines) + "\n")
    code, out, err = await replay(trace, "--url", f"ws://127.0.0.1:{agent.port}/realtime")
    assert code == 1, err  # the agent answered with an error
    assert b"sent 3 event(s), 1 error reply(ies)" in err and b"invalid_json" in out  # the reply to the last line
    await settle(agent)
    assert [m["content"] for m in await agent.store.messages()] == ["replayed"]


async def test_replay_takes_the_port_and_the_token_from_the_agents_config(tmp_path):
    """``--config``: the agent's own file gives where it listens and its token; without the
    token the agent refuses the socket (401) and replay says it cannot reach it."""
    from helpers import agent_config, settle
    from traces import transcription, user_item

    from ticos_agent import Agent

    agent = Agent(agent_config(tmp_path, server={"token": "s3cret-token"}))
    await agent.start()
    try:
        cfg = tmp_path / "robot.toml"
        cfg.write_text(f'[server]\nport = {agent.port}\ntoken = "s3cret-token"\n')
        trace = tmp_path / "trace.jsonl"
        trace.write_text(json.dumps(user_item("r1")) + "\n" + json.dumps(transcription("r1", "with a token")) + "\n")
        code, _, err = await replay(trace, "--config", str(cfg))
        assert code == 0, err
        assert b"sent 2 event(s), 0 error reply(ies)" in err
        code, _, err = await replay(trace, "--url", f"ws://127.0.0.1:{agent.port}/realtime")
        assert code == 2 and b"401" in err, err
        await settle(agent)
        assert [m["content"] for m in await agent.store.messages()] == ["with a token"]
    finally:
        await agent.stop()
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = \"nine\"\n")
    out = cli("replay", str(trace), "--config", str(bad))
    assert out.returncode == 2 and "server.port" in out.stderr, out.stderr


async def test_replay_reaches_an_agent_on_ipv6_loopback_from_its_config(tmp_path):
    """An IPv6 socket takes no IPv4: an agent on ``::1`` is reached on ``[::1]``, not 127.0.0.1."""
    from helpers import agent_config

    from ticos_agent import Agent

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    agent = Agent(agent_config(tmp_path, server={"host": "::1"}))
    await agent.start()
    try:
        cfg = tmp_path / "robot.toml"
        cfg.write_text(f'[server]\nhost = "::1"\nport = {agent.port}\n')
        trace = tmp_path / "trace.jsonl"
        trace.write_text('{"type": "session.created", "session": {"id": "sess_v6"}}\n')
        code, _, err = await replay(trace, "--config", str(cfg))
        assert code == 0 and b"sent 1 event(s), 0 error reply(ies)" in err, err
    finally:
        await agent.stop()


def test_replay_where_an_agent_listens():
    from ticos_agent.replay import _connect_host

    assert [_connect_host(h) for h in ("0.0.0.0", "localhost", "::", "::1", "127.0.0.2", "robot.local",
                                       "fe80::1%eth0")] == \
        ["127.0.0.1", "127.0.0.1", "[::1]", "[::1]", "127.0.0.2", "robot.local", "[fe80::1%25eth0]"]


def test_replay_asks_for_a_url_when_the_config_picks_a_free_port(tmp_path):
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[server]\nport = 0\n")
    (tmp_path / "t.jsonl").write_text("{}\n")
    out = cli("replay", str(tmp_path / "t.jsonl"), "--config", str(cfg))
    assert out.returncode == 2 and "pass --url" in out.stderr, out.stderr


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(15)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", "run", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HOME": str(tmp_path), "NOTIFY_SOCKET": notify_path,
                                 "WATCHDOG_USEC": "200000"})
    try:
        messages = []
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1") and f"port {port}" in messages[0]
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages[-1]:
            messages.append(sock.recv(4096).decode())
        assert proc.wait(timeout=15) == 0
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()


def test_doctor_checks_what_the_config_names(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "robot.toml"
        cfg.write_text(f'[server]\nport = {port}\n[storage]\ndir = "{tmp_path / "db"}"\n'
                       '[actuators.body]\ndriver = "serial-line"\nport = "/dev/ttyNOPE0"\n')
        out = cli("doctor", "--config", str(cfg), env={"HOME": str(tmp_path)})
    assert out.returncode == 1
    assert f"[FAIL] port {port}: cannot bind 127.0.0.1:{port}" in out.stdout
    assert f"internal storage: {tmp_path / 'db'}" in out.stdout
    assert "[FAIL] serial port of body: /dev/ttyNOPE0 does not exist" in out.stdout


def test_replay_reports_a_missing_trace(tmp_path):
    missing = cli("replay", str(tmp_path / "nope.jsonl"), "--url", "ws://127.0.0.1:9/realtime")
    assert missing.returncode == 2 and "cannot read the trace" in missing.stderr
    (tmp_path / "t.jsonl").write_text("{}\n")
    unreachable = cli("replay", str(tmp_path / "t.jsonl"), "--url", "ws://127.0.0.1:9/realtime")
    assert unreachable.returncode == 2 and "cannot reach ws://127.0.0.1:9/realtime" in unreachable.stderr
