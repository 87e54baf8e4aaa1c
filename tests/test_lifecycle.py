"""Start in order, stop in reverse, and a start that fails closes only what it opened.

A second instance on a busy port must fail before it touches the robot: the serial device
on the far end of a pty sees nothing from it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest
from devices import PtyDevice, line_decode
from helpers import agent_config

from ticos_agent import Agent


def robot(dev: PtyDevice) -> dict:
    return {"mcu": {"driver": "serial-line", "port": dev.port, "baud": 115200, "handshake": "HELLO"}}


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def mcu():
    dev = PtyDevice(line_decode)
    yield dev
    dev.close()


async def test_second_instance_fails_first_and_touches_nothing(tmp_path, mcu):
    first = Agent(agent_config(tmp_path / "a", actuators=robot(mcu)))
    await first.start()
    try:
        assert mcu.wait_frames(2) == ["HELLO", "STOP"]  # handshake, then the safe state
        second = Agent(agent_config(tmp_path / "b", server={"port": first.port}, actuators=robot(mcu)))
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            await second.start()
        await asyncio.sleep(0.3)  # what a wrongly opened port would have sent by now
        assert [f for _, f in mcu.frames] == ["HELLO", "STOP"]
        assert not (tmp_path / "b" / "internal").exists()  # no database either
        assert not second.dispatcher.alive()
        assert first.health()["status"] == "ok"
    finally:
        await first.stop()


def test_second_cli_instance_exits_with_one_clear_line(tmp_path, mcu):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "robot.toml"
        cfg.write_text(f'[storage]\ndir = "{tmp_path / "db"}"\n[audio]\nenabled = false\n'
                       f'[actuators.mcu]\ndriver = "serial-line"\nport = "{mcu.port}"\nhandshake = "HELLO"\n')
        proc = subprocess.run([sys.executable, "-m", "ticos_agent.cli", "run", "--config", str(cfg), "--port", str(port)],
                              capture_output=True, text=True, timeout=30, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert mcu.frames == [] and mcu.reads == []
    assert not (tmp_path / "db").exists()


async def test_failed_storage_undoes_the_port_and_the_handler_thread(tmp_path, mcu):
    (tmp_path / "file").write_text("not a directory")
    agent = Agent(agent_config(tmp_path, storage={"dir": str(tmp_path / "file" / "sub")}, actuators=robot(mcu)))
    from ticos_agent import StorageError

    with pytest.raises(StorageError):
        await agent.start()
    assert agent.port is not None and port_is_free(agent.port)
    assert not agent.dispatcher.alive()
    assert mcu.reads == []  # storage comes before the actuators: the robot was never touched
    await agent.stop()  # harmless after a failed start


async def test_failure_after_the_actuators_puts_them_in_their_safe_state_and_closes_storage(tmp_path, mcu,
                                                                                           monkeypatch):
    from ticos_agent.audio import AudioPlayer

    async def broken(self):
        raise RuntimeError("sound card on fire")

    monkeypatch.setattr(AudioPlayer, "start", broken)
    agent = Agent(agent_config(tmp_path, audio={"enabled": True}, actuators=robot(mcu)))
    with pytest.raises(RuntimeError, match="on fire"):
        await agent.start()
    assert mcu.wait_frames(3) == ["HELLO", "STOP", "STOP"]  # safe state at start, and again when undone
    assert agent.store is None and agent.actuators is None and agent.audio is None
    assert port_is_free(agent.port) and not agent.dispatcher.alive()
    # the database was closed cleanly: it opens, and holds nothing half-written
    agent2 = Agent(agent_config(tmp_path))
    await agent2.start()
    try:
        assert await agent2.store.count_messages() == 0
    finally:
        await agent2.stop()


async def test_stop_is_the_reverse_of_start(tmp_path, mcu, caplog):
    caplog.set_level("INFO")
    agent = Agent(agent_config(tmp_path, actuators=robot(mcu)))
    await agent.start()
    await agent.stop()
    text = caplog.text
    order = ["server: stopped", "calls: stopped", "actuators: stopped", "storage: flushed", "handlers: stopped"]
    positions = [text.index(line) for line in order]
    assert positions == sorted(positions), text
    assert text.index("server: listening") < text.index("actuator mcu")  # the port before the hardware
