"""Memory stays flat over a long stream (a complexity property: no wall-clock thresholds).

``python -m service`` with the tiny model is fed one stream of speech and pauses as
fast as it takes it; RSS is read from /proc every minute of audio. A leak per
segment or per message grows linearly with the audio; flat memory does not.
"""
from __future__ import annotations

import pytest

from bench.common import ServerProcess
from bench.memory import long_audio, long_stream


def rss_growth_after_warmup(model_dir, minutes: float) -> tuple[float, list[tuple[float, int]]]:
    limit = ["--max-stream-seconds", str(minutes * 60 + 600), "--inference-threads", "1"]
    with ServerProcess(model_dir, limit) as server:
        points = long_stream(server.address, server.pid, long_audio(minutes), speed=1e6, every_s=60.0)
        segments = server.metric("stt_segments_total")
    assert segments >= minutes * 60 / 10, "speech segments were recognized all along"
    warm = [rss for minute, rss in points if minute >= 2.0]  # the first minutes: allocator and ONNX warm-up
    return (warm[-1] - min(warm)) / 2**20, points


def test_rss_flat_over_10_minutes_of_audio(tiny_model_dir):
    growth_mb, points = rss_growth_after_warmup(tiny_model_dir, 10.0)
    # About 100 segments after warm-up: a leak of 100 KB per segment alone would add ~10 MB.
    assert growth_mb < 8.0, [(round(m, 1), round(r / 2**20, 1)) for m, r in points]


@pytest.mark.slow
def test_rss_flat_over_60_minutes_of_audio(tiny_model_dir):
    growth_mb, points = rss_growth_after_warmup(tiny_model_dir, 60.0)
    assert growth_mb < 16.0, [(round(m, 1), round(r / 2**20, 1)) for m, r in points]
