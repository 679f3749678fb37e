"""Faults with the real Recognizer (tiny model): disconnects, overload, SIGTERM under load, stalls, bad model files.

Already covered elsewhere and not repeated: cancel frees the session and the
gauge (tests/test_server.py, tests/test_end_to_end.py), capacity refusal with
the engine double (test_server.py::test_capacity_is_resource_exhausted), idle
timeout (test_server.py::test_idle_timeout_is_out_of_range), drain of one
stream in process and by SIGTERM (test_server.py, test_end_to_end.py), a
missing model directory (test_end_to_end.py::test_process_exits_nonzero_without_model).
"""
from __future__ import annotations

import gc
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from service.pipeline.recognition import SegmentRecognizer
from service.proto.stt.v1 import stt_pb2_grpc
from service.session import StreamSession
from tests.server_harness import (
    TINY_MODEL_BEAM,
    RunningServer,
    final_texts,
    finals_or_error,
    free_port,
    make_settings,
    speech_audio,
    stream_requests,
    streaming_config,
)
from tests.test_end_to_end import wait_serving

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return speech_audio()


def live(kind: type) -> int:
    """Objects of ``kind`` still reachable after a full collection."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


def real_server(model_dir: Path, **settings) -> RunningServer:
    from service.recognizer import Recognizer

    engine = Recognizer.load(model_dir, inference_threads=1, batch_max_size=32, batch_max_wait_ms=2.0,
                             beam_size=TINY_MODEL_BEAM)
    return RunningServer(make_settings(**settings), engine)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    running = real_server(tiny_model_dir, max_streams=40, idle_timeout_seconds=1.5)
    yield running
    running.stop()


def wait_no_sessions(timeout: float = 10.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = live(StreamSession), live(SegmentRecognizer)
        if counts == (0, 0) or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


# --- clients that vanish ----------------------------------------------------------------------------


def disconnecting_client(server: RunningServer, audio: np.ndarray, after: int, how: str, errors: list) -> None:
    """Send ``after`` audio messages (100 ms each), then drop the call in one of three ways."""
    channel = server.channel()
    stall = threading.Event()

    def requests():
        for i, request in enumerate(stream_requests(audio, streaming_config(interim_results=True), pace_s=0.02)):
            if i > after:
                stall.wait(30)  # the client "is still sending" when it goes away
                return
            yield request

    call = server.stub(channel).StreamingRecognize(requests())
    delay_s = 0.02 * after + 0.05  # just after the last message: before the 1.5 s idle timeout
    try:
        if how == "read-then-cancel":  # the client is reading responses when it cancels
            timer = threading.Timer(delay_s, call.cancel)
            timer.start()
            for _ in call:
                pass
        elif how == "cancel":
            time.sleep(delay_s)
            call.cancel()
        else:  # "close-channel": the connection goes away under the call
            time.sleep(delay_s)
            channel.close()
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.CANCELLED:
            errors.append(err)
    finally:
        stall.set()
        channel.close()


def test_random_disconnects_leak_nothing(server, audio):
    assert wait_no_sessions(2) == (0, 0), "sessions left over from other tests in this process"
    rng = random.Random(1234)
    chunks = len(audio) * 2 // 3200
    errors: list = []
    clients = [
        threading.Thread(target=disconnecting_client,
                         args=(server, audio, rng.randrange(0, chunks), rng.choice(["cancel", "close-channel",
                                                                                     "read-then-cancel"]), errors))
        for _ in range(16)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    assert not errors
    assert server.wait_metric("stt_active_streams", 0, timeout=15) == 0
    assert wait_no_sessions() == (0, 0), "StreamSession / SegmentRecognizer objects leaked"
    # The server still serves.
    assert len(final_texts(server.stub().StreamingRecognize(stream_requests(audio), timeout=60))) == 2


def test_stall_mid_speech_is_out_of_range_and_frees_the_segment(server, audio):
    stall = threading.Event()
    mid_speech = audio[: int(1.6 * 16000)]  # 1 s lead, then into "hello world": a segment is open
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        list(server.stub().StreamingRecognize(stream_requests(mid_speech, stall=stall), timeout=30))
    stall.set()
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE and "no audio received" in info.value.details()
    assert time.monotonic() - started < 10
    assert server.wait_metric("stt_active_streams", 0) == 0
    assert wait_no_sessions() == (0, 0)


def test_slow_sender_within_idle_timeout_completes(server, audio):
    """Half real-time pace (200 ms per 100 ms chunk) stays under the 1.5 s idle timeout: not cut."""
    part = audio[: int(3.2 * 16000)]  # lead + "hello world" + pause
    texts = final_texts(server.stub().StreamingRecognize(stream_requests(part, pace_s=0.2), timeout=60))
    assert len(texts) == 1


# --- overload ---------------------------------------------------------------------------------------


def test_overload_refused_quickly_admitted_unaffected(tiny_model_dir, audio):
    capacity = 6
    running = real_server(tiny_model_dir, max_streams=capacity)
    try:
        results: list[list[str] | Exception] = []

        def admitted() -> None:
            try:
                results.append(final_texts(running.stub().StreamingRecognize(
                    stream_requests(audio, pace_s=0.05), timeout=60)))
            except grpc.RpcError as err:
                results.append(err)

        threads = [threading.Thread(target=admitted) for _ in range(capacity)]
        for thread in threads:
            thread.start()
        assert running.wait_metric("stt_active_streams", capacity, timeout=15) == capacity
        refused_in: list[float] = []
        for _ in range(3 * capacity):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                list(running.stub().StreamingRecognize(stream_requests(audio[:16000]), timeout=10))
            refused_in.append(time.monotonic() - started)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Refused before reading any audio: far faster than the 1 s of audio each would send.
        assert max(refused_in) < 1.0, refused_in
        for thread in threads:
            thread.join(60)
        assert all(isinstance(r, list) and len(r) == 2 for r in results), results
        assert running.metric("stt_rejected_streams_total", {"reason": "capacity"}) >= 3 * capacity
    finally:
        running.stop()


# --- the process: SIGTERM with 20 streams in flight, bad model files ---------------------------------


def start_server_process(model_dir: Path, log_path: Path, grace_s: float) -> tuple[subprocess.Popen, int, int]:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "STT_HOST": "127.0.0.1", "STT_DRAIN_GRACE_SECONDS": str(grace_s), "STT_LOG_FORMAT": "text"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--metrics-port", str(metrics_port),
         "--model-dir", str(model_dir), "--inference-threads", "1"],
        cwd=ROOT, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
    )
    return process, port, metrics_port


def active_streams(metrics_port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("stt_active_streams "):
                return float(line.split()[1])
    return 0.0


def test_sigterm_with_20_streams_in_flight(tiny_model_dir, audio, tmp_path):
    grace_s = 20.0
    process, port, metrics_port = start_server_process(tiny_model_dir, tmp_path / "server.log", grace_s)
    try:
        wait_serving(port, process)
        results: list[list[str] | Exception] = []

        def stream() -> None:  # about 2.9 s of sending at twice real time
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                results.append(finals_or_error(channel, audio, pace_s=0.05))

        threads = [threading.Thread(target=stream) for _ in range(20)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while active_streams(metrics_port) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert active_streams(metrics_port) == 20
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # new streams are refused
            with pytest.raises(grpc.RpcError) as info:
                list(stt_pb2_grpc.SpeechStub(channel).StreamingRecognize(stream_requests(audio[:8000]), timeout=10))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        for thread in threads:
            thread.join(60)
        assert process.wait(grace_s + 10) == 0
        assert time.monotonic() - signalled < grace_s, "exit within the grace period"
        assert len(results) == 20 and all(isinstance(r, list) and len(r) == 2 for r in results), results
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("fault", ["corrupt-encoder", "missing-decoder", "empty-decoder", "no-int8-graphs"])
def test_bad_model_file_is_a_clear_startup_error(tiny_model_dir, tmp_path, fault):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    extra = []
    if fault == "no-int8-graphs":  # STT_PRECISION=int8 for a folder exported without --int8-out
        extra, expected = ["--precision", "int8"], "precision int8 needs"
    elif fault == "corrupt-encoder":
        data = (model / "encoder.onnx").read_bytes()
        (model / "encoder.onnx").write_bytes(data[: len(data) // 2] + b"\x00garbage" * 64)
        expected = "encoder.onnx"
    elif fault == "missing-decoder":
        (model / "decoder.onnx").unlink()
        expected = "model file not found"
    else:
        (model / "decoder.onnx").write_bytes(b"")
        expected = "decoder.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", str(free_port()), "--metrics-port", str(free_port()),
         "--model-dir", str(model), *extra],
        cwd=ROOT, env={**os.environ, "STT_HOST": "127.0.0.1", "STT_LOG_FORMAT": "text"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "model failed to load" in result.stderr and expected in result.stderr, result.stderr[-2000:]
