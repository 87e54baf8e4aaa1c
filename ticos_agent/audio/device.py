"""Finding and opening the PortAudio output device (sounddevice), and nothing else.

sounddevice initialises PortAudio when it is imported, so it is imported here, lazily, the
first time a player starts; importing :mod:`ticos_agent.audio` never needs PortAudio.
These functions block (ALSA can take tens of milliseconds to open a device): the player
calls them in a worker thread.
"""

from __future__ import annotations

from .config import SOURCE_RATE, AudioConfig

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
    error: Exception | None = None
    for rate in rates:
        try:
            stream = sd.OutputStream(
                samplerate=rate,
                blocksize=int(rate * BLOCK_SECONDS),
                device=config.device,
                channels=1,
                dtype="int16",
                latency=config.latency,
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
