"""Shared fixtures: a tiny randomly initialized model exported to real ONNX files."""
from __future__ import annotations

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
