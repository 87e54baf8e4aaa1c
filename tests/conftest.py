"""Shared fixtures: a real agent on a loopback port with a real SQLite file, a real client."""

from __future__ import annotations

import itertools
import os

import aiohttp
import helpers
import pytest
from devices import PtyDevice
from helpers import Peer, agent_config, robot_config

os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Nothing a test does may touch the real ~/.config/ticos."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    # tests use a plain temporary directory as the TF card; the real rule (the card root must
    # be a mount point) is tested on its own in test_storage_agent.py
    monkeypatch.setenv("TICOS_ALLOW_UNMOUNTED_CARD", "1")
    return home


@pytest.fixture(autouse=True)
def _frames_sent_forgotten():
    helpers._SENT.clear()


@pytest.fixture
def pins():
    """gpiozero's own mock pins (PWM capable) as the pin factory, restored afterwards."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    old = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    yield Device.pin_factory
    Device.pin_factory.close()
    Device.pin_factory = old


@pytest.fixture
async def start_agent(tmp_path):
    """``await start_agent(**sections)`` starts an agent of ``agent_config`` with those sections
    (``config=`` a whole config instead), each in a folder of its own; all are stopped after
    the test."""
    from ticos_agent import Agent

    started: list[Agent] = []

    async def start(config: dict | None = None, **sections) -> Agent:
        agent = Agent(config if config is not None else agent_config(tmp_path / f"a{len(started)}", **sections))
        await agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        await agent.stop()


@pytest.fixture
def robot(tmp_path, start_agent):
    """``await robot(**sections)`` starts an agent of ``robot_config`` (an arm and a face, both
    simulated ``mock`` actuators), each in a folder of its own."""
    made = itertools.count()
    return lambda **sections: start_agent(robot_config(tmp_path / f"r{next(made)}", **sections))


@pytest.fixture
async def agent(tmp_path):
    from ticos_agent import Agent

    a = Agent(agent_config(tmp_path))
    await a.start()
    yield a
    await a.stop()


@pytest.fixture
async def connect():
    sessions: list[aiohttp.ClientSession] = []

    async def _connect(agent, path: str = "/realtime", **kw) -> Peer:
        session = aiohttp.ClientSession()
        sessions.append(session)
        ws = await session.ws_connect(f"http://127.0.0.1:{agent.port}{path}", **kw)
        return Peer(session, ws)

    yield _connect
    for s in sessions:
        await s.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def pty_device():
    made = []

    def make(*a, **kw):
        d = PtyDevice(*a, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
