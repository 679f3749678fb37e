"""Render the attention alignment of one utterance, decoded by the service's own pipeline.

    python -m model_export.heatmap AUDIO.wav --png alignment.png [--model-dir service/models/default]

The audio is decoded as one segment with monotonic windowed attention (ONNX Runtime,
exactly as served); the PNG shows audio time (x) against output characters (y).
"""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from model_export.data import load_audio
from service.client.heatmap import render_alignment
from service.pipeline.decoder import DecodeOptions
from service.recognizer import DEFAULT_MODEL_DIR, Recognizer


async def _decode(rec: Recognizer, path: Path):
    audio = load_audio(str(path))
    seg = rec.new_segment(0.0, DecodeOptions(return_attention=True))
    for i in range(0, len(audio), 1600):
        await seg.accept(audio[i:i + 1600])
    return await seg.finish()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", type=Path)
    p.add_argument("--png", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    args = p.parse_args()
    rec = Recognizer(args.model_dir, inference_threads=1)
    hyp = asyncio.run(_decode(rec, args.audio))
    att = hyp.attention
    render_alignment(args.png, att.tokens, att.weights, att.frame_shift_s, att.offset_s,
                     title=f"{args.audio.name}: {hyp.text!r}", words=[(w.word, w.start_s, w.end_s) for w in hyp.words])
    print(f"{hyp.text}\n-> {args.png}")


if __name__ == "__main__":
    main()
