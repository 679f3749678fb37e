"""What the service knows about a model: read from the ONNX files' metadata, never from constants."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from service.pipeline.features import FeatureConfig


class ModelFileError(Exception):
    """A model file is missing, unreadable, or lacks the metadata the service needs."""


@dataclass(frozen=True)
class StateSpec:
    shape: tuple[int, ...]  # without the batch axis
    batch_axis: int


@dataclass(frozen=True)
class ModelInfo:
    version: str
    vocab: tuple[str, ...]
    features: FeatureConfig
    subsampling: int  # feature frames per encoder frame
    frame_shift_s: float  # seconds per encoder frame (0.04)
    window_back: int  # B of DESIGN §3, encoder frames
    window_size: int  # W of DESIGN §3, encoder frames
    enc_dim: int
    att_dim: int
    dec_hidden: int
    encoder_states: dict[str, StateSpec]
    metadata: dict[str, str]
    max_tokens_per_frame: float = 1.2  # decoding budget; the exporter measures it on the training data

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "ModelInfo":
        try:
            states = {k: StateSpec(tuple(v["shape"]), v["batch_axis"])
                      for k, v in json.loads(meta["stt.encoder_states"]).items()}
            return cls(
                version=meta["stt.model_version"], vocab=tuple(json.loads(meta["stt.vocab"])),
                features=FeatureConfig(**json.loads(meta["stt.feature_config"])),
                subsampling=int(meta["stt.subsampling"]), frame_shift_s=int(meta["stt.frame_shift_ms"]) / 1000,
                window_back=int(meta["stt.window_back"]), window_size=int(meta["stt.window_size"]),
                enc_dim=int(meta["stt.enc_dim"]), att_dim=int(meta["stt.att_dim"]),
                dec_hidden=int(meta["stt.dec_hidden"]), encoder_states=states, metadata=dict(meta),
                max_tokens_per_frame=float(meta.get("stt.max_tokens_per_frame", 1.2)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"model metadata incomplete or invalid: {exc!r}") from exc

    @classmethod
    def from_session(cls, session: ort.InferenceSession) -> "ModelInfo":
        return cls.from_metadata(session.get_modelmeta().custom_metadata_map)


def create_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with a fixed thread budget (callers parallelize across sessions)."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
        raise ModelFileError(f"cannot load {path}: {exc}") from exc
