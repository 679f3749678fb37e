"""`stt-client align`: the decoder's attention alignment of a file, as a heatmap PNG (and JSON).

Every segment's (tokens x frames) block is placed on one time axis, so the whole file
reads as one matrix: rows are output tokens in order, columns encoder frames.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.client.transcript import seconds


@dataclass
class Alignment:
    tokens: list[str]
    weights: np.ndarray  # (n_tokens, n_frames) float32
    frame_shift_s: float
    offset_s: float  # stream time of frame 0
    words: list[tuple[str, float, float]]  # (word, start_s, end_s)
    transcript: str

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "num_frames": int(self.weights.shape[1]), "frame_shift_s": self.frame_shift_s,
                "offset_s": self.offset_s, "weights": np.round(self.weights, 5).tolist(),
                "words": [{"word": w, "start": s, "end": e} for w, s, e in self.words], "transcript": self.transcript}


def _block(alternative) -> tuple[list[str], np.ndarray, float, float]:
    a = alternative.attention_alignment
    weights = np.asarray(a.weights, np.float32).reshape(len(a.tokens), a.num_frames)
    return list(a.tokens), weights, seconds(a.frame_shift), seconds(a.offset)


def merge_alignments(alternatives: Sequence) -> Alignment | None:
    """First alternatives of final results (with attention_alignment) -> one block-diagonal Alignment."""
    blocks = [_block(alt) for alt in alternatives if alt.attention_alignment.tokens]
    if not blocks:
        return None
    shift = blocks[0][2]
    start = min(b[3] for b in blocks)
    n_frames = max(int(round((b[3] - start) / shift)) + b[1].shape[1] for b in blocks)
    weights = np.zeros((sum(len(b[0]) for b in blocks), n_frames), np.float32)
    tokens: list[str] = []
    for block_tokens, block, _, offset in blocks:
        col = int(round((offset - start) / shift))
        weights[len(tokens) : len(tokens) + len(block_tokens), col : col + block.shape[1]] = block
        tokens.extend(block_tokens)
    words = [(w.word, seconds(w.start_time), seconds(w.end_time)) for alt in alternatives for w in alt.words]
    transcript = " ".join(alt.transcript for alt in alternatives if alt.transcript)
    return Alignment(tokens, weights, shift, start, words, transcript)


def render(alignment: Alignment, png: Path) -> Path:
    from service.client.heatmap import render_alignment  # matplotlib: loaded only here

    return render_alignment(png, alignment.tokens, alignment.weights, alignment.frame_shift_s, alignment.offset_s,
                            alignment.transcript, alignment.words)


def write_json(alignment: Alignment, path: Path) -> None:
    path.write_text(json.dumps(alignment.to_dict()) + "\n")
