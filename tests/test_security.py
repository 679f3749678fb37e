"""Bearer-token auth, TLS and mutual TLS on the real server (engine test double)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import SettingsError, load_settings
from service.proto.stt.v1 import stt_pb2_grpc
from tests.engine_double import CountingRecognizer
from tests.server_harness import RunningServer, final_texts, make_settings, speech_audio, stream_requests

TOKEN = "s3cret-token-for-tests"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    return d


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
