"""Audio through the whole agent: WebSocket deltas -> PortAudio -> ALSA's file plugin.

The agent runs as ``ticos-agent run`` in a subprocess whose ``ALSA_CONFIG_PATH`` makes the
default PCM a ``file`` plugin, so the exact samples played land in a file (see
tests/test_audio_playback.py for what this sink does). Test audio has no zero sample, so the
played audio is the file's non-zero samples.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys

import aiohttp
import numpy as np
import pytest

pytest.importorskip("sounddevice", exc_type=OSError)


def tone(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(500, 20000, n) * rng.choice((-1, 1), n)).astype("<i2")


def deltas(x: np.ndarray, resp: str, item: str, chunk: int = 960) -> list[dict]:
    return [{"type": "response.output_audio.delta", "response_id": resp, "item_id": item, "output_index": 0,
             "content_index": 0, "delta": base64.b64encode(x[i:i + chunk].tobytes()).decode()}
            for i in range(0, x.size, chunk)]


@pytest.fixture
def agent_process(tmp_path):
    played = tmp_path / "played.raw"
    conf = tmp_path / "asound.conf"
    conf.write_text('</usr/share/alsa/alsa.conf>\n'
                    f'pcm.!default {{ type file; slave.pcm "null"; file "{played}"; format "raw" }}\n')
    cfg = tmp_path / "robot.toml"
    cfg.write_text('[audio]\nsend_truncate = true\n[storage]\nenabled = false\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ALSA_CONFIG_PATH": str(conf), "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "ticos_agent.cli", "run", "--config", str(cfg), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    yield port, played, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def _connect(port: int):
    session = aiohttp.ClientSession()
    for _ in range(300):
        try:
            return session, await session.ws_connect(f"http://127.0.0.1:{port}/realtime")
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    await session.close()
    raise AssertionError("agent did not come up")


def _stop_and_listen(proc, played) -> tuple[np.ndarray, str]:
    """SIGTERM the agent (a graceful stop) and return what reached the speaker, and its log."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    samples = np.frombuffer(played.read_bytes(), dtype="<i2")
    return samples[samples != 0], out


async def test_barge_in_cuts_the_response_truncates_and_the_next_one_plays(agent_process):
    port, played, proc = agent_process
    first, late, second = tone(4800, 1), tone(2400, 2), tone(3600, 3)
    session, ws = await _connect(port)
    try:
        async with session.get(f"http://127.0.0.1:{port}/health") as resp:
            health = await resp.json()
        assert health["audio"]["state"] in ("ok", "idle"), health["audio"]
        send = lambda e: ws.send_str(json.dumps(e))  # noqa: E731
        await send({"type": "response.created", "response": {"id": "r1", "status": "in_progress", "output": []}})
        for e in deltas(first, "r1", "item_A1"):
            await send(e)
        await asyncio.sleep(0.4)  # the file sink consumes faster than real time: all of `first` is played
        await send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "item_U2"})
        truncate = json.loads((await ws.receive(timeout=5)).data)
        assert truncate["type"] == "conversation.item.truncate" and truncate["item_id"] == "item_A1"
        assert truncate["audio_end_ms"] == 200  # 4800 samples at 24 kHz
        await send({"type": "response.done", "response": {"id": "r1", "status": "cancelled", "output": []}})
        for e in deltas(late, "r1", "item_A1"):  # stragglers of the cancelled response
            await send(e)
        for e in deltas(second, "r2", "item_A2"):
            await send(e)
        await send({"type": "response.output_audio.delta", "response_id": "r2", "item_id": "item_A2",
                    "delta": "not base64!"})
        bad = json.loads((await ws.receive(timeout=5)).data)
        assert bad["type"] == "error" and bad["error"]["code"] == "invalid_audio"
        await asyncio.sleep(0.5)
    finally:
        await ws.close()
        await session.close()
    heard, out = _stop_and_listen(proc, played)
    assert np.array_equal(heard, np.concatenate([first, second])), out[-2000:]
    # the story line says how much of its audio had played (the truncate's 200 ms)
    assert "barge-in: stopped response r1 after 0.2 s of its audio; no command was queued" in out, out[-2000:]
    assert not [line for line in out.splitlines() if "stopped response" in line and "None" in line]


async def test_barge_in_before_the_first_delta_silences_that_response(agent_process):
    port, played, proc = agent_process
    late, other = tone(2400, 4), tone(2400, 5)
    session, ws = await _connect(port)
    try:
        send = lambda e: ws.send_str(json.dumps(e))  # noqa: E731
        await send({"type": "response.created", "response": {"id": "r1", "status": "in_progress", "output": []}})
        await send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "item_U2"})
        for e in deltas(late, "r1", "item_A1"):  # the interrupted response's audio, arriving after the barge-in
            await send(e)
        for e in deltas(other, "r2", "item_A2"):
            await send(e)
        await asyncio.sleep(0.5)
    finally:
        await ws.close()
        await session.close()
    heard, out = _stop_and_listen(proc, played)
    assert np.array_equal(heard, other), out[-2000:]
    assert "barge-in: stopped response r1 before any of its audio played; no command was queued" in out, out[-2000:]


async def test_a_spoken_out_of_band_answer_talked_over_is_silenced_without_a_truncate(agent_process):
    """An out-of-band item is in no conversation: a ``conversation.item.truncate`` for it would
    only earn an error from the server. The speaker still falls silent."""
    port, played, proc = agent_process
    said, late = tone(4800, 6), tone(2400, 7)
    session, ws = await _connect(port)
    try:
        send = lambda e: ws.send_str(json.dumps(e))  # noqa: E731
        await send({"type": "response.created", "response": {"id": "r1", "status": "in_progress", "output": [],
                                                             "conversation_id": None,
                                                             "output_modalities": ["audio"]}})
        for e in deltas(said, "r1", "item_T1"):
            await send(e)
        await asyncio.sleep(0.4)  # all of it played (the file sink is faster than real time)
        await send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "item_U2"})
        for e in deltas(late, "r1", "item_T1"):  # the server goes on with it: never heard
            await send(e)
        with pytest.raises(asyncio.TimeoutError):
            reply = await ws.receive(timeout=0.5)
            raise AssertionError(f"unexpected reply {reply.data!r}")
    finally:
        await ws.close()
        await session.close()
    heard, out = _stop_and_listen(proc, played)
    assert np.array_equal(heard, said), out[-2000:]
    assert "barge-in: stopped response r1 after 0.2 s of its audio" in out, out[-2000:]
