"""Bearer-token auth, TLS and mutual TLS on the real server (engine test double)."""
from __future__ import annotations

import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import SettingsError, load_settings
from service.proto.stt.v1 import stt_pb2_grpc
from tests.engine_double import CountingRecognizer
from tests.server_harness import RunningServer, final_texts, make_settings, speech_audio, stream_requests

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def audio():
    return speech_audio()[: 16000 * 3]


def call_stream(channel: grpc.Channel, audio, metadata=None) -> list[str]:
    stub = stt_pb2_grpc.SpeechStub(channel)
    return final_texts(stub.StreamingRecognize(stream_requests(audio), metadata=metadata))


def test_bearer_token(audio):
    running = RunningServer(make_settings(auth_token=TOKEN), CountingRecognizer())
    try:
        channel = running.channel()
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
            with pytest.raises(grpc.RpcError) as info:
                call_stream(channel, audio, metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert call_stream(channel, audio, (("authorization", f"Bearer {TOKEN}"),))
        # Health stays open for probes; the rejection is counted.
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        assert running.metric("stt_rejected_streams_total", {"reason": "unauthenticated"}) >= 3
    finally:
        running.stop()


def test_tls(pki, audio):
    settings = make_settings(tls_cert_file=pki / "server.crt", tls_key_file=pki / "server.key")
    running = RunningServer(settings, CountingRecognizer())
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes())
        with grpc.secure_channel(f"localhost:{running.port}", creds) as channel:
            assert call_stream(channel, audio)
        with pytest.raises(grpc.RpcError):  # plaintext client against a TLS port
            call_stream(running.channel(), audio)
    finally:
        running.stop()


def test_mutual_tls(pki, audio):
    settings = make_settings(
        tls_cert_file=pki / "server.crt", tls_key_file=pki / "server.key", tls_client_ca_file=pki / "ca.crt"
    )
    running = RunningServer(settings, CountingRecognizer())
    try:
        ca = (pki / "ca.crt").read_bytes()
        with_cert = grpc.ssl_channel_credentials(
            ca, private_key=(pki / "client.key").read_bytes(), certificate_chain=(pki / "client.crt").read_bytes()
        )
        with grpc.secure_channel(f"localhost:{running.port}", with_cert) as channel:
            assert call_stream(channel, audio)
        with grpc.secure_channel(f"localhost:{running.port}", grpc.ssl_channel_credentials(ca)) as channel:
            with pytest.raises(grpc.RpcError) as info:
                call_stream(channel, audio)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()


def test_tls_settings_validated(pki):
    with pytest.raises(SettingsError, match="must be set together"):
        load_settings(["--tls-cert-file", str(pki / "server.crt")])
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(["--tls-key-file", str(pki / "nope.key"), "--tls-cert-file", str(pki / "server.crt")])


# --- secrets and user data: constant-time compare, nothing in logs, nothing on disk ---------------


def test_token_compared_in_constant_time():
    import inspect

    from service import server

    source = inspect.getsource(server.BearerTokenInterceptor)
    assert "hmac.compare_digest(" in source and "==" not in source.split("hmac.compare_digest(")[1].split("\n")[0]


DISTINCTIVE = "zebra quartz xylophone"


def test_no_transcript_or_audio_in_info_logs_and_nothing_written_to_disk(tiny_model_dir, tmp_path):
    """A real ``python -m service`` at INFO with its cwd and TMPDIR in empty folders.

    Streams (LINEAR16 and buffered FLAC) and a unary call of a distinctive
    utterance: the log holds none of its words, none of the transcripts
    returned, no audio bytes; the folders stay empty (audio never touches disk).
    """
    import os
    import signal
    import sys

    from service.proto.stt.v1 import stt_pb2
    from tests.server_harness import free_port, streaming_config
    from tests.speech_audio import to_container, to_linear16, utterances
    from tests.test_end_to_end import ROOT, wait_serving

    cwd, tmpdir = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmpdir.mkdir()
    log_path = tmp_path / "server.log"
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "STT_HOST": "127.0.0.1", "STT_LOG_LEVEL": "INFO", "STT_LOG_FORMAT": "json",
           "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port), "--metrics-port", str(metrics_port),
             "--model-dir", str(tiny_model_dir), "--inference-threads", "1"],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    audio = utterances([DISTINCTIVE, "hello " + DISTINCTIVE], pause_s=1.2)
    pcm = to_linear16(audio)
    transcripts: list[str] = []
    try:
        wait_serving(port, process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = stt_pb2_grpc.SpeechStub(channel)
            transcripts += call_stream(channel, audio)
            flac = streaming_config(config={"encoding": stt_pb2.RecognitionConfig.FLAC, "sample_rate_hertz": 0})
            transcripts += final_texts(stub.StreamingRecognize(stream_requests(to_container(audio, 16000, "FLAC"), flac)))
            response = stub.Recognize(stt_pb2.RecognizeRequest(
                config=streaming_config().config, audio=stt_pb2.RecognitionAudio(content=pcm)))
            transcripts += [r.alternatives[0].transcript for r in response.results]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert "stream ended" in text  # the run did log at INFO
    assert transcripts, "the tiny model returns (gibberish) transcripts to look for"
    for needle in [*DISTINCTIVE.split(), *{t for t in transcripts if len(t) >= 4}]:
        assert needle not in text, f"user data {needle!r} in the INFO log"
    for start in range(16000, len(pcm) - 64, len(pcm) // 8):  # audio bytes, raw or escaped
        assert repr(pcm[start : start + 32])[2:-1] not in text
    assert list(cwd.iterdir()) == [], "the server wrote files in its working directory"
    # onnxruntime (1.2x+) writes a 51-byte session id, '.ses', into $TMPDIR on import: not audio.
    written = [p for p in tmpdir.iterdir() if not (p.name == ".ses" and p.stat().st_size < 256)]
    assert written == [], "the server wrote files in $TMPDIR"
