"""The serving package alone (no extras) installs into a fresh virtualenv and serves without torch."""
from __future__ import annotations

import os
import subprocess
import time
import venv
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.proto.stt.v1 import stt_pb2, stt_pb2_grpc
from tests.server_harness import free_port, speech_audio
from tests.speech_audio import to_linear16

ROOT = Path(__file__).resolve().parent.parent


def wait_serving(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited during start-up"
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server did not become SERVING")


@pytest.mark.slow
def test_serving_install_has_no_torch_and_serves(tmp_path, tiny_model_dir):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True, text=True, timeout=1200,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert probe.stdout.strip() == "True", "torch must not come with the serving install"
    bundled = subprocess.run(  # the package carries both precisions of the default model (STT_PRECISION)
        [str(python), "-c", "import pathlib, service; d = pathlib.Path(service.__file__).parent / 'models' / 'default'; "
                            "print(sorted(p.relative_to(d).as_posix() for p in d.rglob('*.onnx')))"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert bundled.stdout.strip() == str(["decoder.onnx", "encoder.onnx", "int8/decoder.onnx", "int8/encoder.onnx",
                                          "lm.onnx"]), bundled.stdout + bundled.stderr

    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"STT_HOST": "127.0.0.1", "STT_LOG_FORMAT": "text"})
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(  # cwd outside the repo: only the installed package is importable
        [str(env_dir / "bin" / "stt-server"), "--port", str(port), "--metrics-port", str(metrics_port),
         "--model-dir", str(tiny_model_dir)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_serving(port, server)
        config = stt_pb2.RecognitionConfig(
            encoding=stt_pb2.RecognitionConfig.LINEAR16, sample_rate_hertz=16000, language_code="en-US"
        )
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = stt_pb2_grpc.SpeechStub(channel).Recognize(
                stt_pb2.RecognizeRequest(config=config, audio=stt_pb2.RecognitionAudio(content=to_linear16(speech_audio()))),
                timeout=60,
            )
        assert len(response.results) == 2
        server.terminate()
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
