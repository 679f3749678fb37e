"""Streaming resampling to the model rate (16 kHz) with soxr.

``soxr.ResampleStream`` keeps its filter state between calls, so resampling a
stream chunk by chunk gives the same samples as resampling it in one go
(soxr's stream mode is exact under rechunking; tests/test_resample.py checks).
The filter delays output by a few ms; ``flush`` drains it at the end of the stream.
"""
from __future__ import annotations

import numpy as np
import soxr

MODEL_RATE_HZ = 16000


class Resampler:
    """Per-stream resampler: (N,) or (N, C) float32 at ``in_rate`` -> same layout at ``out_rate``."""

    def __init__(self, in_rate: int, out_rate: int = MODEL_RATE_HZ, channels: int = 1, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(
            in_rate, out_rate, channels, dtype="float32", quality=quality
        )
        self._flushed = False

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk; output may lag input by the filter delay."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=False)

    def flush(self) -> np.ndarray:
        """End of stream: return the samples still held in the filter (call once)."""
        shape = (0,) if self.channels == 1 else (0, self.channels)
        if self._stream is None or self._flushed:
            return np.zeros(shape, np.float32)
        self._flushed = True
        return self._stream.resample_chunk(np.zeros(shape, np.float32), last=True)
