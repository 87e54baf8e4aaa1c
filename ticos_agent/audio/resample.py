"""Sample maths in numpy: streaming rate conversion and volume.

The voice agent sends PCM16 mono at 24 kHz. When the output device refuses 24 kHz the
player opens it at the device's own rate and converts each delta with a
:class:`StreamResampler` kept per response, so the deltas of one response join without
clicks: the output of a resampler fed chunk by chunk is *identical* to the output of
:func:`resample` on the whole signal (the positions are exact integer fractions, never an
accumulated float).

The method is linear interpolation: output sample ``j`` lies at input position
``j * in_rate / out_rate``. It is cheap (a Pi Zero 2 W converts a second of speech in well
under a millisecond) and good enough for speech; it is not a band-limited resampler.
"""

from __future__ import annotations

import math

import numpy as np


class StreamResampler:
    """Linear-interpolation resampler for one continuous PCM16 stream.

    Each output sample needs the input sample after its position, so the stream's output
    trails its input by at most one input sample (a 24 kHz -> 48 kHz stream holds back
    under 0.05 ms of audio, dropped at the end of a response).
    """

    def __init__(self, in_rate: int, out_rate: int):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        g = math.gcd(in_rate, out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._num = in_rate // g  # input position of output j is j * _num / _den
        self._den = out_rate // g
        self._produced = 0  # output samples produced so far
        self._consumed = 0  # input samples seen so far
        self._tail = np.zeros(0, dtype=np.float64)  # the last input sample (global index _consumed-1)

    @property
    def identity(self) -> bool:
        return self._num == self._den

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Convert the next chunk (int16) of the stream; returns int16 at ``out_rate``."""
        if self.identity:
            return pcm
        x = pcm.astype(np.float64)
        buf = np.concatenate((self._tail, x)) if self._tail.size else x
        first = self._consumed - self._tail.size  # global index of buf[0]
        total = self._consumed + x.size  # inputs available: global [0, total)
        # output j is ready when floor(j*num/den) + 1 <= total - 1
        last_j = ((total - 1) * self._den - 1) // self._num  # largest j with j*num < (total-1)*den
        j = np.arange(self._produced, last_j + 1, dtype=np.int64)
        pos = j * self._num
        i = pos // self._den
        frac = (pos - i * self._den) / self._den
        i -= first
        y = buf[i] * (1.0 - frac) + buf[i + 1] * frac
        self._produced = last_j + 1 if last_j + 1 > self._produced else self._produced
        self._consumed = total
        self._tail = buf[-1:].copy()
        out: np.ndarray = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        return out


def resample(pcm: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot conversion of a whole int16 signal (same result as a fresh StreamResampler)."""
    return StreamResampler(in_rate, out_rate).process(pcm)


def apply_volume(pcm: np.ndarray, volume: float) -> np.ndarray:
    """Scale int16 PCM by ``volume`` (0..1), rounding; 1.0 returns the samples unchanged."""
    if volume >= 1.0:
        return pcm
    scaled: np.ndarray = np.rint(pcm.astype(np.float32) * np.float32(volume)).astype(np.int16)
    return scaled
