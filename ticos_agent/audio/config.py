"""The ``[audio]`` table of the TOML config, validated into an :class:`AudioConfig`.

Every key is optional (``ticos-agent config --example`` lists them with their defaults); the
declarations on :class:`AudioConfig` are the only place a default is written. What needs
more than one line:

``device``: the PortAudio output device: ``""`` is the system default, a name matches as a
substring (as sounddevice does), a number (or a string of digits) is a device index.

``sample_rate``: 0 tries 24000 (the voice agent's rate) and falls back to the device's default
rate, resampling with numpy.

``jitter_ms``: the pre-buffer of an idle player: output of a new response starts when this much
audio is queued OR this much wall time has passed since its first delta, whichever comes
first. The default keeps the delta-to-sound path of a small first delta under 60 ms: pre-buffer
+ one 10 ms output block + PortAudio's "low" latency (~9 ms on ALSA).

``rescan_devices``: before a retry (every ``retry_seconds``; 0 gives up), PortAudio is restarted
so a device plugged in later is found; this stops every PortAudio stream of the process, so set
it false when your own program also uses sounddevice.

``mouth_gain``: lip-sync level = ``min(1, RMS / 32768 * mouth_gain)``. Speech at about -20 dBFS
RMS (0.1) opens the mouth to 0.4 at the default 4; loud speech (-12 dBFS and up) opens it
fully. 1.0 gives the raw RMS.

Latency cap: a barge-in flush must silence the speaker within 50 ms, but the flush can only
empty the player's own queue; whatever PortAudio and ALSA already hold keeps playing. That
is one 10 ms block plus about the stream's output latency, so ``latency`` is capped at
``MAX_LATENCY_SECONDS`` (0.04 s): a larger number is a ConfigError, and ``"high"`` opens the
device at ``min(its default high latency, 0.04 s)`` (ALSA hw devices report ~0.035 s).

Every error is a :class:`~ticos_agent.errors.ConfigError` naming the full dotted key
(``audio.volume``), the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..options import (
    Boolean,
    Choice,
    Duration,
    Errors,
    Float,
    Integer,
    Invalid,
    OneOf,
    Option,
    dump_table,
    parse_table,
    schema_of,
    setting,
)

SOURCE_RATE = 24000
"""Sample rate of the realtime audio deltas (PCM16 little-endian mono)."""

MAX_LATENCY_SECONDS = 0.04
"""Largest output latency accepted: 10 ms block + 40 ms device buffer = the 50 ms flush goal."""


class OutputDevice(Option):
    """A PortAudio output device: ``""`` (the default, as ``None``), a name, or an index."""

    expected = 'a device name, an index >= 0, or "" for the default'

    def convert(self, value: Any) -> str | int | None:
        if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, int) and value < 0):
            raise Invalid
        if isinstance(value, str):
            value = value.strip()
            if value.isascii() and value.isdigit():  # "²".isdigit() is true too
                return int(value)
            return value or None
        return value

    def dump(self, value: Any) -> Any:
        return "" if value is None else value


@dataclass(frozen=True)
class AudioConfig:
    """``[audio]``: playback of the assistant's voice (see the module docstring for what needs more than a line)."""

    enabled: bool = setting(Boolean(True, "false: audio deltas are accepted and discarded (counted)"))
    device: str | int | None = setting(OutputDevice("", 'PortAudio output device: "" = system default, '
                                                        'a name or an index'))
    sample_rate: int = setting(Integer(0, "output rate in Hz (0: 24000 if the device takes it, else its default rate)",
                                       minimum=8000, maximum=192000, also={0: "automatic"}))
    latency: str | float = setting(OneOf(
        [Choice(("low", "high")),
         Duration(minimum=0, maximum=MAX_LATENCY_SECONDS, exclusive_minimum=True)],
        "low", "PortAudio output latency (capped at 0.04 s so a barge-in is silent within 50 ms)"))
    volume: float = setting(Float(1.0, "gain applied to the PCM (1.0 = bit-exact)", minimum=0, maximum=1))
    jitter_ms: int = setting(Integer(30, "pre-buffer of a new response, milliseconds", minimum=0, maximum=200))
    send_truncate: bool = setting(Boolean(False, "after a barge-in, send conversation.item.truncate "
                                                 "with the ms played"))
    retry_seconds: float = setting(Duration(10.0, "retry a missing or failed device this often (0: give up)",
                                            minimum=0, maximum=3600))
    mouth_gain: float = setting(Float(4.0, "lip-sync level = min(1, RMS / 32768 * mouth_gain)",
                                      minimum=0.1, maximum=100))
    rescan_devices: bool = setting(Boolean(True, "restart PortAudio before a retry so a device plugged in later "
                                                 "is found"))

    def as_dict(self) -> dict[str, Any]:
        """The effective config as plain TOML data (``device`` None is shown as ``""``)."""
        return dump_table(self, schema_of(AudioConfig))


def parse_audio(section: Any, errors: Errors) -> AudioConfig:
    """Check the ``[audio]`` table (``{}`` when absent), reporting every problem into ``errors``."""
    return AudioConfig(**parse_table("audio", section, schema_of(AudioConfig), errors))


def parse_audio_config(section: dict[str, Any]) -> AudioConfig:
    """Validate the ``[audio]`` table (``{}`` when absent) into an :class:`AudioConfig`.

    Raises :class:`~ticos_agent.errors.ConfigErrors` (a ``ConfigError``) naming every problem.
    """
    errors = Errors()
    config = parse_audio(section, errors)
    errors.raise_if_any("[audio]")
    return config
