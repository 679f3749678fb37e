"""Streaming 80-dim log-mel filterbank: the one feature extractor of training and serving.

25 ms windows every 10 ms (100 frames per second) from kaldi-native-fbank's online
fbank. `snip_edges` keeps every frame inside the audio seen so far and dither is
off, so any chunking of the input gives bit-identical frames.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import kaldi_native_fbank as knf
import numpy as np

# kaldi's filterbank is defined on int16-scaled samples; we keep that convention so
# energies match every Kaldi-style recipe.
_INT16_SCALE = 32768.0
# Log-mel floor, about the level of +-0.5 LSB noise in 16-bit audio. Digital silence
# would otherwise sit at log(eps) = -15.9, far from any real recording, and dominate
# the normalization statistics (measured: std 10 with it, speech squeezed into +-0.3).
LOG_MEL_FLOOR = 3.0


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0

    def to_dict(self) -> dict:
        return asdict(self)

    def options(self) -> knf.FbankOptions:
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = self.sample_rate
        opts.frame_opts.frame_length_ms = self.frame_length_ms
        opts.frame_opts.frame_shift_ms = self.frame_shift_ms
        opts.frame_opts.dither = 0.0
        opts.frame_opts.snip_edges = True
        opts.mel_opts.num_bins = self.num_mel_bins
        return opts


class FeatureExtractor:
    """Per-stream state: the online fbank and how many frames were handed out."""

    def __init__(self, config: FeatureConfig = FeatureConfig()) -> None:
        self.config = config
        self._fbank = knf.OnlineFbank(config.options())
        self._emitted = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """(N,) float32 in [-1, 1] at `sample_rate` -> (T, num_mel_bins) float32 new frames."""
        if len(samples):
            scaled = np.asarray(samples, dtype=np.float32) * _INT16_SCALE
            # a list, not the array: the binding takes a sequence of floats and reads a list about 1.4x faster
            # than an array's items (86 vs 122 us per 100 ms on an idle core); float32 -> float -> float32 is exact
            self._fbank.accept_waveform(self.config.sample_rate, scaled.tolist())
        return self._drain()

    def flush(self) -> np.ndarray:
        """End of input: returns the frames that became complete (none with snip_edges)."""
        self._fbank.input_finished()
        return self._drain()

    def _drain(self) -> np.ndarray:
        ready = self._fbank.num_frames_ready
        if ready == self._emitted:  # a message shorter than a frame shift
            return np.zeros((0, self.config.num_mel_bins), np.float32)
        # get_frame returns a view into the fbank's buffer: copy before pop() frees it.
        frames = [np.array(self._fbank.get_frame(i), dtype=np.float32) for i in range(self._emitted, ready)]
        # Free the frames we handed out: memory stays flat over hour-long streams.
        self._fbank.pop(ready - self._emitted)
        self._emitted = ready
        return np.maximum(np.stack(frames), LOG_MEL_FLOOR).astype(np.float32)


def compute_features(samples: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Whole utterance: (N,) float32 -> (T, num_mel_bins) float32, T = 1 + (N - 400) // 160."""
    extractor = FeatureExtractor(config)
    head = extractor.process(samples)
    return np.concatenate([head, extractor.flush()])
