"""The ``[audio]`` table of the TOML config, validated into an :class:`AudioConfig`.

Keys (all optional; an absent table is ``{}`` and gives the defaults)::

    [audio]
    enabled = true        # false: audio deltas are accepted and discarded (counted)
    device = ""           # PortAudio output device: "" = system default, a name
                          # (substring match, as sounddevice does) or an integer index
    sample_rate = 0       # output rate in Hz; 0 = try 24000 (the voice agent's rate) and
                          # fall back to the device's default rate, resampling with numpy
    latency = "low"       # "low", "high" or seconds (0 < s <= 0.04): PortAudio's suggested
                          # output latency; "high" is the device's high latency capped at
                          # 0.04 s (see "Latency cap" below)
    volume = 1.0          # 0..1, a gain applied to the PCM in numpy (1.0 = bit-exact)
    jitter_ms = 30        # pre-buffer of an idle player: output of a new response starts
                          # when this much audio is queued OR this much wall time has passed
                          # since its first delta, whichever comes first (0..200)
    send_truncate = false # after a barge-in, send conversation.item.truncate with the
                          # milliseconds actually played (done by the agent core)
    retry_seconds = 10    # when the device is missing or fails: retry this often
    rescan_devices = true # before a retry, restart PortAudio so a device plugged in later is
                          # found; this stops every PortAudio stream of the process, so set it
                          # false when your own program also uses sounddevice
                          # (0 = give up, audio stays disabled); PortAudio is re-initialised
                          # before each retry, so a device plugged in after start is found
    mouth_gain = 4.0      # lip-sync level = min(1, RMS / 32768 * mouth_gain) (0.1..100).
                          # Speech at about -20 dBFS RMS (0.1) opens the mouth to 0.4; loud
                          # speech (-12 dBFS and up) opens it fully. 1.0 gives the raw RMS.

The default ``jitter_ms`` of 30 keeps the delta-to-sound path of a small first delta under
60 ms: 30 ms pre-buffer + one 10 ms output block + PortAudio's "low" latency (~9 ms on ALSA).

Latency cap: a barge-in flush must silence the speaker within 50 ms, but the flush can only
empty the player's own queue; whatever PortAudio and ALSA already hold keeps playing. That
is one 10 ms block plus about the stream's output latency, so the latency is capped at
``MAX_LATENCY_SECONDS`` (0.04 s): a larger number is a ConfigError, and ``"high"`` opens the
device at ``min(its default high latency, 0.04 s)`` (ALSA hw devices report ~0.035 s).

Every error is a :class:`~ticos_agent.errors.ConfigError` naming the full dotted key
(``audio.volume``), the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

SOURCE_RATE = 24000
"""Sample rate of the realtime audio deltas (PCM16 little-endian mono)."""

MAX_LATENCY_SECONDS = 0.04
"""Largest output latency accepted: 10 ms block + 40 ms device buffer = the 50 ms flush goal."""

_KEYS = ("enabled", "device", "sample_rate", "latency", "volume", "jitter_ms", "send_truncate", "retry_seconds",
         "mouth_gain", "rescan_devices")
_LATENCY_ALLOWED = '"low", "high" or seconds (0 < s <= 0.04: a barge-in must be silent within 50 ms)'



@dataclass(frozen=True)
class AudioConfig:
    """Effective audio settings (see the module docstring for each key's meaning)."""

    enabled: bool = True
    device: str | int | None = None
    sample_rate: int = 0
    latency: str | float = "low"
    volume: float = 1.0
    jitter_ms: int = 30
    send_truncate: bool = False
    retry_seconds: float = 10.0
    mouth_gain: float = 4.0
    rescan_devices: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The effective config as plain data (``device`` None is shown as ``""``)."""
        return {
            "enabled": self.enabled,
            "device": "" if self.device is None else self.device,
            "sample_rate": self.sample_rate,
            "latency": self.latency,
            "volume": self.volume,
            "jitter_ms": self.jitter_ms,
            "send_truncate": self.send_truncate,
            "retry_seconds": self.retry_seconds,
            "mouth_gain": self.mouth_gain,
            "rescan_devices": self.rescan_devices,
        }


def _bool(section: dict, key: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"audio.{key}", value, "true or false")
    return value


def _number(section: dict, key: str, default: float, lo: float, hi: float, expected: str) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"audio.{key}", value, expected)
    return value


def parse_audio_config(section: dict) -> AudioConfig:
    """Validate the ``[audio]`` table (``{}`` when absent) into an :class:`AudioConfig`.

    Raises :class:`~ticos_agent.errors.ConfigError` for an unknown key or a bad value.
    """
    if not isinstance(section, dict):
        raise ConfigError("audio", section, "a table")
    for key in section:
        if key not in _KEYS:
            raise ConfigError(f"audio.{key}", section[key], "one of the keys " + ", ".join(_KEYS))

    device: str | int | None = section.get("device", "")
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise ConfigError("audio.device", device, 'a device name, an index, or "" for the default')
    if isinstance(device, int) and device < 0:
        raise ConfigError("audio.device", device, "an index >= 0")
    if isinstance(device, str):
        device = device.strip()
        if device.isdigit():
            device = int(device)
        elif device == "":
            device = None

    rate = section.get("sample_rate", 0)
    if isinstance(rate, bool) or not isinstance(rate, int) or not (rate == 0 or 8000 <= rate <= 192000):
        raise ConfigError("audio.sample_rate", rate, "0 (automatic) or an integer from 8000 to 192000")

    latency = section.get("latency", "low")
    if isinstance(latency, str):
        if latency not in ("low", "high"):
            raise ConfigError("audio.latency", latency, _LATENCY_ALLOWED)
    elif isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 < latency <= MAX_LATENCY_SECONDS:
        raise ConfigError("audio.latency", latency, _LATENCY_ALLOWED)
    else:
        latency = float(latency)

    jitter = _number(section, "jitter_ms", 30, 0, 200, "an integer number of milliseconds from 0 to 200")
    if not isinstance(jitter, int):
        raise ConfigError("audio.jitter_ms", jitter, "an integer number of milliseconds from 0 to 200")

    return AudioConfig(
        enabled=_bool(section, "enabled", True),
        device=device,
        sample_rate=rate,
        latency=latency,
        volume=float(_number(section, "volume", 1.0, 0.0, 1.0, "a number from 0 to 1")),
        jitter_ms=jitter,
        send_truncate=_bool(section, "send_truncate", False),
        retry_seconds=float(_number(section, "retry_seconds", 10.0, 0, 3600, "seconds from 0 (never) to 3600")),
        mouth_gain=float(_number(section, "mouth_gain", 4.0, 0.1, 100, "a number from 0.1 to 100")),
        rescan_devices=_bool(section, "rescan_devices", True),
    )
