"""Render an attention alignment as a PNG heatmap: x = audio time (s), y = output tokens.

Needs matplotlib (the `[train]` or `[client]` extra); imported lazily so the server never loads it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def render_alignment(path: Path, tokens: Sequence[str], weights: np.ndarray, frame_shift_s: float,
                     offset_s: float = 0.0, title: str = "",
                     words: Sequence[tuple[str, float, float]] = ()) -> Path:
    """weights (n_tokens, n_frames); words as (word, start_s, end_s) drawn as boundaries on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_tok, n_frames = weights.shape
    fig_h = max(3.0, min(16.0, 0.18 * n_tok + 1.5))
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, n_frames * 0.05 + 2)), fig_h))
    extent = (offset_s, offset_s + n_frames * frame_shift_s, n_tok - 0.5, -0.5)
    im = ax.imshow(weights, aspect="auto", origin="upper", cmap="viridis", extent=extent, interpolation="nearest")
    ax.set_yticks(range(n_tok))
    ax.set_yticklabels(["␣" if t == " " else t.replace("\u2581", "_") for t in tokens], fontsize=7)
    ax.set_xlabel("audio time (s)")
    ax.set_ylabel("output tokens")
    for _, start, end in words:
        ax.axvline(start, color="white", lw=0.5, alpha=0.6)
        ax.axvline(end, color="red", lw=0.5, alpha=0.4)
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="attention weight")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
