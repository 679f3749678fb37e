"""STT_PRECISION=int8: the model folder's int8/ graphs serve; the LM stays fp32 beside them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.config import SettingsError, load_settings
from service.pipeline.model_info import ModelFileError
from service.proto.stt.v1 import stt_pb2
from service.recognizer import INT8_SUBDIR, Recognizer
from tests.server_harness import RunningServer, make_settings
from tests.speech_audio import to_linear16, utterances

BUNDLED = Path(__file__).resolve().parent.parent / "service" / "models" / "default"


def test_int8_serves_the_int8_subfolder(tiny_model_dir, tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    from model_export.export import quantize

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    quantize(model, model / INT8_SUBDIR, reduce_range=True)
    fp32, int8 = Recognizer(model, inference_threads=1), Recognizer(model, precision="int8", inference_threads=1)
    assert "stt.quantization" not in fp32.info.metadata
    assert int8.info.metadata["stt.quantization"] == "int8-dynamic-7bit" and int8.precision == "int8"
    assert int8.info.vocab == fp32.info.vocab


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
