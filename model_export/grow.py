"""Widen a trained encoder without changing what it computes (a warm start with more capacity).

    python -m model_export.train ... --init-from runs/mbx/final.pt --enc-hidden 448

The LSTM encoder's width H appears in every tensor that makes or reads encoder frames:
the LSTM's gate rows (4 blocks of H: input, forget, cell, output) and recurrent columns,
the second layer's input columns, the skip projection's rows, and the columns of
every consumer (CTC head, attention keys, the decoder cell and output layer, which read
the attention context). Growing H to H' keeps each old value at its old place, gives
the new units a fresh initialization, and zeroes the weights from new units into old
outputs. The new units then compute something, but nothing reads it yet, so the
widened model is exactly the old one (`tests/test_training.py` checks the outputs) and
training can only start from the old model's quality. Gradients reach the zeroed
weights at once because the new units' activations are not zero.
"""
from __future__ import annotations

import torch


def _index_map(name: str, dim: int, old: int, new: int, h_old: int, h_new: int) -> torch.Tensor:
    """Positions in the new axis of the old axis' entries (length `old`)."""
    if name.startswith("encoder.lstm.") and dim == 0 and old == 4 * h_old and new == 4 * h_new:
        block = torch.arange(old) // h_old  # gate rows: each of the 4 blocks grows on its own
        return block * h_new + torch.arange(old) % h_old
    return torch.arange(old)  # everything else that grows appends its new entries at the end


def grow_state_dict(old_sd: dict[str, torch.Tensor], new_sd: dict[str, torch.Tensor],
                    h_old: int, h_new: int) -> dict[str, torch.Tensor]:
    """Old weights placed into a freshly initialized wider model's state dict (returned, new tensors).

    Same-shape tensors are copied; grown ones keep the fresh values at the new positions,
    except that outputs that existed before (dim 0 old) read nothing from new inputs
    (new columns): those weights are zero, which is what keeps the function unchanged. Only
    vectors and (out, in) matrices grow in this model; anything else is refused.
    """
    out = {}
    for name, fresh in new_sd.items():
        if name not in old_sd:
            out[name] = fresh.clone()
            continue
        old = old_sd[name]
        if old.shape == fresh.shape:
            out[name] = old.clone()
            continue
        if old.dim() != fresh.dim() or old.dim() > 2 or any(o > n for o, n in zip(old.shape, fresh.shape)):
            raise ValueError(f"{name}: cannot grow {tuple(old.shape)} into {tuple(fresh.shape)}")
        maps = [_index_map(name, d, o, n, h_old, h_new) for d, (o, n) in enumerate(zip(old.shape, fresh.shape))]
        grown = fresh.clone()
        grown[torch.meshgrid(*maps, indexing="ij")] = old
        if grown.dim() == 2:  # (out, in): old outputs read nothing from the new inputs
            new_cols = torch.ones(fresh.shape[1], dtype=torch.bool)
            new_cols[maps[1]] = False
            grown[maps[0].unsqueeze(1), new_cols.nonzero().T] = 0.0
        out[name] = grown
    return out
