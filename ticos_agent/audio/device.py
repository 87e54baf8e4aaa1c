"""Finding and opening the PortAudio output device (sounddevice), and nothing else.

sounddevice initialises PortAudio when it is imported, so it is imported here, lazily, the
first time a player starts; importing :mod:`ticos_agent.audio` never needs PortAudio.
These functions block (ALSA can take tens of milliseconds to open a device): the player
calls them in a worker thread.
"""

from __future__ import annotations

import os

from .config import MAX_LATENCY_SECONDS, SOURCE_RATE, AudioConfig

BLOCK_SECONDS = 0.010  # PortAudio block: how often the callback looks at the queue


class NoPortAudio(Exception):
    """The PortAudio library (Debian ``libportaudio2``) or sounddevice cannot be loaded."""


def _import_sounddevice():
    """Import sounddevice (this initialises PortAudio); a seam for tests."""
    import sounddevice

    return sounddevice


def load_portaudio():
    """The sounddevice module; raises :class:`NoPortAudio` with an install hint."""
    try:
        return _import_sounddevice()
    except (OSError, ImportError) as exc:
        raise NoPortAudio(f"PortAudio is not available ({exc}); install libportaudio2") from None


#: PortAudio is never re-initialised with fewer free file descriptors than this: its ALSA
#: device scan opens many, and when it runs out it aborts the whole process
#: (``BuildDeviceList: Assertion``), which no Python code can catch.
MIN_FREE_FDS = 256


def free_fds() -> int | None:
    """File descriptors this process may still open (``None`` when it cannot tell)."""
    import resource

    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return None
    return soft - used if soft != resource.RLIM_INFINITY else None


def reinit_portaudio(sd) -> None:
    """Terminate and initialise PortAudio again, so its device list is read afresh.

    PortAudio builds its device list once, in ``Pa_Initialize`` (sounddevice issues #47,
    #125): without this a device plugged in (or an ALSA config changed) after start is
    never found. The caller guarantees that no stream is open or closing. Uses
    sounddevice's ``_terminate``/``_initialize`` (private, present since 0.3); when a
    previous attempt left PortAudio terminated, it is only initialised.
    """
    if getattr(sd, "_initialized", 1) > 0:
        sd._terminate()
    sd._initialize()


def output_latency(info: dict, config: AudioConfig) -> str | float:
    """The latency to ask PortAudio for: ``"high"`` becomes the device's high latency capped
    at :data:`MAX_LATENCY_SECONDS` (numbers are capped by the config already)."""
    if config.latency == "high":
        high = info.get("default_high_output_latency")
        if isinstance(high, (int, float)) and high > 0:
            return min(float(high), MAX_LATENCY_SECONDS)
        return MAX_LATENCY_SECONDS
    return config.latency


def open_output(sd, config: AudioConfig, callback, finished_callback):
    """Open (not start) a mono int16 output stream on the configured device.

    Rate: ``config.sample_rate`` when set; otherwise 24000 and, if the device refuses it, the
    device's default rate (the player then resamples). Returns ``(stream, rate, device
    name)``. Raises ``ValueError`` when the device does not exist, ``sd.PortAudioError``
    when it cannot be opened.
    """
    info = sd.query_devices(config.device, "output")  # ValueError when missing
    rates = [config.sample_rate] if config.sample_rate else [SOURCE_RATE]
    default_rate = int(info["default_samplerate"])
    if not config.sample_rate and default_rate != SOURCE_RATE:
        rates.append(default_rate)
    latency = output_latency(info, config)
    error: Exception | None = None
    for rate in rates:
        try:
            stream = sd.OutputStream(
                samplerate=rate,
                blocksize=int(rate * BLOCK_SECONDS),
                device=config.device,
                channels=1,
                dtype="int16",
                latency=latency,
                callback=callback,
                finished_callback=finished_callback,
            )
        except sd.PortAudioError as exc:
            error = exc
            continue
        return stream, rate, str(info["name"])
    raise error  # type: ignore[misc]


def close_output(stream) -> None:
    """Abort (drop what PortAudio holds) and close a stream."""
    try:
        stream.abort()
    finally:
        stream.close()
