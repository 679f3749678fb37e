"""Export a trained checkpoint to the two ONNX graphs the service runs (DESIGN §4).

    python -m model_export.export --checkpoint runs/default/final.pt --out service/models/default

encoder.onnx: feats (B, T, 80) + state -> frames, ctc_logp, keys, new state (T a multiple of 4).
decoder.onnx: one step over a fixed window of W encoder frames, dynamic batch.
Both files carry the metadata the service reads (`stt.*` keys); the service takes
names and shapes from there, not from constants.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import onnx
import torch
from torch import nn

from model_export.model import AttentionModel, DecoderState, EncoderState, ModelConfig
from service.pipeline.features import FeatureConfig

log = logging.getLogger(__name__)

MODEL_VERSION = "1.0.0"
ENCODER_STATES = ("conv1", "conv2", "h", "c")
DECODER_STATES = ("h", "c")


class EncoderGraph(nn.Module):
    def __init__(self, model: AttentionModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, feats, conv1, conv2, h, c):
        frames, st = self.encoder.streaming_forward(feats, EncoderState(conv1, conv2, h, c))
        ctc_logp, keys = self.encoder.heads(frames)
        return frames, ctc_logp, keys, st.conv1, st.conv2, st.h, st.c


class DecoderGraph(nn.Module):
    def __init__(self, model: AttentionModel) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, token, h, c, att_prev, enc, keys, mask):
        logp, st, att = self.decoder.step(token, DecoderState(h, c), att_prev, enc, keys, mask)
        return logp, st.h, st.c, att


def load_checkpoint(path: Path) -> AttentionModel:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model = AttentionModel(ModelConfig.from_json(payload["config"]))
    model.load_state_dict(payload["model"])
    return model.eval()


def metadata(model: AttentionModel, extra: dict) -> dict[str, str]:
    cfg = model.cfg
    enc = model.encoder
    conv1_shape, conv2_shape = enc.state_shapes()
    meta = {
        "stt.model_version": MODEL_VERSION,
        "stt.model_config": cfg.to_json(),
        "stt.feature_config": json.dumps(FeatureConfig().to_dict()),
        "stt.vocab": json.dumps(cfg.vocab),
        "stt.subsampling": str(cfg.subsampling),
        "stt.frame_shift_ms": str(10 * cfg.subsampling),
        "stt.window_back": str(cfg.window_back),
        "stt.window_size": str(cfg.window_size),
        "stt.enc_dim": str(cfg.enc_hidden),
        "stt.att_dim": str(cfg.att_dim),
        "stt.dec_hidden": str(cfg.dec_hidden),
        # Shapes without the batch axis, and where the batch axis goes, so the service
        # builds zero states from the file alone.
        "stt.encoder_states": json.dumps({
            "conv1": {"shape": list(conv1_shape), "batch_axis": 0},
            "conv2": {"shape": list(conv2_shape), "batch_axis": 0},
            "h": {"shape": [cfg.enc_layers, cfg.enc_hidden], "batch_axis": 1},
            "c": {"shape": [cfg.enc_layers, cfg.enc_hidden], "batch_axis": 1}}),
        "stt.feature_mean": json.dumps([round(float(x), 5) for x in enc.feat_mean]),
        "stt.feature_inv_std": json.dumps([round(float(x), 5) for x in enc.feat_inv_std]),
    }
    meta.update({f"stt.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def _write_metadata(path: Path, meta: dict[str, str]) -> None:
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))


def export(model: AttentionModel, out: Path, extra_meta: dict | None = None, opset: int = 17) -> tuple[Path, Path]:
    """Writes out/encoder.onnx and out/decoder.onnx; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    cfg = model.cfg
    st = model.encoder.init_state(2)
    feats = torch.randn(2, 16, cfg.n_mels)
    enc_path, dec_path = out / "encoder.onnx", out / "decoder.onnx"
    state_axes = {"conv1": {0: "batch"}, "conv2": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}}
    torch.onnx.export(
        EncoderGraph(model).eval(), (feats, *st), str(enc_path), dynamo=False, opset_version=opset,
        input_names=["feats", *ENCODER_STATES],
        output_names=["frames", "ctc_logp", "keys", *[f"new_{s}" for s in ENCODER_STATES]],
        dynamic_axes={"feats": {0: "batch", 1: "time"}, "frames": {0: "batch", 1: "enc_time"},
                      "ctc_logp": {0: "batch", 1: "enc_time"}, "keys": {0: "batch", 1: "enc_time"},
                      **state_axes, **{f"new_{k}": v for k, v in state_axes.items()}})
    w, b = cfg.window_size, 2
    dec_inputs = (torch.zeros(b, dtype=torch.long), torch.zeros(b, cfg.dec_hidden), torch.zeros(b, cfg.dec_hidden),
                  torch.zeros(b, w), torch.randn(b, w, cfg.enc_hidden), torch.randn(b, w, cfg.att_dim),
                  torch.zeros(b, w))
    batch_axis = {0: "batch"}
    torch.onnx.export(
        DecoderGraph(model).eval(), dec_inputs, str(dec_path), dynamo=False, opset_version=opset,
        input_names=["token", "h", "c", "att_prev", "enc", "keys", "mask"],
        output_names=["logp", "new_h", "new_c", "att"],
        dynamic_axes={n: batch_axis for n in ("token", "h", "c", "att_prev", "enc", "keys", "mask",
                                              "logp", "new_h", "new_c", "att")})
    meta = metadata(model, extra_meta or {})
    _write_metadata(enc_path, meta)
    _write_metadata(dec_path, meta)
    return enc_path, dec_path


def quantize(model_dir: Path, out_dir: Path, reduce_range: bool = False) -> None:
    """int8 dynamic quantization of both graphs (weights int8, activations quantized on the fly).

    `reduce_range`: 7-bit weights. On x86 CPUs without VNNI (AVX2, and AVX-512 before Cascade
    Lake; AMD before Zen 4) ONNX Runtime multiplies uint8 activations by int8 weights with
    vpmaddubsw, whose int16 pair sums can saturate (ONNX Runtime's quantization guide); 7-bit
    weights cannot. With VNNI the products are summed in 32 bits and full-range weights are safe.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("encoder.onnx", "decoder.onnx"):
        quantize_dynamic(str(model_dir / name), str(out_dir / name), weight_type=QuantType.QInt8,
                         reduce_range=reduce_range)
        meta = {p.key: p.value for p in onnx.load(str(model_dir / name)).metadata_props}
        meta["stt.quantization"] = "int8-dynamic-7bit" if reduce_range else "int8-dynamic"
        _write_metadata(out_dir / name, meta)


def token_budget(checkpoint: Path, manifest: Path, subsampling: int) -> float:
    """Decoding budget: twice the 99.9th percentile of tokens per encoder frame in the training data."""
    import numpy as np

    from model_export.bpe import BpeEncoder, CharEncoder
    from model_export.data import read_manifest

    bpe = sorted(checkpoint.parent.glob("bpe*.model"))
    encoder = BpeEncoder(bpe[0]) if bpe else CharEncoder()
    utts = read_manifest(manifest)
    ratios = [len(encoder.encode(u.text)) / max(1.0, u.duration * 100 / subsampling) for u in utts]
    return round(2 * float(np.percentile(ratios, 99.9)), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--meta", type=str, default="{}", help="JSON object of extra metadata (e.g. training data summary)")
    p.add_argument("--int8-out", type=Path, help="also write int8-quantized graphs here")
    p.add_argument("--int8-reduce-range", action="store_true",
                   help="7-bit int8 weights: no saturation on x86 CPUs without VNNI (see quantize)")
    p.add_argument("--manifest", type=Path, help="training manifest: measure the decoding token budget on it")
    p.add_argument("--version", default=MODEL_VERSION, help="stt.model_version written into both graphs (logs, checks)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    model = load_checkpoint(args.checkpoint)
    meta = json.loads(args.meta)
    meta["model_version"] = args.version
    if args.manifest:
        meta["max_tokens_per_frame"] = str(token_budget(args.checkpoint, args.manifest, model.cfg.subsampling))
    export(model, args.out, meta)
    if args.int8_out:
        quantize(args.out, args.int8_out, args.int8_reduce_range)
    log.info("exported %s -> %s", args.checkpoint, args.out)


if __name__ == "__main__":
    main()
