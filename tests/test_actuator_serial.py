"""Serial drivers against a device emulator on a pseudo-terminal: exact bytes, their timing,
the handshake, long-line splitting, and a port that vanishes and comes back."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from devices import feetech_decode, line_decode, lx16a_decode, maestro_decode

from ticos_agent.actuators import ActuatorSystem, parse_actuators_config
from ticos_agent.arguments import EmotionArgs, MotionArgs


def config(actuators: dict, motions: dict | None = None, **extra) -> dict:
    doc = {"actuators": actuators, "robot": {"default_library": False}, "motions": motions or {}, **extra}
    return doc


async def started(doc: dict) -> ActuatorSystem:
    system = ActuatorSystem(parse_actuators_config(doc))
    await asyncio.wait_for(system.start(), 10)
    return system


LOOK = {"look": {"head": [[0.2, [10, -5]], [0.4, [0, 0]]]}}


def sts_frame(*servos: tuple[int, int, int]) -> bytes:
    """SYNC_WRITE from address 42 of (id, Goal_Position, Goal_Speed), Goal_Time 0, little-endian."""
    body = [0xFE, 4 + 7 * len(servos), 0x83, 0x2A, 6]
    for sid, raw, speed in servos:
        body += [sid, raw & 0xFF, raw >> 8, 0, 0, speed & 0xFF, speed >> 8]
    return b"\xff\xff" + bytes(body) + bytes([~sum(body) & 0xFF])


async def test_feetech_sts_sync_write_exact_bytes(pty_device):
    """STS servos ignore Goal_Time: the move time becomes Goal_Speed = |raw - last raw| / seconds."""
    dev = pty_device(feetech_decode)
    head = {"driver": "feetech-sts", "port": dev.port, "ids": [1, 2], "min": [-90, -30], "max": [90, 30]}
    system = await started(config({"head": head}, LOOK))
    try:
        assert dev.wait_frames(1)  # safe state at start: home (2048) in 500 ms
        # the servos may be anywhere within min/max: id 1 up to 1024 steps away (-90 deg = 1024,
        # 90 deg = 3072) -> 1024 / 0.5 s = 2048 steps/s; id 2: 2048 - round(2048 - 30 * 4096/360)
        # = 341 steps -> 682 steps/s
        assert dev.frames[0][1] == sts_frame((1, 2048, 2048), (2, 2048, 682))
        out = await asyncio.wait_for(system.motion(MotionArgs("look")), 5)
        assert out.status == "done", out
        frames = dev.wait_frames(3)
        # 10 deg -> 2048 + 10*4096/360 = 2162 (0x0872), 114 steps in 200 ms = 570 steps/s;
        # -5 deg -> 1991 (0x07c7), 57 steps in 200 ms = 285 steps/s
        body = bytes.fromhex("fe 12 83 2a 06 01 72 08 00 00 3a 02 02 c7 07 00 00 1d 01")
        assert frames[1] == b"\xff\xff" + body + bytes([~sum(body) & 0xFF])
        assert frames[2] == sts_frame((1, 2048, 570), (2, 2048, 285))  # back home in 200 ms
        assert dev.errors == []
    finally:
        await system.stop()
    # the safe state at stop homes from anywhere within limits, like at start
    assert dev.wait_frames(4)[3] == sts_frame((1, 2048, 2048), (2, 2048, 682))


async def test_feetech_sts_speed_clamps_and_fixed_goal_speed(pty_device):
    dev = pty_device(feetech_decode)
    fixed = pty_device(feetech_decode)
    acts = {"head": {"driver": "feetech-sts", "port": dev.port, "ids": [4], "max_speed": 1000},
            "tail": {"driver": "feetech-sts", "port": fixed.port, "ids": [5], "goal_speed": 777}}
    motions = {"snap": {"head": [[0.05, 90]], "tail": [[0.05, 90]]},
               "creep": {"head": [[0.1, 45], [2.0, 45], [2.4, 45.1]]},
               "jump": {"head": [[0.0, -90]]}}
    system = await started(config(acts, motions))
    try:
        dev.wait_frames(1)
        fixed.wait_frames(1)
        assert (await system.motion(MotionArgs("snap"))).status == "done"
        assert dev.wait_frames(2)[1] == sts_frame((4, 3072, 1000))  # 1024 steps in 50 ms: clamped to max_speed
        assert fixed.wait_frames(2)[1] == sts_frame((5, 3072, 777))
        assert (await system.motion(MotionArgs("creep", speed=4.0))).status == "done"
        # 45 deg = 2560: 512 steps in 25 ms (clamped), then 0 steps (at least 1), then 1 step in 100 ms
        assert dev.wait_frames(5)[2:5] == [sts_frame((4, 2560, 1000)), sts_frame((4, 2560, 1)),
                                           sts_frame((4, 2561, 10))]
        assert (await system.motion(MotionArgs("jump"))).status == "done"
        assert dev.wait_frames(6)[5] == sts_frame((4, 1024, 1000))  # no move time: full speed
    finally:
        await system.stop()


async def test_feetech_scs_is_big_endian_and_clamped(pty_device):
    dev = pty_device(feetech_decode)
    head = {"driver": "feetech-scs", "port": dev.port, "ids": [7], "min": -20, "max": 20}
    system = await started(config({"head": head}, {"far": {"head": [[0.1, 80]]}}))
    try:
        out = await asyncio.wait_for(system.motion(MotionArgs("far")), 5)
        assert out.status == "done"
        frame = dev.wait_frames(2)[1]
        raw = round(512 + 20 * 1024 / 300)  # clamped to max = 20 degrees
        assert frame[5:8] == bytes([0x2A, 6, 7]) and frame[8:10] == raw.to_bytes(2, "big")
        assert frame[10:12] == (100).to_bytes(2, "big")
        assert dev.errors == []
    finally:
        await system.stop()


async def test_speed_and_repeat_change_frame_times(pty_device):
    dev = pty_device(feetech_decode)
    head = {"driver": "feetech-sts", "port": dev.port, "ids": [1, 2]}
    system = await started(config({"head": head}, LOOK))
    try:
        dev.wait_frames(1)

        async def gaps(**kw):
            n0 = len(dev.frames)
            out = await asyncio.wait_for(system.motion(MotionArgs("look", **kw)), 5)
            assert out.status == "done"
            times = [t for t, _ in dev.frames[n0:]]
            return [b - a for a, b in itertools.pairwise(times)], out

        g1, o1 = await gaps()
        g2, o2 = await gaps(speed=2.0)
        g3, o3 = await gaps(repeat=3)
        assert len(g1) == 1 and len(g2) == 1 and len(g3) == 5  # 2 frames, 2 frames, 6 frames
        assert 0.15 < g1[0] < 0.45 and 0.07 < g2[0] < 0.25  # generous: a loaded CI machine
        assert 1.5 < g1[0] / g2[0] < 2.6
        assert o1.detail["planned_s"] == 0.4 and o2.detail["planned_s"] == 0.2
        assert o3.detail["planned_s"] == pytest.approx(1.2)
        assert dev.errors == []
    finally:
        await system.stop()


async def test_move_speed_in_frame_scales_with_speed(pty_device):
    dev = pty_device(feetech_decode)
    system = await started(config({"head": {"driver": "feetech-sts", "port": dev.port, "ids": [1, 2]}}, LOOK))
    try:
        dev.wait_frames(1)
        await system.motion(MotionArgs("look", speed=2.0))
        frame = dev.wait_frames(2)[1]
        assert int.from_bytes(frame[10:12], "little") == 0  # STS: no Goal_Time
        assert int.from_bytes(frame[12:14], "little") == 1140  # Goal_Speed: 114 steps in 200 ms / 2
        assert int.from_bytes(frame[19:21], "little") == 570
    finally:
        await system.stop()


async def test_lx16a_and_maestro_frames(pty_device):
    bus = pty_device(lx16a_decode)
    maestro = pty_device(maestro_decode)
    acts = {
        "arm": {"driver": "lx16a", "port": bus.port, "ids": [3]},
        "tail": {"driver": "maestro", "port": maestro.port, "channels": [5], "interpolate": False},
    }
    motions = {"flick": {"arm": [[0.05, 24]], "tail": [[0.05, 45]]}}
    system = await started(config(acts, motions))
    try:
        bus.wait_frames(1)
        maestro.wait_frames(1)
        assert (await system.motion(MotionArgs("flick"))).status == "done"
        # LX-16A: 500 + 24*1000/240 = 600 (0x0258), 50 ms
        body = [3, 7, 1, 0x58, 0x02, 50, 0]
        assert bus.wait_frames(2)[1] == bytes([0x55, 0x55, *body, ~sum(body) & 0xFF])
        # Maestro: (1500 + 45*500/90) us * 4 = 7000 quarter-us -> low7 0x58, high7 0x36
        assert maestro.wait_frames(2)[1] == bytes([0x84, 5, 7000 & 0x7F, 7000 >> 7])
        assert bus.errors == [] and maestro.errors == []
    finally:
        await system.stop()


async def test_serial_line_handshake_templates_and_split(pty_device):
    dev = pty_device(line_decode, replies={"HELLO": "READY"})
    mcu = {
        "driver": "serial-line", "port": dev.port, "handshake": "HELLO", "handshake_reply": "READY",
        "motions": {"wave": 0.2}, "emotion": "FACE {face} {r} {g} {b} " + "x" * 60, "chunk_gap": 0.02,
    }
    system = await started(config({"mcu": mcu}, emotions={"happy": {"color": "#FFC800", "face": "smile"}}))
    try:
        assert system.health()["actuators"]["mcu"]["state"] == "ok"
        t0 = time.monotonic()
        out = await asyncio.wait_for(system.motion(MotionArgs("wave", speed=2.0, repeat=3)), 5)
        assert out.status == "done"
        assert 0.25 < time.monotonic() - t0 < 1.0  # 0.2 * 3 / 2 = 0.3 s
        out = await asyncio.wait_for(system.emotion(EmotionArgs("happy")), 5)
        assert out.status == "done"
        lines = dev.wait_frames(4)
        assert lines[:3] == ["HELLO", "STOP", "MOTION wave 2.0 3"]
        assert lines[3] == "FACE smile 255 200 0 " + "x" * 60
        long_reads = [d for t, d in dev.reads if b"FACE" in d or b"xxx" in d]
        assert len(long_reads) >= 2 and max(len(d) for d in long_reads) <= 64
    finally:
        await system.stop()


async def test_no_handshake_reply_keeps_retrying_without_raising(pty_device):
    dev = pty_device(line_decode)  # never answers
    mcu = {"driver": "serial-line", "port": dev.port, "handshake": "HELLO", "handshake_reply": "READY",
           "handshake_timeout": 0.1}
    system = await started(config({"mcu": mcu}, emotions={"happy": {"face": "smile"}}))
    try:
        h = system.health()["actuators"]["mcu"]
        assert h["state"] == "reconnecting" and "READY" in h["error"]
        out = await asyncio.wait_for(system.emotion(EmotionArgs("happy")), 1)
        assert out.status == "failed" and "reconnecting" in out.reason
    finally:
        await system.stop()


async def test_port_vanishes_and_comes_back(pty_device, tmp_path):
    link = str(tmp_path / "ttyMCU")
    dev = pty_device(line_decode, link=link)
    system = await started(config({"mcu": {"driver": "serial-line", "port": link, "motions": {"nod": 0.05}}}))
    try:
        assert (await system.motion(MotionArgs("nod"))).status == "done"
        assert "MOTION nod 1.0 1" in dev.wait_frames(2)
        dev.unplug()
        # the outage is noticed by the idle check within a fraction of a second
        for _ in range(100):
            if system.health()["actuators"]["mcu"]["state"] == "reconnecting":
                break
            await asyncio.sleep(0.02)
        health = system.health()["actuators"]["mcu"]
        assert health["state"] == "reconnecting" and health["error"]
        t0 = time.monotonic()
        out = await asyncio.wait_for(system.motion(MotionArgs("nod")), 1)
        assert out.status == "failed" and link in out.reason and time.monotonic() - t0 < 0.5  # fast, not a hang
        # plugged back in (a new pty behind the same by-id path)
        dev2 = pty_device(line_decode, link=link)
        for _ in range(400):
            if system.health()["actuators"]["mcu"]["state"] == "ok":
                break
            await asyncio.sleep(0.02)
        assert system.health()["actuators"]["mcu"] == {
            "driver": "serial-line", "state": "ok", "simulated": False, "error": None, "queued": 0}
        assert dev2.wait_frames(1)[:1] == ["STOP"]  # the safe state, first thing on the new device
        assert (await system.motion(MotionArgs("nod", repeat=2))).status == "done"
        assert "MOTION nod 1.0 2" in dev2.wait_frames(1)
    finally:
        await system.stop()


async def test_write_failure_during_motion_fails_the_call(pty_device, tmp_path):
    link = str(tmp_path / "ttyBUS")
    dev = pty_device(feetech_decode, link=link)
    head = {"driver": "feetech-sts", "port": link, "ids": [1]}
    system = await started(config({"head": head}, {"slow": {"head": [[0.1, 10], [0.3, -10], [0.5, 0]]}}))
    try:
        task = asyncio.create_task(system.motion(MotionArgs("slow")))
        await asyncio.sleep(0.05)
        dev.unplug()
        out = await asyncio.wait_for(task, 3)
        assert out.status == "failed" and "head" in out.reason
    finally:
        await system.stop()


async def wait_state(system, name, state, timeout=8.0):
    for _ in range(int(timeout / 0.02)):
        if system.health()["actuators"][name]["state"] == state:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_port_that_appears_after_start_gets_the_safe_state(pty_device, tmp_path):
    link = str(tmp_path / "ttyLATE")
    head = {"driver": "feetech-sts", "port": link, "ids": [1], "min": -90, "max": 90}
    system = await started(config({"head": head}))
    try:
        assert system.health()["actuators"]["head"]["state"] == "reconnecting"
        dev = pty_device(feetech_decode, link=link)  # the USB adapter shows up late
        assert await wait_state(system, "head", "ok")
        frames = dev.wait_frames(1)
        assert frames[:1] == [sts_frame((1, 2048, 2048))]  # home, from anywhere in -90..90 in 0.5 s
        await asyncio.sleep(0.3)
        assert len(dev.frames) == 1 and dev.errors == []  # applied once
    finally:
        await system.stop()


async def test_a_replugged_port_is_homed_and_positions_reset(pty_device, tmp_path):
    link = str(tmp_path / "ttyMAESTRO")
    dev = pty_device(maestro_decode, link=link)
    tail = {"driver": "maestro", "port": link, "channels": [0], "min": -90, "max": 90, "step": 0.02}
    system = await started(config({"tail": tail}, {"up": {"tail": [[0.1, 45]]}}))
    try:
        home = bytes([0x84, 0, 6000 & 0x7F, 6000 >> 7])  # 1500 us
        assert dev.wait_frames(1) == [home]
        assert (await system.motion(MotionArgs("up"))).status == "done"
        assert system.positions["tail"] == [45.0]
        dev.unplug()
        assert await wait_state(system, "tail", "reconnecting")
        dev2 = pty_device(maestro_decode, link=link)
        assert await wait_state(system, "tail", "ok")
        assert dev2.wait_frames(1)[:1] == [home]  # homed as soon as it is back
        assert system.positions["tail"] == [0.0]
        assert (await system.motion(MotionArgs("up"))).status == "done"
        first = dev2.wait_frames(2)[1]
        assert first == bytes([0x84, 0, *divmod(round((1500 + 9 * 500 / 90) * 4), 128)[::-1]])  # 1/5 of 45 from home
    finally:
        await system.stop()


async def test_a_link_that_keeps_dropping_backs_off(caplog):
    import logging
    import socket
    import threading

    from ticos_agent.actuators.serial_link import SerialLink

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(50)
    srv.settimeout(0.2)
    stop = threading.Event()

    def accept_and_hang_up():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=accept_and_hang_up, daemon=True)
    thread.start()
    link = SerialLink(f"socket://127.0.0.1:{srv.getsockname()[1]}", 115200, label="flappy", backoff=(0.3, 5.0))
    try:
        with caplog.at_level(logging.INFO, logger="ticos_agent.actuators"):
            await link.start()
            await asyncio.sleep(2.0)
        # opens at about 0, 0.5, 1.3 s (0.2 s to notice, then 0.3, 0.6, 1.2 s of backoff)
        assert 2 <= link.opens <= 3, link.opens
        lost = [r for r in caplog.records if "lost" in r.getMessage() and r.levelno >= logging.WARNING]
        assert len(lost) == 1
    finally:
        await link.stop()
        stop.set()
        thread.join(1)
        srv.close()
