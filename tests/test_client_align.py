"""stt-client align with the trained bundled model: the attention of a clear utterance is diagonal.

With the tiny random-weight model (tests/test_client_recognize.py) only the plumbing can be
checked; a trained model must attend monotonically: token i looks at later audio than token i-1.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.client import cli
from tests.server_harness import RunningServer, make_settings
from tests.speech_audio import to_container, utterances

BUNDLED = Path(__file__).resolve().parent.parent / "service" / "models" / "default"

needs_bundled_model = pytest.mark.skipif(
    not (BUNDLED / "encoder.onnx").exists(),
    reason=f"the trained default model is not there yet ({BUNDLED / 'encoder.onnx'} missing)",
)


@pytest.fixture(scope="module")
def server():
    from service.recognizer import Recognizer

    engine = Recognizer.load(BUNDLED, inference_threads=1, batch_max_size=8, batch_max_wait_ms=2.0)
    running = RunningServer(make_settings(), engine)
    yield running
    running.stop()


def diagonal_stats(weights: np.ndarray) -> tuple[float, float, float]:
    """(monotonic fraction of row peaks, correlation token index ~ peak frame, mean mass within +-3 frames of the peak)."""
    rows = weights[weights.sum(axis=1) > 0]
    peaks = rows.argmax(axis=1)
    monotonic = float(np.mean(np.diff(peaks) >= 0)) if len(peaks) > 1 else 1.0
    corr = float(np.corrcoef(np.arange(len(peaks)), peaks)[0, 1]) if len(set(peaks)) > 1 else 0.0
    near = [row[max(0, p - 3) : p + 4].sum() / row.sum() for row, p in zip(rows, peaks)]
    return monotonic, corr, float(np.mean(near))


@needs_bundled_model
def test_alignment_is_diagonal_for_a_clear_utterance(server, tmp_path, capsys):
    audio = utterances(["the quick brown fox jumps over the lazy dog"], lead_s=0.5)
    wav = tmp_path / "fox.wav"
    wav.write_bytes(to_container(audio, 16000, "WAV", "PCM_16"))
    png, data = tmp_path / "fox.png", tmp_path / "fox.json"
    assert cli.main(["--server", server.address, "align", str(wav), "--png", str(png), "--json", str(data)]) == 0
    assert png.stat().st_size > 5000
    alignment = json.loads(data.read_text())
    weights = np.asarray(alignment["weights"], np.float32)
    assert len(alignment["tokens"]) >= 10, alignment["transcript"]
    monotonic, corr, near = diagonal_stats(weights)
    assert monotonic >= 0.9 and corr >= 0.9 and near >= 0.5, (monotonic, corr, near, alignment["transcript"])
    # Word boundaries sit inside the utterance, in order.
    starts = [w["start"] for w in alignment["words"]]
    assert starts == sorted(starts) and 0.3 <= starts[0] and starts[-1] <= len(audio) / 16000


def test_diagonal_stats_tell_diagonal_from_flat():
    diagonal = np.stack([np.roll(np.eye(1, 60)[0], 3 * i) for i in range(20)])
    assert diagonal_stats(diagonal)[:2] == (1.0, pytest.approx(1.0))
    flat = np.full((20, 60), 1 / 60, np.float32)
    assert diagonal_stats(flat)[2] < 0.5
