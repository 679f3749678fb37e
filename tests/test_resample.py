"""service/pipeline/resample.py: streaming resampling equals one-shot resampling."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.resample import Resampler
from tests.speech_audio import synthesize


def run(resampler: Resampler, chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([resampler.process(c) for c in chunks] + [resampler.flush()], axis=0)


def chunked(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, pos, i = [], 0, 0
    while pos < len(x):
        out.append(x[pos : pos + sizes[i % len(sizes)]])
        pos, i = pos + sizes[i % len(sizes)], i + 1
    return out


@settings(max_examples=30, deadline=None)
@given(
    rate=st.sampled_from([8000, 11025, 22050, 32000, 44100, 48000]),
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=6),
    channels=st.sampled_from([1, 2]),
)
def test_chunking_invariance(rate, sizes, channels):
    x = np.random.default_rng(rate).uniform(-0.5, 0.5, size=rate // 2).astype(np.float32)
    if channels == 2:
        x = np.stack([x, -x], axis=1)
    whole = run(Resampler(rate, channels=channels), [x])
    parts = run(Resampler(rate, channels=channels), chunked(x, sizes))
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize("rate", [8000, 24000, 44100])
def test_length_and_content(rate):
    speech = synthesize("testing the resampler", rate)
    out = run(Resampler(rate), [speech])
    assert abs(len(out) - len(speech) * 16000 / rate) <= 2
    # Spectral content of speech survives: energy is kept within a few percent.
    ratio = np.mean(out**2) / np.mean(speech**2)
    assert 0.9 < ratio < 1.1


def test_16k_passthrough_is_identity():
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    r = Resampler(16000)
    np.testing.assert_array_equal(r.process(x), x)
    assert r.flush().shape == (0,)


def test_flush_is_idempotent():
    r = Resampler(8000)
    r.process(np.ones(800, np.float32))
    assert len(r.flush()) > 0
    assert len(r.flush()) == 0
