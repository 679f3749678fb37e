"""Shared fixtures: a tiny randomly initialized model exported to real ONNX files."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def export_tiny_model(out: Path, seed: int = 0) -> Path:
    """Tiny AttentionModel (random weights, seeded) exported with the production exporter."""
    import torch

    from model_export.export import export
    from model_export.model import AttentionModel, ModelConfig
    from model_export.train import SIZES
    from service.pipeline.tokenizer import Tokenizer

    torch.manual_seed(seed)
    model = AttentionModel(ModelConfig(vocab=list(Tokenizer().vocab), **SIZES["tiny"]))
    # Random weights give near-uniform attention; sharpen the decoder so it moves forward.
    with torch.no_grad():
        model.decoder.energy.weight.mul_(20.0)
    export(model.eval(), out, {"training_data": "none (random weights, tests only)"})
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Directory holding encoder.onnx and decoder.onnx of a tiny random model (needs torch: [train] extra)."""
    pytest.importorskip("torch")
    return export_tiny_model(tmp_path_factory.mktemp("tiny_model"))


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
