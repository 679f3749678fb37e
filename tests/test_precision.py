"""STT_PRECISION=int8: the model folder's int8/ graphs, never stacked across streams.

int8 dynamic quantization scales a call's activations by the range of the whole input tensor.
Rows of several streams stacked into one call would share that scale, so a stream's frames
(and, measured on the bundled model, 4 of 48 dev transcripts) would depend on who else is
speaking. The Recognizer therefore runs such graphs one request per call: a stream gets the
same frames and tokens under any traffic, as with fp32.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.config import SettingsError, load_settings
from service.pipeline.decoder import DecodeOptions
from service.pipeline.features import compute_features
from service.pipeline.model_info import ModelFileError
from service.proto.stt.v1 import stt_pb2
from service.recognizer import INT8_SUBDIR, Recognizer, quantized_per_call
from tests.server_harness import RunningServer, make_settings
from tests.speech_audio import synthesize, to_linear16, utterances

BUNDLED = Path(__file__).resolve().parent.parent / "service" / "models" / "default"


@pytest.fixture(scope="module")
def tiny_with_int8(tiny_model_dir, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime.quantization")
    from model_export.export import quantize

    model = tmp_path_factory.mktemp("tiny_int8") / "model"
    shutil.copytree(tiny_model_dir, model)
    quantize(model, model / INT8_SUBDIR, reduce_range=True)
    return model


def _voices() -> list[np.ndarray]:
    """Three streams of different loudness: stacked, their activation ranges differ."""
    speech = synthesize("open the door please")
    return [speech * gain for gain in (1.0, 0.05, 0.4)]


async def _segment(rec: Recognizer, audio: np.ndarray):
    seg = rec.new_segment(0.0, DecodeOptions(beam_size=2))
    for pos in range(0, len(audio), 1600):
        await seg.accept(audio[pos: pos + 1600])
    hyp = await seg.finish()
    frames = seg.frames
    return frames._frames[:frames.length].copy(), hyp.text


def test_stacking_streams_would_change_an_int8_graphs_rows(tiny_with_int8):
    """The premise: one stream's encoder rows differ when another stream's chunk shares the call (fp32: equal)."""
    rows = {}
    for name, folder in (("fp32", tiny_with_int8), ("int8", tiny_with_int8 / INT8_SUBDIR)):
        rec = Recognizer(folder, inference_threads=1)
        assert quantized_per_call(rec.info) == (name == "int8")
        quiet, loud = (compute_features(v)[40:56] for v in _voices()[1::-1])  # 16 feature frames of speech
        alone = rec.encoder.split(rec.encoder.run(rec.encoder.inputs(quiet, rec.encoder.zero_state())))[0]
        both = rec.encoder.split(rec.encoder.run(_stacked(rec, quiet, loud)))[0]
        rows[name] = bool(np.allclose(alone.frames, both.frames, atol=1e-6))
    assert rows["fp32"] and not rows["int8"], rows


def _stacked(rec: Recognizer, *chunks: np.ndarray) -> dict:
    state = rec.encoder.zero_state()
    singles = [rec.encoder.inputs(c, state) for c in chunks]
    axes = rec.encoder.batch_axes()
    return {k: np.concatenate([s[k] for s in singles], axis=axes[k]) for k in singles[0]}


def test_int8_streams_get_the_same_frames_and_words_alone_and_under_traffic(tiny_with_int8):
    async def main():
        rec = Recognizer(tiny_with_int8, precision="int8", inference_threads=1, batch_max_wait_ms=20.0)
        try:
            alone = [await _segment(rec, v) for v in _voices()]
            await rec.start()  # micro-batching on: the three streams queue together
            together = await asyncio.gather(*(_segment(rec, v) for v in _voices()))
        finally:
            await rec.close()
        return alone, together

    alone, together = asyncio.run(main())
    for (frames_a, text_a), (frames_t, text_t) in zip(alone, together):
        np.testing.assert_array_equal(frames_a, frames_t)
        assert text_a == text_t


def test_int8_without_its_folder_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ModelFileError, match=r"precision int8 needs .*int8/encoder.onnx.*--int8-out"):
        Recognizer(tiny_model_dir, precision="int8")


def test_precision_setting_is_validated():
    assert load_settings(["--precision", "INT8"]).precision == "int8"
    with pytest.raises(SettingsError, match="STT_PRECISION"):
        load_settings(["--precision", "fp16"])


@pytest.mark.skipif(not (BUNDLED / INT8_SUBDIR / "encoder.onnx").exists(), reason="no bundled int8 graphs")
def test_bundled_int8_model_recognizes_speech_over_grpc():
    engine = Recognizer.load(BUNDLED, precision="int8", inference_threads=1, batch_max_wait_ms=2.0)
    assert engine.info.metadata["stt.quantization"].startswith("int8-dynamic") and engine.lm is not None
    running = RunningServer(make_settings(), engine)
    try:
        config = stt_pb2.RecognitionConfig(encoding=stt_pb2.RecognitionConfig.LINEAR16, sample_rate_hertz=16000,
                                           language_code="en-US")
        audio = utterances(["what time is it"], lead_s=0.3)
        response = running.stub().Recognize(stt_pb2.RecognizeRequest(
            config=config, audio=stt_pb2.RecognitionAudio(content=to_linear16(audio))), timeout=60)
        text = " ".join(r.alternatives[0].transcript for r in response.results)
        assert "time" in text, text
    finally:
        running.stop()
