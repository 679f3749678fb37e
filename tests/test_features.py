"""Streaming log-mel features: any chunking gives the frames of a whole-utterance run."""
from __future__ import annotations

import numpy as np
import pytest

from service.pipeline.features import FeatureConfig, FeatureExtractor, compute_features
from tests.speech_audio import synthesize


@pytest.mark.parametrize("seed", range(4))
def test_chunking_invariance(seed):
    audio = synthesize("features must not depend on chunking")
    whole = compute_features(audio)
    rng = np.random.default_rng(seed)
    fe, parts, pos = FeatureExtractor(), [], 0
    while pos < len(audio):
        n = int(rng.choice([1, 7, 160, 399, 400, 1601, 4000]))
        parts.append(fe.process(audio[pos:pos + n]))
        pos += n
    parts.append(fe.flush())
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_shape_and_frame_rate():
    audio = np.zeros(16000, np.float32)
    feats = compute_features(audio + 1e-3 * np.sin(np.arange(16000)).astype(np.float32))
    assert feats.shape == (1 + (16000 - 400) // 160, 80)  # 25 ms windows every 10 ms, snip_edges
    assert feats.dtype == np.float32 and np.isfinite(feats).all()


def test_memory_does_not_grow_over_long_stream():
    fe = FeatureExtractor(FeatureConfig())
    chunk = (0.01 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    sizes = []
    for i in range(300):  # five minutes of audio
        fe.process(chunk)
        if i in (10, 299):
            sizes.append(fe._fbank.num_frames_ready - fe._emitted)
    assert sizes == [0, 0]  # every ready frame was handed out and popped
