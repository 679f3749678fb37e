"""stt-client connection options on every command: bearer token (flag or STT_AUTH_TOKEN), TLS, mutual TLS."""
from __future__ import annotations

from pathlib import Path

import pytest

from service.client import cli
from tests.server_harness import RunningServer, make_settings, speech_audio
from tests.speech_audio import to_container

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    path.write_bytes(to_container(speech_audio(), 16000, "WAV", "PCM_16"))
    return path


def start(model_dir: Path, **settings) -> RunningServer:
    from service.recognizer import Recognizer

    engine = Recognizer.load(model_dir, inference_threads=1, batch_max_size=8, batch_max_wait_ms=2.0)
    return RunningServer(make_settings(**settings), engine)


def commands(wav: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {
        "recognize": ["recognize", str(wav), "--format", "txt"],
        "stream": ["stream", str(wav)],
        "batch": ["batch", str(wav), "--out", str(tmp_path / "r.jsonl"), "--no-progress"],
        "align": ["align", str(wav), "--png", str(tmp_path / "a.png")],
    }


def test_token_flag_env_and_rejection(tiny_model_dir, wav, tmp_path, capsys, monkeypatch):
    server = start(tiny_model_dir, auth_token=TOKEN)
    try:
        for name, args in commands(wav, tmp_path).items():
            monkeypatch.delenv("STT_AUTH_TOKEN", raising=False)
            assert cli.main([*args, "--server", server.address]) == 1, name
            err = capsys.readouterr().err
            assert "UNAUTHENTICATED" in err and "--token" in err and "Traceback" not in err, (name, err)
            assert cli.main(["--server", server.address, "--token", TOKEN, *args]) == 0, name
            (tmp_path / "r.jsonl").unlink(missing_ok=True)
            monkeypatch.setenv("STT_AUTH_TOKEN", TOKEN)
            assert cli.main([*args, "--server", server.address]) == 0, name  # options after the command too
            (tmp_path / "r.jsonl").unlink(missing_ok=True)
    finally:
        server.stop()


def test_tls_and_mutual_tls(tiny_model_dir, pki, wav, tmp_path, capsys):
    server = start(tiny_model_dir, tls_cert_file=pki / "server.crt", tls_key_file=pki / "server.key",
                   tls_client_ca_file=pki / "ca.crt")
    target = f"localhost:{server.port}"
    mtls = ["--ca", str(pki / "ca.crt"), "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key")]
    try:
        for name, args in commands(wav, tmp_path).items():
            assert cli.main(["--server", target, *mtls, *args]) == 0, name
            (tmp_path / "r.jsonl").unlink(missing_ok=True)
        capsys.readouterr()
        # No client certificate: the handshake fails; one line, exit 1.
        assert cli.main(["--server", target, "--ca", str(pki / "ca.crt"), "recognize", str(wav)]) == 1
        err = capsys.readouterr().err
        assert "server not reachable" in err and len(err.strip().splitlines()) == 1
    finally:
        server.stop()
