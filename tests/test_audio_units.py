"""Unit tests of the audio layer's parts that need no sound device: config, sample maths,
envelope, level timing, the jitter buffer, delta decoding, and the disabled paths."""

from __future__ import annotations

import asyncio
import base64
import math

import numpy as np
import pytest

from ticos_agent.audio import AudioConfig, AudioPlayer, parse_audio_config
from ticos_agent.audio import device as device_mod
from ticos_agent.audio.buffer import Chunk, PcmQueue
from ticos_agent.audio.envelope import EnvelopeMeter, LevelScheduler
from ticos_agent.audio.pcm import decode_pcm
from ticos_agent.audio.resample import StreamResampler, apply_volume, resample
from ticos_agent.errors import BadAudio, ConfigError


# ---- config ------------------------------------------------------------------------------
def test_config_defaults_and_as_dict():
    cfg = parse_audio_config({})
    assert cfg == AudioConfig()
    assert cfg.as_dict() == {
        "enabled": True, "device": "", "sample_rate": 0, "latency": "low", "volume": 1.0,
        "jitter_ms": 30, "send_truncate": False, "retry_seconds": 10.0, "mouth_gain": 4.0, "rescan_devices": True,
    }


def test_config_values():
    cfg = parse_audio_config({"device": "3", "sample_rate": 48000, "latency": 0.04, "volume": 0.25,
                              "jitter_ms": 0, "send_truncate": True, "retry_seconds": 0, "enabled": False,
                              "mouth_gain": 1})
    assert cfg.device == 3 and cfg.sample_rate == 48000 and cfg.latency == 0.04 and cfg.mouth_gain == 1.0
    assert cfg.volume == 0.25 and cfg.jitter_ms == 0 and cfg.send_truncate and cfg.retry_seconds == 0
    assert parse_audio_config({"device": "USB Audio"}).device == "USB Audio"
    assert parse_audio_config({"device": " "}).device is None


@pytest.mark.parametrize("key,value", [
    ("volume", 1.5), ("volume", "loud"), ("volume", True), ("latency", "medium"), ("latency", 0),
    ("latency", 0.05), ("latency", 1), ("mouth_gain", 0), ("mouth_gain", 101), ("mouth_gain", "big"),
    ("mouth_gain", True),
    ("sample_rate", 100), ("sample_rate", 44100.0), ("jitter_ms", 500), ("jitter_ms", 2.5),
    ("enabled", "yes"), ("send_truncate", 1), ("device", True), ("device", -1), ("device", 1.5),
    ("retry_seconds", -1), ("colume", 1),
])
def test_config_errors_name_the_dotted_key(key, value):
    with pytest.raises(ConfigError) as err:
        parse_audio_config({key: value})
    assert err.value.key == f"audio.{key}"
    assert err.value.value == value


def test_config_not_a_table():
    with pytest.raises(ConfigError) as err:
        parse_audio_config([1])  # type: ignore[arg-type]
    assert err.value.key == "audio"


# ---- resampling and volume -----------------------------------------------------------------
def test_resample_upsample_by_two_interpolates_linearly():
    x = np.array([0, 100, 200, -300, 1000], np.int16)
    # output j sits at input j/2; the last input sample is held back (no successor yet)
    assert resample(x, 24000, 48000).tolist() == [0, 50, 100, 150, 200, -50, -300, 350]


def test_resample_identity_returns_input():
    x = np.arange(1, 100, dtype=np.int16)
    assert resample(x, 24000, 24000) is x


@pytest.mark.parametrize("out_rate", [48000, 44100, 22050, 16000, 32000])
def test_streaming_resampler_equals_one_shot(out_rate):
    x = np.random.default_rng(3).integers(-30000, 30000, 9000).astype(np.int16)
    whole = resample(x, 24000, out_rate)
    r = StreamResampler(24000, out_rate)
    parts, i = [], 0
    for n in [1, 1, 2, 479, 480, 1000, 7, 3000]:
        parts.append(r.process(x[i : i + n]))
        i += n
    parts.append(r.process(x[i:]))
    assert np.array_equal(np.concatenate(parts), whole)
    # length follows the rate ratio (less the held-back last sample)
    assert abs(whole.size - x.size * out_rate / 24000) <= out_rate / 24000 + 1


@pytest.mark.parametrize("out_rate", [48000, 44100])
def test_resampled_sine_keeps_its_frequency_and_level(out_rate):
    t = np.arange(24000) / 24000
    x = np.rint(10000 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
    y = resample(x, 24000, out_rate).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peak_hz = np.argmax(spectrum) * out_rate / y.size
    assert abs(peak_hz - 440) < 2
    assert abs(np.sqrt(np.mean(y**2)) - 10000 / math.sqrt(2)) < 100


def test_apply_volume():
    x = np.array([1000, -1000, 32767, -32768, 3], np.int16)
    assert apply_volume(x, 1.0) is x
    assert apply_volume(x, 0.5).tolist() == [500, -500, 16384, -16384, 2]
    assert apply_volume(x, 0.0).tolist() == [0, 0, 0, 0, 0]


# ---- envelope ------------------------------------------------------------------------------
def _rms(x):
    return math.sqrt(sum((v / 32768) ** 2 for v in x) / len(x))


def test_envelope_meter_levels_are_window_rms_whatever_the_chunking():
    x = np.random.default_rng(5).integers(-20000, 20000, 480 * 7 + 100).astype(np.int16)
    expected = [_rms(x[i * 480 : (i + 1) * 480].tolist()) for i in range(7)]
    m = EnvelopeMeter(480)
    starts, levels, i = [], [], 0
    for n in [100, 700, 1, 479, 1200, 500]:
        s, lv = m.process(x[i : i + n])
        starts += s.tolist()
        levels += lv.tolist()
        i += n
    s, lv = m.process(x[i:])
    starts += s.tolist()
    levels += lv.tolist()
    assert starts == [k * 480 for k in range(7)]  # the partial last window gives no level
    assert np.allclose(levels, expected, atol=1e-6)


def test_envelope_full_scale_is_one():
    m = EnvelopeMeter(480)
    _s, lv = m.process(np.full(480, -32768, np.int16))
    assert lv.tolist() == [1.0]


async def test_level_scheduler_delivers_on_time_and_drops_late():
    loop = asyncio.get_running_loop()
    got = []
    s = LevelScheduler(loop, lambda v: got.append((loop.time(), v)))
    now = loop.time()
    s.schedule(now - 0.5, 0.9, "r")  # its window ended long ago: dropped
    s.schedule(now + 0.05, 0.3, "r")
    s.schedule(now + 0.10, 0.6, "r")
    await asyncio.sleep(0.2)
    assert [v for _t, v in got] == [0.3, 0.6]
    assert got[0][0] >= now + 0.05 and got[1][0] >= now + 0.10
    assert s.delivered == 2 and s.dropped_late == 1


async def test_level_scheduler_drops_frames_late_when_their_turn_comes():
    loop = asyncio.get_running_loop()
    got = []
    s = LevelScheduler(loop, got.append)
    now = loop.time()
    s.schedule(now + 0.001, 0.5, "r")
    s.schedule(now + 0.002, 0.7, "r")
    import time

    time.sleep(0.06)  # the loop is busy past both windows
    await asyncio.sleep(0.01)
    assert got == [] and s.dropped_late == 2


async def test_level_scheduler_cancel_closes_mouth_once():
    loop = asyncio.get_running_loop()
    got = []
    s = LevelScheduler(loop, got.append)
    s.schedule(loop.time() + 0.05, 0.8, "a")
    s.schedule(loop.time() + 0.05, 0.4, "b")
    s.cancel("a")
    await asyncio.sleep(0.1)
    assert got == [0.0, 0.4]
    s.cancel()
    s.cancel()  # mouth already closed: no second 0.0
    assert got == [0.0, 0.4, 0.0]


async def test_level_scheduler_contains_callback_errors():
    loop = asyncio.get_running_loop()

    def broken(level):
        raise RuntimeError("servo gone")

    s = LevelScheduler(loop, broken)
    s.schedule(loop.time(), 0.5, "r")
    await asyncio.sleep(0.02)
    assert s.delivered == 1


# ---- the jitter buffer ---------------------------------------------------------------------
def _chunk(resp, item, values):
    return Chunk(resp, item, np.asarray(values, np.int16), np.zeros(0, np.int64), np.zeros(0, np.float32), 0.0)


def test_queue_gate_pull_and_played_counts():
    q = PcmQueue()
    q.rate = 1000
    out = np.full(4, 9, np.int16)
    q.push(_chunk("r", "i1", [1, 2, 3]))
    assert q.pull(out, 1.0) is False and out.tolist() == [0, 0, 0, 0]  # gate closed: silence
    q.push(_chunk("r", "i2", [4, 5, 6]))
    q.open_gate()
    assert q.pull(out, 2.0) is True and out.tolist() == [1, 2, 3, 4]
    assert q.pull(out, 2.004) is False  # the wake-up is coalesced until the loop reads
    assert out.tolist() == [5, 6, 0, 0]
    assert q.played_samples("i1") == 3 and q.played_samples("i2") == 3 and q.played_total == 6
    records = q.take_records()
    assert [(r[0], [(s[1], s[2], s[3]) for s in r[1]], r[2]) for r in records] == [
        (2.0, [(0, 3, 0), (0, 1, 3)], -1),
        (2.004, [(1, 2, 0)], 2),  # the queue ran dry 2 samples into this block
    ]
    assert not q.gate_open and q.current_item_id == "i2"
    assert q.last_audio_end == pytest.approx(2.006)


def test_queue_gap_is_detected_for_the_same_response_only():
    q = PcmQueue()
    out = np.zeros(4, np.int16)
    q.push(_chunk("r1", "i", [1, 2]))
    q.open_gate()
    q.pull(out, 0.0)  # runs dry inside r1
    assert q.push(_chunk("r1", "i", [3]))[1] is True
    q.open_gate()
    q.pull(out, 0.0)
    assert q.push(_chunk("r2", "j", [4]))[1] is False


def test_queue_drop_by_response_including_a_partly_played_chunk():
    q = PcmQueue()
    out = np.zeros(2, np.int16)
    q.push(_chunk("a", "i", [1, 2, 3, 4]))
    q.push(_chunk("a", "i", [5, 6]))
    q.push(_chunk("b", "j", [7, 8]))
    q.open_gate()
    q.pull(out, 0.0)
    assert q.drop("a") == (4, 1, {"a"})
    assert q.queued_frames == 2
    q.pull(out, 0.0)
    assert out.tolist() == [7, 8]
    q.push(_chunk("c", "k", [9]))
    assert q.drop()[0] == 1 and not q.gate_open


# ---- deltas --------------------------------------------------------------------------------
def test_decode_pcm():
    pcm = np.array([1, -2, 32767], "<i2")
    assert decode_pcm(base64.b64encode(pcm.tobytes()).decode()).tolist() == [1, -2, 32767]
    assert decode_pcm(pcm.tobytes()).tolist() == [1, -2, 32767]
    for bad in ["***", "AAA", "", b"", b"\x00", base64.b64encode(b"\x00\x01\x02").decode(), 12]:
        with pytest.raises(BadAudio):
            decode_pcm(bad)
    assert issubclass(BadAudio, ValueError)


# ---- disabled and fallback paths -----------------------------------------------------------
async def test_no_portaudio_disables_audio(monkeypatch, caplog):
    def missing():
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(device_mod, "_import_sounddevice", missing)
    p = AudioPlayer(parse_audio_config({"retry_seconds": 1}))
    await p.start()
    h = p.health()
    assert h["state"] == "disabled" and "libportaudio2" in h["reason"]
    assert sum("PortAudio" in r.getMessage() for r in caplog.records) == 1
    p.feed(base64.b64encode(b"\x01\x00" * 10).decode(), response_id="r", item_id="i")
    with pytest.raises(BadAudio):
        p.feed("!!", response_id="r", item_id="i")
    p.flush()
    assert p.health()["dropped_deltas"] == 1 and p.health()["rejected_deltas"] == 1
    assert not p.playing and p.played_ms("i") == 0
    await p.stop()


async def test_disabled_in_config_never_loads_portaudio(monkeypatch):
    monkeypatch.setattr(device_mod, "_import_sounddevice", lambda: pytest.fail("imported"))
    p = AudioPlayer(parse_audio_config({"enabled": False}))
    await p.start()
    assert p.health()["state"] == "disabled"
    p.feed(b"\x01\x00", response_id=None, item_id=None)
    assert p.health()["dropped_deltas"] == 1
    await p.stop()


class _FakeSd:
    """Just enough of sounddevice for what the test sink cannot do: a device that refuses
    24 kHz, PortAudio's device list frozen at initialisation, a device that hangs."""

    class PortAudioError(Exception):
        pass

    def __init__(self, rates=(48000,), devices=("fussy",), stream_cls=None):
        self.rates = rates
        self.opened = []
        self.kw = {}
        self.streams = []
        self.plugged = set(devices)  # what is connected
        self.visible = set(devices)  # what PortAudio listed when it was initialised
        self._initialized = 1
        self.calls = []  # "terminate"/"initialize", with whether a stream was open
        self.stream_cls = stream_cls or _FakeStream

    def _terminate(self):
        self.calls.append(("terminate", any(not st.closed for st in self.streams)))
        self._initialized -= 1

    def _initialize(self):
        self.calls.append(("initialize", any(not st.closed for st in self.streams)))
        self._initialized += 1
        self.visible = set(self.plugged)

    def query_devices(self, device, kind):
        name = "fussy" if device is None else device
        if name not in self.visible:
            raise ValueError(f"No output device matching {device!r}")
        return {"name": name, "default_samplerate": float(self.rates[-1]), "default_high_output_latency": 0.2}

    def OutputStream(self, samplerate, **kw):
        if samplerate not in self.rates:
            raise self.PortAudioError("Invalid sample rate")
        self.opened.append((samplerate, kw["blocksize"]))
        self.kw = kw
        st = self.stream_cls()
        self.streams.append(st)
        return st


class _FakeStream:
    time = 0.0

    def __init__(self):
        self.active = False
        self.closed = False
        self.starting = False
        self.closed_while_starting = False

    def start(self):
        self.starting = True
        self._starting()
        self.starting = False
        self.active = True

    def _starting(self):
        pass

    def abort(self):
        self.closed_while_starting |= self.starting
        self.active = False

    def close(self):
        self.closed = True


def _fake(monkeypatch, **kw) -> _FakeSd:
    fake = _FakeSd(**kw)
    monkeypatch.setattr(device_mod, "_import_sounddevice", lambda: fake)
    return fake


async def _until(cond, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


async def test_device_refusing_24k_gets_resampled_audio(monkeypatch):
    fake = _FakeSd()
    monkeypatch.setattr(device_mod, "_import_sounddevice", lambda: fake)
    p = AudioPlayer(parse_audio_config({}))
    await p.start()
    assert fake.opened == [(48000, 480)]
    assert p.health()["state"] == "ok" and p.health()["sample_rate"] == 48000
    p.feed(np.arange(1, 2401, dtype="<i2").tobytes(), response_id="r", item_id="i")
    assert p._queue.queued_frames == 4798  # doubled, less the outputs of the held-back last sample
    await p.stop()


async def test_flush_all_drops_queued_and_late_deltas_then_a_new_response_queues(monkeypatch):
    monkeypatch.setattr(device_mod, "_import_sounddevice", lambda: _FakeSd())
    closed = []
    p = AudioPlayer(parse_audio_config({"jitter_ms": 50}), on_level=closed.append)
    await p.start()
    delta = np.arange(1, 481, dtype="<i2").tobytes()
    for _ in range(3):
        p.feed(delta, response_id="resp_1", item_id="item_1")
    assert p.playing and p._queue.queued_frames == 3 * 960 - 2
    p.flush()
    assert not p.playing and p._queue.queued_frames == 0
    assert p.health()["dropped_deltas"] == 3
    p.feed(delta, response_id="resp_1", item_id="item_1")  # late delta of the cancelled response
    assert p._queue.queued_frames == 0 and p.health()["dropped_deltas"] == 4
    p.feed(delta, response_id="resp_2", item_id="item_2")
    assert p._queue.queued_frames == 958  # a fresh resampler: no state from resp_1
    assert p.health()["underruns"] == 0
    await p.stop()


# ---- review fixes --------------------------------------------------------------------------
_DELTA = np.arange(1, 481, dtype="<i2").tobytes()


async def test_flush_all_also_marks_a_response_whose_audio_has_not_arrived(monkeypatch):
    # barge-in before the interrupted response's first delta: its later deltas must not play
    _fake(monkeypatch, rates=(24000,))
    p = AudioPlayer(parse_audio_config({}))
    await p.start()
    p.feed(_DELTA, response_id="resp_1", item_id="item_1")
    p.flush(None, also="resp_2")
    p.feed(_DELTA, response_id="resp_2", item_id="item_2")  # resp_2's first delta, after the barge-in
    p.feed(_DELTA, response_id="resp_1", item_id="item_1")
    assert p._queue.queued_frames == 0 and p.health()["dropped_deltas"] == 3
    p.flush(None)  # without also: a response never seen is not marked
    p.feed(_DELTA, response_id="resp_3", item_id="item_3")
    assert p._queue.queued_frames == 480
    p.flush("resp_4", also="resp_5")
    p.feed(_DELTA, response_id="resp_5", item_id="item_5")
    assert p._queue.queued_frames == 480
    await p.stop()


async def test_mouth_gain_scales_levels_and_clamps_at_one(monkeypatch):
    _fake(monkeypatch, rates=(24000,))
    for gain, expected in ((4.0, [0.4, 1.0]), (1.0, [0.1, 0.5])):
        p = AudioPlayer(parse_audio_config({"mouth_gain": gain}))
        await p.start()
        pcm = np.concatenate([np.full(480, 3277, np.int16), np.full(480, -16384, np.int16)])  # -20 dBFS, -6 dBFS
        p.feed(pcm.tobytes(), response_id="r", item_id="i")
        levels = p._queue._chunks[0].env_lvl.tolist()
        assert levels == pytest.approx(expected, abs=1e-3)
        await p.stop()


async def test_queue_is_capped_at_120_seconds_and_overflow_counted(monkeypatch, caplog):
    from ticos_agent.audio import player as player_mod

    assert player_mod.MAX_QUEUED_SECONDS <= 120
    _fake(monkeypatch, rates=(24000,))
    p = AudioPlayer(parse_audio_config({}))
    await p.start()
    second = np.ones(24000, "<i2").tobytes()
    for _ in range(122):
        p.feed(second, response_id="r", item_id="i")
    h = p.health()
    assert p._queue.queued_frames == 120 * 24000
    assert h["overflow_deltas"] == 2 and h["dropped_deltas"] == 2
    assert sum("dropping deltas" in r.getMessage() for r in caplog.records) == 1
    await p.stop()


def test_high_latency_is_capped_for_a_50ms_flush():
    from ticos_agent.audio.config import MAX_LATENCY_SECONDS

    assert MAX_LATENCY_SECONDS + device_mod.BLOCK_SECONDS <= 0.050
    high = parse_audio_config({"latency": "high"})
    assert device_mod.output_latency({"default_high_output_latency": 0.5}, high) == MAX_LATENCY_SECONDS
    assert device_mod.output_latency({"default_high_output_latency": 0.0348}, high) == 0.0348
    assert device_mod.output_latency({}, high) == MAX_LATENCY_SECONDS
    assert device_mod.output_latency({}, parse_audio_config({})) == "low"
    assert device_mod.output_latency({}, parse_audio_config({"latency": 0.02})) == 0.02


async def test_stream_is_opened_with_the_capped_latency(monkeypatch):
    fake = _fake(monkeypatch, rates=(24000,))
    p = AudioPlayer(parse_audio_config({"latency": "high"}))
    await p.start()
    assert fake.kw["latency"] == 0.04  # the fake device says 0.2 s
    await p.stop()


async def test_retry_reinitialises_portaudio_and_finds_a_device_plugged_in_later(monkeypatch):
    fake = _fake(monkeypatch, rates=(24000,), devices=())
    p = AudioPlayer(parse_audio_config({"device": "usb-speaker", "retry_seconds": 0.02}))
    await p.start()
    assert p.health()["state"] == "retrying" and fake.calls == []  # the first open does not re-init
    fake.plugged.add("usb-speaker")
    await _until(lambda: p.health()["state"] == "ok")
    assert p.health()["device"] == "usb-speaker"
    assert fake.calls and fake.calls[-2:] == [("terminate", False), ("initialize", False)]
    assert p.portaudio_reinits >= 1 and fake._initialized == 1
    n = len(fake.calls)
    p._reinit_portaudio()  # a stream is open: never re-initialised under it
    assert len(fake.calls) == n
    await p.stop()


async def test_portaudio_is_never_reinitialised_while_file_descriptors_run_short(monkeypatch):
    """PortAudio's ALSA scan aborts the process when it runs out of descriptors: never start it then."""
    import os
    import resource

    fake = _fake(monkeypatch, rates=(24000,), devices=())
    p = AudioPlayer(parse_audio_config({"device": "usb-speaker", "retry_seconds": 0.02}))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 100, hard))
    try:
        await p.start()
        await _until(lambda: p.portaudio_reinits_skipped >= 2)
        assert fake.calls == [] and p.portaudio_reinits == 0 and p.health()["state"] == "retrying"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    fake.plugged.add("usb-speaker")  # descriptors are back: the next retry rescans and finds it
    await _until(lambda: p.health()["state"] == "ok")
    assert p.portaudio_reinits >= 1
    await p.stop()


async def test_rescan_devices_false_never_restarts_portaudio(monkeypatch):
    """An integrator whose program uses sounddevice too keeps its own streams alive."""
    fake = _fake(monkeypatch, rates=(24000,), devices=())
    p = AudioPlayer(parse_audio_config({"device": "usb-speaker", "retry_seconds": 0.02, "rescan_devices": False}))
    await p.start()
    await asyncio.sleep(0.15)  # several retries
    assert p.health()["state"] == "retrying" and fake.calls == [] and p.portaudio_reinits == 0
    await p.stop()


async def test_reinit_failure_is_retried_without_terminating_twice(monkeypatch):
    fake = _fake(monkeypatch, rates=(24000,), devices=())
    failing = {"n": 2}
    orig = fake._initialize

    def flaky():
        if failing["n"]:
            failing["n"] -= 1
            raise fake.PortAudioError("Error initializing PortAudio")
        orig()

    fake._initialize = flaky
    p = AudioPlayer(parse_audio_config({"device": "usb-speaker", "retry_seconds": 0.02}))
    await p.start()
    fake.plugged.add("usb-speaker")
    await _until(lambda: p.health()["state"] == "ok")
    assert [c for c, _open in fake.calls].count("terminate") == 1 and fake._initialized == 1
    await p.stop()


class _SlowStart(_FakeStream):
    entered = None
    release = None

    def _starting(self):
        self.entered.set()
        self.release.wait(5)


async def test_stop_during_stream_start_waits_and_closes_it_once(monkeypatch):
    import threading

    _SlowStart.entered, _SlowStart.release = threading.Event(), threading.Event()
    fake = _fake(monkeypatch, rates=(24000,), stream_cls=_SlowStart)
    p = AudioPlayer(parse_audio_config({}))
    starting = asyncio.ensure_future(p.start())
    await asyncio.to_thread(_SlowStart.entered.wait, 5)
    stopping = asyncio.ensure_future(p.stop())
    await asyncio.sleep(0.05)  # stop() must not close the stream while it is being started
    threading.Timer(0.05, _SlowStart.release.set).start()
    await asyncio.wait_for(asyncio.gather(starting, stopping), 5)
    [stream] = fake.streams
    assert stream.closed and not stream.closed_while_starting
    assert p._stream is None and p.health()["state"] == "idle"


class _SlowOpenSd(_FakeSd):
    def __init__(self, **kw):
        import threading

        super().__init__(**kw)
        self.entered, self.release = threading.Event(), threading.Event()

    def OutputStream(self, samplerate, **kw):
        self.entered.set()
        self.release.wait(5)
        return super().OutputStream(samplerate, **kw)


async def test_stop_while_opening_leaks_no_stream_and_starts_no_retry(monkeypatch):
    fake = _SlowOpenSd(rates=(24000,))
    monkeypatch.setattr(device_mod, "_import_sounddevice", lambda: fake)
    p = AudioPlayer(parse_audio_config({"retry_seconds": 0.01}))
    starting = asyncio.ensure_future(p.start())
    await asyncio.to_thread(fake.entered.wait, 5)
    await p.stop()
    fake.release.set()
    await asyncio.wait_for(starting, 5)
    await asyncio.sleep(0.05)
    [stream] = fake.streams
    assert stream.closed and not stream.active and p._stream is None
    assert p.health()["state"] == "idle" and (p._task is None or p._task.done())


async def test_stream_stopping_keeps_a_reference_to_the_failure_task(monkeypatch):
    fake = _fake(monkeypatch, rates=(24000,))
    p = AudioPlayer(parse_audio_config({"retry_seconds": 0.02}))
    await p.start()
    fake.streams[0].active = False  # PortAudio's finished callback: the stream stopped
    p._on_finished()
    assert p._task is not None and p._task.get_coro().__name__ == "_fail"
    await _until(lambda: p.health()["state"] == "ok" and len(fake.streams) == 2)
    assert fake.streams[0].closed
    await p.stop()


class _HangingClose(_FakeStream):
    release = None

    def close(self):
        self.release.wait(5)
        super().close()


async def test_device_hanging_on_close_leaves_ok_at_once_and_queues_nothing(monkeypatch):
    import threading

    from ticos_agent.audio import stream as stream_mod

    monkeypatch.setattr(stream_mod, "CLOSE_TIMEOUT", 0.05)
    _HangingClose.release = threading.Event()
    fake = _fake(monkeypatch, rates=(24000,), stream_cls=_HangingClose)
    p = AudioPlayer(parse_audio_config({"retry_seconds": 0.02}))
    await p.start()
    p.feed(_DELTA, response_id="r", item_id="i")
    fake.streams[0].active = False
    p._on_finished()
    await asyncio.sleep(0)  # the failure task runs up to the (hanging) close
    assert p.health()["state"] == "retrying"
    p.feed(_DELTA, response_id="r2", item_id="i2")
    assert p._queue.queued_frames == 0
    await asyncio.sleep(0.2)  # retries run while the old stream is still closing...
    assert all(c != "terminate" for c, _ in fake.calls)  # ...but PortAudio is not re-initialised
    _HangingClose.release.set()
    await _until(lambda: p.health()["state"] == "ok")
    await p.stop()
