"""End to end with the real Recognizer (tiny random-weight ONNX model from tests/conftest.py).

The model is untrained, so transcripts are gibberish: these tests check the
whole path (gRPC -> decode -> resample -> VAD -> features -> ONNX encoder and
decoder -> assembly -> gRPC), the official Google client, and the process
lifecycle (``python -m service``: health while loading, SIGTERM drain), not accuracy.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.proto.stt.v1 import stt_pb2
from tests.server_harness import (
    TINY_MODEL_BEAM,
    BackgroundStream,
    RunningServer,
    final_texts,
    free_port,
    make_settings,
    speech_audio,
    stream_requests,
    streaming_config,
)
from tests.speech_audio import to_container, to_linear16

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return speech_audio()


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from service.recognizer import Recognizer

    engine = Recognizer.load(tiny_model_dir, inference_threads=1, batch_max_size=8, batch_max_wait_ms=2.0,
                             beam_size=TINY_MODEL_BEAM)
    running = RunningServer(make_settings(max_streams=8, idle_timeout_seconds=2.0), engine)
    yield running
    running.stop()


def test_streaming_partials_finals_words_attention(server, audio):
    config = streaming_config(
        interim_results=True,
        enable_voice_activity_events=True,
        config={"enable_word_time_offsets": True, "enable_attention_alignment": True, "max_alternatives": 2},
    )
    responses = list(server.stub().StreamingRecognize(stream_requests(audio, config)))
    finals = [r for resp in responses for r in resp.results if r.is_final]
    assert len(finals) == 2
    for final in finals:
        best = final.alternatives[0]
        assert best.transcript and 0.0 <= best.confidence <= 1.0
        alignment = best.attention_alignment
        assert alignment.num_frames > 0 and len(alignment.weights) == len(alignment.tokens) * alignment.num_frames
        assert final.result_end_time.ToNanoseconds() > 0
    assert finals[1].alternatives[0].attention_alignment.offset.ToNanoseconds() > 0
    assert any(not r.is_final for resp in responses for r in resp.results)
    Event = stt_pb2.StreamingRecognizeResponse
    assert [r.speech_event_type for r in responses if r.speech_event_type] == [
        Event.SPEECH_ACTIVITY_BEGIN, Event.SPEECH_ACTIVITY_END] * 2
    # times in order: words within their segment's audio, segments one after the other
    ends = [r.speech_event_time.ToNanoseconds() for r in responses if r.speech_event_type == Event.SPEECH_ACTIVITY_END]
    previous = 0
    for final, end in zip(finals, ends):
        assert final.result_end_time.ToNanoseconds() <= end
        for word in final.alternatives[0].words:
            assert previous <= word.start_time.ToNanoseconds() <= word.end_time.ToNanoseconds() <= end
            previous = word.end_time.ToNanoseconds()


def test_streaming_equals_whole_file(server, audio):
    """The core invariant through the whole service: chunking does not change finals."""
    small = final_texts(server.stub().StreamingRecognize(stream_requests(audio, chunk_bytes=1001)))
    whole = final_texts(server.stub().StreamingRecognize(stream_requests(audio, chunk_bytes=10**6)))
    assert small == whole and len(whole) == 2


def test_recognize_8k_wav(server, audio):
    wav = to_container(audio[::2].copy(), 8000, "WAV", "PCM_16")  # crude 8 kHz telephone copy
    config = stt_pb2.RecognitionConfig(language_code="en-US")  # ENCODING_UNSPECIFIED: read the header
    response = server.stub().Recognize(stt_pb2.RecognizeRequest(config=config, audio=stt_pb2.RecognitionAudio(content=wav)))
    assert len(response.results) == 2 and response.results[0].alternatives[0].transcript


def test_bad_stream_beside_good_one(server, audio):
    background = BackgroundStream(server, audio)
    bad = stream_requests(b"\x00" * 100, streaming_config(config={"sample_rate_hertz": 100}))
    with pytest.raises(grpc.RpcError) as info:
        list(server.stub().StreamingRecognize(bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(background.finish()) == 2


def test_cancellation_returns_gauge_to_zero(server, audio):
    stall = threading.Event()
    call = server.stub().StreamingRecognize(stream_requests(audio[:40000], stall=stall))
    assert server.wait_metric("stt_active_streams", 1) == 1
    call.cancel()
    assert server.wait_metric("stt_active_streams", 0) == 0
    stall.set()


# --- the official google-cloud-speech client, unchanged, on an insecure local channel -------------


@pytest.fixture(scope="module")
def google_client(server):
    speech = pytest.importorskip("google.cloud.speech_v1")
    from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

    channel = grpc.insecure_channel(server.address)
    yield speech, speech.SpeechClient(transport=SpeechGrpcTransport(channel=channel))
    channel.close()


def google_config(speech):
    return speech.RecognitionConfig(
        encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16,
        sample_rate_hertz=16000,
        language_code="en-US",
        enable_word_time_offsets=True,
    )


def test_google_client_recognize(google_client, audio):
    speech, client = google_client
    response = client.recognize(config=google_config(speech), audio=speech.RecognitionAudio(content=to_linear16(audio)))
    assert len(response.results) == 2
    assert response.results[0].alternatives[0].transcript
    assert response.results[0].alternatives[0].words


def test_google_client_streaming(google_client, audio):
    speech, client = google_client
    data = to_linear16(audio)
    requests = (speech.StreamingRecognizeRequest(audio_content=data[i : i + 3200]) for i in range(0, len(data), 3200))
    config = speech.StreamingRecognitionConfig(config=google_config(speech), interim_results=True)
    responses = list(client.streaming_recognize(config=config, requests=requests))
    finals = [r for resp in responses for r in resp.results if r.is_final]
    partials = [r for resp in responses for r in resp.results if not r.is_final]
    assert len(finals) == 2 and partials
    assert {round(r.stability, 2) for r in partials} <= {0.9, 0.01}


# --- the process: python -m service ---------------------------------------------------------------


def health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status


def wait_serving(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited during start-up"
        try:
            if health(port) == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server did not become SERVING")


def test_process_serves_and_drains_on_sigterm(tiny_model_dir, audio, tmp_path):
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "STT_HOST": "127.0.0.1", "STT_DRAIN_GRACE_SECONDS": "20", "STT_LOG_FORMAT": "text"}
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--metrics-port", str(metrics_port),
         "--model-dir", str(tiny_model_dir), "--inference-threads", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_serving(port, process)
        responses: list = []

        def stream() -> None:  # about 2.7 s of paced sending
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.stream_stream(
                    "/stt.v1.Speech/StreamingRecognize",
                    request_serializer=stt_pb2.StreamingRecognizeRequest.SerializeToString,
                    response_deserializer=stt_pb2.StreamingRecognizeResponse.FromString,
                )
                responses.extend(call(stream_requests(audio, pace_s=0.05)))

        worker = threading.Thread(target=stream)
        worker.start()
        time.sleep(0.8)
        process.send_signal(signal.SIGTERM)
        worker.join(30)
        assert len(final_texts(responses)) == 2, "the in-flight stream must complete during the drain"
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert "draining" in text and "stopped" in text


def test_process_exits_nonzero_without_model(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", str(free_port()), "--metrics-port", str(free_port()),
         "--model-dir", str(tmp_path / "missing")],
        cwd=ROOT, env={**os.environ, "STT_HOST": "127.0.0.1"}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "no model directory" in result.stderr


def test_process_on_a_taken_port_exits_with_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "service", "--port", str(port), "--metrics-port", str(free_port())],
            cwd=ROOT, env={**os.environ, "STT_HOST": "127.0.0.1"}, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot bind the gRPC port 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_process_rejects_bad_settings():
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "70000"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "STT_PORT" in result.stderr


def test_client_heatmap_and_mulaw_stream(server, audio, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from service.client import cli

    wav = tmp_path / "speech.wav"
    wav.write_bytes(to_container(audio, 16000, "WAV", "PCM_16"))
    png = tmp_path / "attention.png"
    assert cli.main(["--server", server.address, "recognize", str(wav), "--words", "--heatmap", str(png)]) == 0
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    # 8 kHz mu-law telephone audio, streamed in 20 ms messages.
    ulaw = to_container(audio[::2].copy(), 8000, "RAW", "ULAW")
    config = streaming_config(config={"encoding": stt_pb2.RecognitionConfig.MULAW, "sample_rate_hertz": 8000})
    texts = final_texts(server.stub().StreamingRecognize(stream_requests(ulaw, config, chunk_bytes=160)))
    assert len(texts) == 2
