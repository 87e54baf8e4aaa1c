"""Delta-to-sound latency, flush-to-silence time and underruns of the real AudioPlayer.

    .venv/bin/python bench/audio_latency.py                 # ALSA file sink, paced to real time
    .venv/bin/python bench/audio_latency.py --sink device   # the real default output device
    .venv/bin/python bench/audio_latency.py --flood 0       # without the busy event loop

What it does: plays ``--responses`` assistant responses through ``AudioPlayer`` (real
sounddevice/PortAudio). Each response arrives as deltas of 20-120 ms of audio at about 1.3x
real time with random arrival jitter, after an idle pause (so every response starts on an
idle player); every fourth response is interrupted by a barge-in ``flush()``. Meanwhile a
"flood" task keeps the event loop busy the way a socket full of other events would: bursts
of JSON decoding of realtime-shaped frames (``--flood`` frames per second).

Measured:

* delta-to-sound: from ``feed()`` of a response's first delta to the DAC time of its first
  sample (the player's ``start_latencies``; on the ALSA null sink the DAC time is the
  callback time, so this is delta-to-callback). Goal: p99 under 60 ms.
* flush-to-silence: from ``flush()`` to the DAC time of the first output block produced
  after it (that block no longer carries the flushed audio). Goal: under 50 ms.
* the stream's output latency as PortAudio reports it: what the device holds beyond the
  callback, so the real flush-to-silence is at most the figure above plus this (the config
  caps the latency at 0.04 s; ``--latency high`` shows the cap at work).
* underruns (gaps inside a response), PortAudio's own output underflows, lip-sync levels
  delivered and dropped as late.

With ``--sink file`` (default) the output is ALSA's ``file`` plugin over the ``null`` PCM,
which consumes ~400x faster than real time, so the callback is paced to real time (it sleeps
after each block); ``--no-pace`` turns that off (underruns then mean nothing). The ALSA
config must be set before sounddevice is imported, which is why this script sets
``ALSA_CONFIG_PATH`` itself before anything imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def setup_file_sink(path: Path) -> None:
    conf = path.with_suffix(".conf")
    conf.write_text(
        "</usr/share/alsa/alsa.conf>\n"
        f'pcm.!default {{ type file; slave.pcm "null"; file "{path}"; format "raw" }}\n'
    )
    os.environ["ALSA_CONFIG_PATH"] = str(conf)


def instrument(player_cls, pace: bool, blocks: list) -> None:
    """Wrap the callback: record (monotonic time, DAC time) per block; pace to real time."""
    orig = player_cls._callback
    state = {"next": None}
    lock = threading.Lock()

    def wrapped(self, outdata, frames, time_info, status):
        dac = time_info.outputBufferDacTime or time_info.currentTime
        mono = time.monotonic()
        with lock:
            blocks.append((mono, dac))
            if len(blocks) > 4000:
                del blocks[:2000]
        orig(self, outdata, frames, time_info, status)
        if pace:
            now = time.monotonic()
            state["next"] = max(state["next"] or now, now - 0.05) + frames / self._rate
            time.sleep(max(0.0, state["next"] - now))

    player_cls._callback = wrapped


async def flood(rate: int, stop: asyncio.Event, counter: list) -> None:
    """Keep the loop busy: decode ``rate`` realtime-shaped JSON frames per second in bursts."""
    frame = json.dumps({
        "type": "response.audio_transcript.delta", "event_id": "event_1", "response_id": "resp_x",
        "item_id": "item_x", "output_index": 0, "content_index": 0, "delta": "some words " * 8,
    })
    burst = max(1, rate // 200)  # a burst every ~5 ms
    while not stop.is_set():
        t0 = time.perf_counter()
        for _ in range(burst):
            ev = json.loads(frame)
            ev["delta"].split()
        counter[0] += burst
        await asyncio.sleep(max(0.0, 0.005 - (time.perf_counter() - t0)))


async def run(args) -> dict:
    from ticos_agent.audio import AudioPlayer, parse_audio_config

    blocks: list = []
    instrument(AudioPlayer, pace=args.sink == "file" and not args.no_pace, blocks=blocks)
    levels = []
    cfg = {"jitter_ms": args.jitter_ms, "retry_seconds": 0,
           "latency": float(args.latency) if args.latency not in ("low", "high") else args.latency}
    if args.device:
        cfg["device"] = args.device
    player = AudioPlayer(parse_audio_config(cfg), on_level=levels.append)
    await player.start()
    if player.health()["state"] != "ok":
        raise SystemExit(f"audio not available: {player.health()}")
    stop, frames_decoded = asyncio.Event(), [0]
    flooder = asyncio.create_task(flood(args.flood, stop, frames_decoded)) if args.flood else None
    rng = random.Random(1)
    t = np.arange(24000 * 4) / 24000
    voice = (6000 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)
    flushes = []
    loop = asyncio.get_running_loop()
    for r in range(args.responses):
        await asyncio.sleep(rng.uniform(0.15, 0.35))  # idle between responses
        total = rng.randint(24000 // 2, 24000 * 2)  # 0.5-2 s of speech
        barge = r % 4 == 3
        pos, t0 = 0, loop.time()
        while pos < total:
            n = min(total - pos, rng.randint(480, 2880))
            player.feed(base64.b64encode(voice[pos : pos + n].tobytes()).decode(),
                        response_id=f"resp_{r}", item_id=f"item_{r}")
            pos += n
            # arrival at ~1.3x real time with jitter
            due = t0 + pos / 24000 / 1.3 + rng.uniform(-0.02, 0.02)
            await asyncio.sleep(max(0.0, due - loop.time()))
            if barge and pos > total // 2:
                tf = time.monotonic()
                player.flush(f"resp_{r}")
                flushes.append(tf)
                break
        while player.playing:
            await asyncio.sleep(0.01)
    stop.set()
    if flooder:
        await flooder
    stats = player.envelope_stats
    health = player.health()
    out_latency = player._stream.latency if player._stream is not None else float("nan")
    await player.stop()
    # flush-to-silence: DAC time of the first block whose callback started after the flush
    silence = []
    mono_to_dac = [(m, d) for m, d in blocks]
    for tf in flushes:
        after = [(m, d) for m, d in mono_to_dac if m >= tf]
        if after:
            m, d = after[0]
            silence.append((d - m) + (m - tf))  # device latency + wait for the next block
    lat = [x * 1000 for x in player.start_latencies]
    return {
        "responses": args.responses,
        "frames_decoded_per_s": args.flood,
        "delta_to_sound_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat) if lat else None,
                              "n": len(lat)},
        "flush_to_silence_ms": {"p50": percentile([s * 1000 for s in silence], 50),
                                "max": max(silence) * 1000 if silence else None, "n": len(silence)},
        "output_latency_ms": out_latency * 1000,
        "underruns": health["underruns"],
        "device_underflows": player.device_underflows,
        "levels": stats,
        "health": health,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sink", choices=("file", "device"), default="file")
    ap.add_argument("--device", default="", help="output device for --sink device")
    ap.add_argument("--responses", type=int, default=24)
    ap.add_argument("--flood", type=int, default=20000, help="JSON frames per second decoded on the loop (0: none)")
    ap.add_argument("--jitter-ms", type=int, default=30)
    ap.add_argument("--latency", default="low", help='"low", "high" or seconds (<= 0.04)')
    ap.add_argument("--no-pace", action="store_true", help="file sink: do not pace the callback to real time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.sink == "file":
            setup_file_sink(Path(tmp) / "played.raw")
        result = asyncio.run(run(args))
    d, f = result["delta_to_sound_ms"], result["flush_to_silence_ms"]
    print(f"sink={args.sink} responses={result['responses']} flood={result['frames_decoded_per_s']} frames/s")
    print(f"delta-to-sound ms: p50={d['p50']:.1f} p99={d['p99']:.1f} max={d['max']:.1f} (n={d['n']})")
    print(f"flush-to-silence ms: p50={f['p50']:.1f} max={f['max']:.1f} (n={f['n']}); "
          f"+ output latency {result['output_latency_ms']:.1f} ms held by the device")
    print(f"underruns={result['underruns']} device_underflows={result['device_underflows']} "
          f"levels delivered={result['levels']['delivered']} dropped_late={result['levels']['dropped_late']}")
    print(json.dumps(result["health"]))


if __name__ == "__main__":
    main()
