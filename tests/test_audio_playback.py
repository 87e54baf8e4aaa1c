"""AudioPlayer through the real sounddevice/PortAudio/ALSA stack into ALSA's ``file`` plugin.

Each scenario runs in a subprocess (this file run as a script) whose ``ALSA_CONFIG_PATH``
points at a config that includes the system ``alsa.conf`` and makes the default PCM a
``file`` plugin over the ``null`` PCM, so the exact bytes PortAudio played land in a file.
PortAudio reads the ALSA config when sounddevice is imported, hence one process per scenario.

Found out about this sink (alsa-lib 1.2.8, PortAudio 19.6): it accepts 24000 Hz as is, and
the ``null`` slave consumes *much faster than real time* (~400x) with
``outputBufferDacTime == currentTime``. Scenarios that need real-time consumption (lip-sync
timing, underruns, a flush in the middle of a response) wrap the player's callback to sleep
after each block (``paced``), which makes the stream run at its nominal rate; the flush
scenario instead holds the callback at a chosen point, so it is exact at any speed.

Test signals never contain a zero sample, so the audio in the file is exactly its non-zero
samples (PortAudio's priming, the jitter wait and the gaps between responses are zeros).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RATE = 24000


def signal(n: int, seed: int, lo: int = 500, hi: int = 20000, positive: bool = False) -> np.ndarray:
    """Random PCM16 with no zero sample."""
    rng = np.random.default_rng(seed)
    x = rng.integers(lo, hi, n)
    if not positive:
        x = x * rng.choice((-1, 1), n)
    return x.astype(np.int16)


def chunks(x: np.ndarray, sizes) -> list[np.ndarray]:
    """Split ``x`` into consecutive pieces of the given sizes (cycled); the last is the rest."""
    out, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        out.append(x[i : i + n])
        i += n
        k += 1
    return out


def b64(x: np.ndarray) -> str:
    return base64.b64encode(x.astype("<i2").tobytes()).decode()


def nonzero(raw: bytes) -> np.ndarray:
    a = np.frombuffer(raw, dtype="<i2")
    return a[a != 0]


# ---------------------------------------------------------------------------------------
# the parent side


def run_scenario(tmp_path: Path, name: str, **params) -> tuple[dict, bytes]:
    out = tmp_path / "played.raw"
    conf = tmp_path / "asound.conf"
    conf.write_text(
        "</usr/share/alsa/alsa.conf>\n"
        f'pcm.!default {{ type file; slave.pcm "null"; file "{out}"; format "raw" }}\n'
    )
    env = dict(os.environ, ALSA_CONFIG_PATH=str(conf), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, __file__, name, json.dumps(params)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        raise AssertionError(f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, (out.read_bytes() if out.exists() else b"")


@pytest.fixture(scope="module", autouse=True)
def _portaudio():
    probe = subprocess.run([sys.executable, "-c", "import sounddevice"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("PortAudio is not installed (apt-get install libportaudio2)")


def test_exact_bytes_played(tmp_path):
    a = signal(RATE, seed=1)  # 1 s
    result, raw = run_scenario(tmp_path, "play", sizes=[480, 1, 2400, 77, 4800], seed=1, n=RATE)
    assert result["health"]["state"] == "ok"
    assert result["health"]["sample_rate"] == RATE
    samples = np.frombuffer(raw, dtype="<i2")
    nz = np.flatnonzero(samples)
    # exactly the fed PCM, in order (the signal has no zero sample)
    assert np.array_equal(samples[nz], a)
    if result["health"]["underruns"] == 0:
        # and in one piece, surrounded by silence only; the file sink drains ~400x faster than
        # real time, so a feeder descheduled on a loaded machine shows up as a counted gap
        assert np.array_equal(samples[nz[0] : nz[-1] + 1], a)
    assert result["played_samples"] == a.size
    assert result["played_ms"] == 1000
    assert result["health"]["played_ms"] == 1000
    assert result["health"]["rejected_deltas"] == 0
    assert result["playing_after"] is False
    assert result["current_item_id"] == "item_A"
    assert result["health_after_stop"]["state"] == "idle"


def test_volume_is_applied(tmp_path):
    result, raw = run_scenario(tmp_path, "play", sizes=[2400], seed=2, n=4800, volume=0.5)
    a = signal(4800, seed=2)
    expected = np.rint(a.astype(np.float32) * np.float32(0.5)).astype(np.int16)
    assert np.array_equal(nonzero(raw), expected[expected != 0])


def test_resampled_output_at_48k(tmp_path):
    from ticos_agent.audio.resample import resample

    result, raw = run_scenario(tmp_path, "play", sizes=[333, 2400], seed=3, n=12000, sample_rate=48000, positive=True)
    assert result["health"]["sample_rate"] == 48000
    a = signal(12000, seed=3, positive=True)
    whole = resample(a, RATE, 48000)
    got = nonzero(raw)
    # the stream holds back under one input sample at the very end
    assert 0 <= whole.size - got.size <= 2
    assert np.array_equal(got, whole[: got.size])
    assert abs(result["played_ms"] - 500) <= 1


def test_bad_deltas_rejected_good_ones_play(tmp_path):
    result, raw = run_scenario(tmp_path, "bad", seed=4)
    assert result["errors"] == ["BadAudio"] * 5
    assert result["health"]["rejected_deltas"] == 5
    good = np.concatenate([signal(2400, seed=4), signal(2400, seed=5)])
    assert np.array_equal(nonzero(raw), good)


def test_flush_on_barge_in_drops_the_rest_and_next_response_plays(tmp_path):
    result, raw = run_scenario(tmp_path, "flush", seed=6)
    a = signal(RATE, seed=6)
    b = signal(RATE // 2, seed=7)
    k = result["a_played_samples"]
    assert 4800 <= k < a.size  # stopped in the middle, right where the callback was held
    # A up to the flush point, then B complete; nothing of A after the flush, no late delta
    assert np.array_equal(nonzero(raw), np.concatenate([a[:k], b]))
    assert result["a_played_ms_after"] == k * 1000 // RATE  # once the device has played it out
    assert result["a_played_ms_at_flush"] <= k * 1000 // RATE
    assert result["a_played_ms_at_flush"] >= k * 1000 // RATE - 15  # less what was still in the device
    assert result["b_played_ms"] == 500
    assert result["playing_after_flush"] is False
    assert result["health"]["dropped_deltas"] >= 2  # the late deltas of the flushed response
    assert result["levels"][result["levels_at_flush"]] == 0.0  # mouth closed by the flush


def test_lip_sync_levels_follow_the_output_clock(tmp_path):
    result, _raw = run_scenario(tmp_path, "envelope", paced=True, mouth_gain=1.0)
    windows = result["windows"]  # the RMS of each full 20 ms window, computed in the scenario
    levels = [lv for _t, lv in result["deliveries"]]
    assert result["all_on_loop_thread"]
    # every non-zero level delivered is one window's RMS, in order (late ones may be missing)
    delivered = [lv for lv in levels if lv != 0.0]
    it = iter(windows)
    assert all(any(abs(lv - w) < 1e-6 for w in it) for lv in delivered)
    stats = result["stats"]
    assert stats["delivered"] + stats["dropped_late"] == len(windows)
    assert stats["delivered"] >= len(windows) // 2
    assert levels[-1] == 0.0  # the mouth closes when the audio runs out
    # all the audio was fed at once, yet each level came out when its window was played:
    # levels k windows apart were delivered about k * 20 ms apart (the paced stream may run
    # up to 50 ms ahead after a stall, never faster on average)
    timed = [(t, windows.index(min(windows, key=lambda w: abs(w - lv)))) for t, lv in result["deliveries"] if lv != 0.0]
    (t0, k0), (t1, k1) = timed[0], timed[-1]
    assert k1 - k0 >= 37
    assert t1 - t0 >= 0.8 * 0.020 * (k1 - k0) - 0.06


def test_lip_sync_waits_for_the_dac_time(tmp_path):
    # a device that reports 200 ms between the callback and the speaker: the mouth follows
    # the speaker, not the callback
    result, _raw = run_scenario(tmp_path, "envelope", paced=True, dac_offset=0.2, mouth_gain=1.0)
    first_pull, last_pull = result["audio_pulls"]
    voiced = [t for t, lv in result["deliveries"] if lv != 0.0]
    assert voiced[0] >= first_pull + 0.15
    assert result["deliveries"][-1][1] == 0.0
    assert result["deliveries"][-1][0] >= last_pull + 0.15  # the mouth closes when the sound ends
    assert result["stats"]["delivered"] + result["stats"]["dropped_late"] == len(result["windows"])


def test_lip_sync_values_with_unpaced_sink(tmp_path):
    # default mouth_gain 4: level = min(1, 4 * RMS); the loud windows open the mouth fully
    result, _raw = run_scenario(tmp_path, "envelope", paced=False)
    windows = result["windows"]
    raw = result["raw_windows"]
    assert result["gain"] == 4.0
    assert windows == pytest.approx([min(1.0, 4.0 * w) for w in raw], abs=1e-6)
    assert 1.0 in windows and min(windows) < 0.1
    delivered = [lv for _t, lv in result["deliveries"] if lv != 0.0]
    it = iter(windows)
    assert all(any(abs(lv - w) < 1e-6 for w in it) for lv in delivered)
    assert result["stats"]["delivered"] + result["stats"]["dropped_late"] == len(windows)


def test_underrun_counted_once_per_gap_not_between_responses(tmp_path):
    result, raw = run_scenario(tmp_path, "underrun", seed=8)
    assert result["underruns_after_gap"] == 1
    assert result["health"]["underruns"] == 1  # the silences before responses B and C are not
    a, b, c = signal(4800, seed=8), signal(240, seed=9), signal(2400, seed=10)
    assert np.array_equal(nonzero(raw), np.concatenate([a, b, c]))
    # a short response to an idle player is not stuck behind the jitter pre-buffer
    assert len(result["start_latencies_ms"]) == 4  # A, A after its gap, B, C
    assert max(result["start_latencies_ms"]) < 250


def test_missing_device_disables_audio(tmp_path):
    result, raw = run_scenario(tmp_path, "missing", retry_seconds=0)
    h = result["health"]
    assert h["state"] == "disabled"
    assert "no-such-device" in h["reason"]
    assert h["dropped_deltas"] == 1 and h["rejected_deltas"] == 1
    assert result["playing"] is False
    assert result["health_after_stop"]["state"] == "disabled"


def test_missing_device_is_retried(tmp_path):
    result, _raw = run_scenario(tmp_path, "missing", retry_seconds=0.1)
    assert result["health"]["state"] == "retrying"
    assert result["warnings"] == 1  # one clear line, not one per retry
    assert result["health_after_stop"]["state"] == "idle"


def test_device_that_appears_after_start_is_found_by_the_retry(tmp_path):
    # PortAudio reads its device list once; the retry re-initialises it, so a PCM added to
    # the ALSA config while the player is retrying is found and plays
    out = tmp_path / "plugged.raw"
    result, _raw = run_scenario(tmp_path, "hotplug", seed=12, out=str(out))
    assert result["state_before"] == "retrying"
    assert "robot-speaker" in result["reason_before"]
    assert result["health"]["state"] == "ok" and result["health"]["device"] == "robot-speaker"
    assert result["reinits"] >= 1
    assert np.array_equal(nonzero(out.read_bytes()), signal(2400, seed=12))


def test_stream_failure_is_retried_and_recovers(tmp_path):
    result, raw = run_scenario(tmp_path, "failure", seed=10)
    assert result["state_after_failure"] == "retrying"
    assert result["health"]["state"] == "ok"
    assert np.array_equal(nonzero(raw)[-2400:], signal(2400, seed=10))


# ---------------------------------------------------------------------------------------
# the subprocess side (python tests/test_audio_playback.py <scenario> <json params>)


class _TimeInfo:
    __slots__ = ("currentTime", "outputBufferDacTime")

    def __init__(self, dac, current):
        self.outputBufferDacTime = dac
        self.currentTime = current


def pace(player_cls, dac_offset: float = 0.0, audio_pulls: list | None = None):
    """Make the player's callback sleep after each block so the stream runs in real time.

    ``dac_offset`` adds that much to the DAC time PortAudio reports (a device holding that
    much audio in its buffer; the null sink reports none); ``audio_pulls`` collects the
    monotonic times of the blocks that carried audio."""
    orig = player_cls._callback
    state = {"next": None, "played": 0}

    def paced(self, outdata, frames, time_info, status):
        if dac_offset:
            time_info = _TimeInfo(time_info.outputBufferDacTime + dac_offset, time_info.currentTime)
        orig(self, outdata, frames, time_info, status)
        now = time.monotonic()
        if audio_pulls is not None and self._queue.played_total != state["played"]:
            state["played"] = self._queue.played_total
            audio_pulls.append(now)
        state["next"] = max(state["next"] or now, now - 0.05) + frames / self._rate
        time.sleep(max(0.0, state["next"] - now))

    player_cls._callback = paced


async def until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


async def drained(player):
    await until(lambda: not player.playing)
    await asyncio.sleep(0.1)


def make_player(**cfg):
    from ticos_agent.audio import AudioPlayer, parse_audio_config

    levels = []
    player = AudioPlayer(parse_audio_config(cfg), on_level=levels.append)
    return player, levels


async def sc_play(p):
    player, _levels = make_player(**{k: p[k] for k in ("volume", "sample_rate") if k in p})
    await player.start()
    a = signal(p["n"], seed=p["seed"], positive=p.get("positive", False))
    for piece in chunks(a, p["sizes"]):
        player.feed(b64(piece), response_id="resp_A", item_id="item_A")
    await drained(player)
    res = {
        "played_samples": player._queue.played_samples("item_A"),
        "played_ms": player.played_ms("item_A"),
        "playing_after": player.playing,
        "current_item_id": player.current_item_id,
        "health": player.health(),
    }
    await player.stop()
    res["health_after_stop"] = player.health()
    return res


async def sc_bad(p):
    from ticos_agent.errors import BadAudio

    player, _ = make_player()
    await player.start()
    errors = []
    good = [signal(2400, seed=p["seed"]), signal(2400, seed=p["seed"] + 1)]
    player.feed(b64(good[0]), response_id="r", item_id="i")
    for bad in ("not base64!!", base64.b64encode(b"\x01\x02\x03").decode(), "", b"", b"\x01"):
        try:
            player.feed(bad, response_id="r", item_id="i")
        except BadAudio as exc:
            errors.append(type(exc).__name__)
    player.feed(good[1].astype("<i2").tobytes(), response_id="r", item_id="i")
    await drained(player)
    await player.stop()
    return {"errors": errors, "health": player.health()}


async def sc_flush(p):
    from ticos_agent.audio import AudioPlayer

    reached, release = threading.Event(), threading.Event()
    orig = AudioPlayer._callback

    def held(self, outdata, frames, time_info, status):
        orig(self, outdata, frames, time_info, status)
        if not release.is_set() and self._queue.played_samples("item_A") >= 4800:
            reached.set()
            release.wait(10)

    AudioPlayer._callback = held
    player, levels = make_player()
    await player.start()
    a, b = signal(RATE, seed=p["seed"]), signal(RATE // 2, seed=p["seed"] + 1)
    parts = chunks(a, [1200])
    for piece in parts[:-2]:
        player.feed(b64(piece), response_id="resp_A", item_id="item_A")
    await asyncio.to_thread(reached.wait, 10)
    player.flush("resp_A")  # barge-in: the callback is held right after a block of A
    res = {
        "a_played_samples": player._queue.played_samples("item_A"),
        "a_played_ms_at_flush": player.played_ms("item_A"),
        "playing_after_flush": player._queue.queued_frames > 0,
        "levels_at_flush": len(levels) - 1,
    }
    for piece in parts[-2:]:  # late deltas of the cancelled response
        player.feed(b64(piece), response_id="resp_A", item_id="item_A")
    release.set()
    for piece in chunks(b, [960, 2400]):
        player.feed(b64(piece), response_id="resp_B", item_id="item_B")
    await drained(player)
    res.update(
        a_played_ms_after=player.played_ms("item_A"),
        b_played_ms=player.played_ms("item_B"),
        levels=levels,
    )
    await player.stop()
    res["health"] = player.health()
    return res


async def sc_envelope(p):
    from ticos_agent.audio import AudioPlayer

    pulls: list[float] = []
    if p["paced"]:
        pace(AudioPlayer, p.get("dac_offset", 0.0), pulls)
    loop = asyncio.get_running_loop()
    deliveries, threads = [], set()

    def on_level(level):
        deliveries.append((loop.time(), level))
        threads.add(threading.get_ident())

    from ticos_agent.audio import parse_audio_config

    cfg = parse_audio_config({k: p[k] for k in ("mouth_gain",) if k in p})
    player = AudioPlayer(cfg, on_level=on_level)
    await player.start()
    # 1.5 s of windows with different loudness each, plus a partial window at the end
    amps = [200 + 300 * (k % 40) + 7 * k for k in range(75)]
    rng = np.random.default_rng(11)
    pcm = np.concatenate([(a * rng.choice((-1, 1), 480)).astype(np.int16) for a in amps] + [np.full(100, 999, np.int16)])
    raw = [float(np.sqrt(np.mean((pcm[i * 480 : (i + 1) * 480] / 32768.0) ** 2))) for i in range(75)]
    windows = [float(min(np.float32(1.0), np.float32(w) * np.float32(cfg.mouth_gain))) for w in raw]
    for piece in chunks(pcm, [1000, 333, 4801]):
        player.feed(b64(piece), response_id="r", item_id="i")
    await drained(player)
    await asyncio.sleep(0.1)
    stats = player.envelope_stats
    await player.stop()
    return {
        "windows": windows,
        "raw_windows": raw,
        "gain": cfg.mouth_gain,
        "deliveries": deliveries,
        "stats": stats,
        "all_on_loop_thread": threads == {threading.get_ident()},
        "audio_pulls": [pulls[0], pulls[-1]] if pulls else None,
    }


async def sc_underrun(p):
    from ticos_agent.audio import AudioPlayer

    pace(AudioPlayer)
    player, _ = make_player()
    await player.start()
    a = signal(4800, seed=p["seed"])
    player.feed(b64(a[:2400]), response_id="resp_A", item_id="item_A")
    await drained(player)  # A ran dry in the middle: the next A delta ends a gap
    player.feed(b64(a[2400:]), response_id="resp_A", item_id="item_A")
    underruns = player.underruns
    await drained(player)
    await asyncio.sleep(0.2)
    b = signal(240, seed=p["seed"] + 1)  # a whole 10 ms response: less than jitter_ms of audio
    player.feed(b64(b), response_id="resp_B", item_id="item_B")
    await drained(player)
    c = signal(2400, seed=p["seed"] + 2)
    player.feed(b64(c), response_id="resp_C", item_id="item_C")
    await drained(player)
    res = {
        "underruns_after_gap": underruns,
        "start_latencies_ms": [x * 1000 for x in player.start_latencies],
    }
    await player.stop()
    res["health"] = player.health()
    return res


async def sc_missing(p):
    import logging

    warnings = []

    class H(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logging.getLogger("ticos_agent.audio").addHandler(H())
    player, _ = make_player(device="no-such-device", retry_seconds=p["retry_seconds"])
    await player.start()
    player.feed(b64(signal(480, seed=1)), response_id="r", item_id="i")
    try:
        player.feed("%%%", response_id="r", item_id="i")
    except ValueError:
        pass
    await asyncio.sleep(0.35)  # a few retries when configured
    res = {"health": player.health(), "playing": player.playing, "warnings": len(warnings)}
    await player.stop()
    res["health_after_stop"] = player.health()
    return res


async def sc_hotplug(p):
    player, _ = make_player(device="robot-speaker", retry_seconds=0.1)
    await player.start()
    res = {"state_before": player.health()["state"], "reason_before": player.health()["reason"]}
    conf = os.environ["ALSA_CONFIG_PATH"]
    text = Path(conf).read_text() + (
        f'pcm.robot-speaker {{ type file; slave.pcm "null"; file "{p["out"]}"; format "raw" }}\n')
    Path(conf + ".new").write_text(text)
    os.replace(conf + ".new", conf)  # the speaker is plugged in
    await until(lambda: player.health()["state"] == "ok", 10)
    player.feed(b64(signal(2400, seed=p["seed"])), response_id="r", item_id="i")
    await drained(player)
    res.update(health=player.health(), reinits=player.portaudio_reinits)
    await player.stop()
    return res


async def sc_failure(p):
    player, _ = make_player(retry_seconds=0.1)
    await player.start()
    player._stream.abort()  # the device goes away under the running stream
    await until(lambda: player.health()["state"] == "retrying", 5)
    state = player.health()["state"]
    await until(lambda: player.health()["state"] == "ok", 5)
    player.feed(b64(signal(2400, seed=p["seed"])), response_id="r", item_id="i")
    await drained(player)
    res = {"state_after_failure": state, "health": player.health()}
    await player.stop()
    return res


if __name__ == "__main__":
    scenario = globals()["sc_" + sys.argv[1]]
    params = json.loads(sys.argv[2])
    print(json.dumps(asyncio.run(scenario(params))))
