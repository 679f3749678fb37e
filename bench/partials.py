"""Partials on continuous speech: how much of a segment the partial results show before it ends.

    .venv/bin/python -m bench.partials                                   # first 40 conversational dev utterances
    .venv/bin/python -m bench.partials --limit 100 --join 4 --gap-s 0.3 --model-dir DIR

Consecutive dev utterances are joined ``--join`` at a time with ``--gap-s`` of silence after
each, one segment per group (what the VAD hands the recognizer when the pauses are shorter
than its end silence), and fed to SegmentRecognizer in 100 ms pieces at the service's default
decoding. For each segment it records how many tokens the partial result held when the audio
ran out (before ``finish()``) against the final's, and the audio time of the last change of the
partial: a decoder that waits for the segment end to settle an end proposed in a pause shows
the first sentence and then nothing new until the end. Audio time, not wall time: the figures
do not depend on the machine's speed.
"""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np

from bench.common import RATE, ROOT, default_model_dir, machine_report, require_model
from service.pipeline.decoder import DecodeOptions

PIECE = RATE // 10  # 100 ms


async def run_segment(recognizer, audio: np.ndarray) -> tuple[int, int, float]:
    """(tokens shown before the end, tokens in the final, audio seconds of the partial's last change)."""
    segment = recognizer.new_segment(0.0, DecodeOptions(beam_size=None, ctc_weight=None))
    shown, changed_s = 0, 0.0
    for pos in range(0, len(audio), PIECE):
        await segment.accept(audio[pos:pos + PIECE])
        decoder = segment.decoder
        n = len(decoder.partial().tokens) if decoder.active or decoder.finished else 0
        if n != shown:
            shown, changed_s = n, min(pos + PIECE, len(audio)) / RATE
    await segment.finish()
    return shown, len(segment.decoder.nbest()[0].tokens), changed_s


async def main_async(args: argparse.Namespace) -> None:
    from model_export.data import join_segments, load_audio, read_manifest  # soundfile: a [train] dependency
    from service.recognizer import Recognizer

    recognizer = Recognizer(require_model(args.model_dir), inference_threads=1)
    utts = read_manifest(args.manifest)[: args.limit]
    shown = total = 0
    stalls, lengths = [], []
    for audio in join_segments([load_audio(u.path) for u in utts], args.join, args.gap_s, RATE):
        n_shown, n_final, changed_s = await run_segment(recognizer, audio)
        shown, total = shown + n_shown, total + n_final
        lengths.append(len(audio) / RATE)
        stalls.append(len(audio) / RATE - changed_s)
    print(f"\n## partials on continuous speech ({len(lengths)} segments of {args.join} utterances, "
          f"{min(lengths):.1f}-{max(lengths):.1f} s, {args.gap_s:g} s gaps, model {recognizer.info.version})\n")
    print(f"tokens shown before the segment ended: {shown} of {total} in the finals ({100 * shown / max(total, 1):.0f} %)")
    print(f"audio from the partial's last change to the segment end: mean {np.mean(stalls):.1f} s, "
          f"max {np.max(stalls):.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=ROOT / "data" / "corpus_talk" / "dev.jsonl")
    p.add_argument("--model-dir", type=Path, default=default_model_dir())
    p.add_argument("--limit", type=int, default=40, help="dev utterances")
    p.add_argument("--join", type=int, default=4, help="utterances per segment")
    p.add_argument("--gap-s", type=float, default=0.3, help="silence after each utterance, seconds")
    args = p.parse_args(argv)
    print(machine_report())
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
