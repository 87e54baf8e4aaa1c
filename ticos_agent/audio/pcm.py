"""Audio deltas as samples: base64 or raw bytes -> int16 PCM, rejecting what is not PCM16."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from ..errors import BadAudio


def decode_pcm(audio: str | bytes) -> np.ndarray:
    """A delta (base64 ``str`` or raw ``bytes``) as int16 samples; raises BadAudio."""
    if isinstance(audio, str):
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadAudio(f"audio delta is not base64: {exc}") from None
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        raw = bytes(audio)
    else:
        raise BadAudio(f"audio delta must be base64 text or bytes, not {type(audio).__name__}")
    if not raw:
        raise BadAudio("audio delta is empty")
    if len(raw) % 2:
        raise BadAudio(f"audio delta has an odd byte count ({len(raw)}); PCM16 needs whole samples")
    return np.frombuffer(raw, dtype="<i2")
