"""PyTorch vs ONNX Runtime parity: chunk by chunk with carried state, random chunk and batch sizes.

    python -m model_export.parity --checkpoint runs/default/final.pt --model-dir service/models/default
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from model_export.export import load_checkpoint
from model_export.model import AttentionModel, DecoderState
from service.pipeline.model_info import create_session


def encoder_max_error(model: AttentionModel, model_dir: Path, rng: np.random.Generator, n_chunks: int = 6) -> float:
    """Largest |torch - onnx| over all encoder outputs and states for a random chunked batch."""
    sess = create_session(model_dir / "encoder.onnx")
    batch = int(rng.integers(1, 5))
    t_state = model.encoder.init_state(batch)
    o_state = {k: v.numpy() for k, v in t_state._asdict().items()}
    worst = 0.0
    for _ in range(n_chunks):
        t = 4 * int(rng.integers(1, 20))
        feats = rng.normal(size=(batch, t, model.cfg.n_mels)).astype(np.float32) * 3 + 10
        with torch.no_grad():
            frames, t_state = model.encoder.streaming_forward(torch.from_numpy(feats), t_state)
            ctc, keys = model.encoder.heads(frames)
        outs = sess.run(None, {"feats": feats, **o_state})
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, outs))
        expect = {"frames": frames, "ctc_logp": ctc, "keys": keys,
                  **{f"new_{k}": v for k, v in t_state._asdict().items()}}
        for k, v in expect.items():
            worst = max(worst, float(np.abs(got[k] - v.numpy()).max()))
        o_state = {k: got[f"new_{k}"] for k in o_state}
    return worst


def decoder_max_error(model: AttentionModel, model_dir: Path, rng: np.random.Generator, n_steps: int = 5) -> float:
    sess = create_session(model_dir / "decoder.onnx")
    cfg = model.cfg
    batch, w = int(rng.integers(1, 6)), cfg.window_size
    h = np.zeros((batch, cfg.dec_hidden), np.float32)
    c = np.zeros_like(h)
    att = np.zeros((batch, w), np.float32)
    att[:, cfg.window_back] = 1
    worst = 0.0
    for _ in range(n_steps):
        inputs = {"token": rng.integers(0, cfg.vocab_size, size=batch).astype(np.int64), "h": h, "c": c,
                  "att_prev": att, "enc": rng.normal(size=(batch, w, cfg.enc_hidden)).astype(np.float32),
                  "keys": rng.normal(size=(batch, w, cfg.att_dim)).astype(np.float32),
                  "mask": np.where(rng.random((batch, w)) < 0.2, -1e4, 0.0).astype(np.float32)}
        inputs["mask"][:, cfg.window_back] = 0.0
        with torch.no_grad():
            t = {k: torch.from_numpy(v) for k, v in inputs.items()}
            logp, st, t_att = model.decoder.step(t["token"], DecoderState(t["h"], t["c"]), t["att_prev"],
                                                 t["enc"], t["keys"], t["mask"])
        got = sess.run(["logp", "new_h", "new_c", "att"], inputs)
        for a, b in zip(got, (logp, st.h, st.c, t_att)):
            worst = max(worst, float(np.abs(a - b.numpy()).max()))
        h, c, att = got[1], got[2], got[3]
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--trials", type=int, default=5)
    args = p.parse_args()
    model = load_checkpoint(args.checkpoint)
    rng = np.random.default_rng(0)
    enc = max(encoder_max_error(model, args.model_dir, rng) for _ in range(args.trials))
    dec = max(decoder_max_error(model, args.model_dir, rng) for _ in range(args.trials))
    print(f"encoder max abs error {enc:.2e}; decoder max abs error {dec:.2e}")


if __name__ == "__main__":
    main()
