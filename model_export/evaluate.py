"""Dev-set word error rate of a trained model, decoded four ways.

    python -m model_export.evaluate --manifest data/corpus/dev.jsonl --model-dir service/models/default \
        --checkpoint runs/default/final.pt [--int8-dir runs/default/int8] [--limit 300]

- full attention, offline (PyTorch, greedy): the upper reference for the windowed decoders
- windowed attention, offline (ONNX, the service's decoder over a whole segment)
- windowed attention, streaming (ONNX, audio fed in 100 ms pieces, the service's SegmentRecognizer)
- the same streaming decode on the int8 graphs, when given
The windowed decoders use joint CTC/attention scoring at --ctc-weight and beam --beam (the
service defaults); with a weight > 0 windowed offline decoding is also reported attention-only,
and with a beam > 1 also greedy, for comparison. With an lm.onnx in the model folder the
decoders fuse it at --lm-weight (the service default), and offline decoding is also reported
without it.
Each utterance is one segment (no VAD): this measures the model, bench/ measures the service.
With --join N, N consecutive utterances with --join-gap-s of silence after each make one segment:
continuous speech, as a VAD segment holds it when a caller's pauses are shorter than the
endpointer's end silence.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from pathlib import Path

import jiwer
import numpy as np

from model_export.data import cut_lead_silence, join_segments, load_audio, read_manifest
from service.pipeline.ctc_prefix import DEFAULT_CTC_WEIGHT
from service.pipeline.decoder import DEFAULT_BEAM_SIZE, DEFAULT_BEAM_THRESHOLD, DecodeOptions, decode_offline
from service.pipeline.lm import DEFAULT_LM_WEIGHT
from service.pipeline.encoder import encode_offline
from service.pipeline.features import compute_features
from service.recognizer import Recognizer


def windowed_offline(rec: Recognizer, audio: np.ndarray, options: DecodeOptions) -> str:
    store = encode_offline(rec.encoder, audio, rec.chunk_frames)
    dec = decode_offline(rec.decoder, rec.info, store, options, rec.lm)
    return rec.assembler.hypothesis(dec, store.length, 0.0, False).text


async def windowed_streaming(rec: Recognizer, audio: np.ndarray, options: DecodeOptions, piece: int = 1600) -> str:
    seg = rec.new_segment(0.0, options)
    for i in range(0, len(audio), piece):
        await seg.accept(audio[i:i + piece])
    return (await seg.finish()).text


def full_attention(checkpoint: Path, audios: list[np.ndarray]) -> list[str]:
    import torch

    from model_export.export import load_checkpoint
    from model_export.train import greedy_decode
    from service.pipeline.tokenizer import Tokenizer

    model = load_checkpoint(checkpoint)
    tok = Tokenizer(model.cfg.vocab)
    out = []
    for audio in audios:
        feats = compute_features(audio)
        pad = -len(feats) % model.cfg.subsampling
        x = torch.from_numpy(np.pad(feats, ((0, pad), (0, 0))))[None]
        out.append(tok.decode(greedy_decode(model, x, torch.tensor([len(feats)]), tok)[0]))
    return out


def score(refs: list[str], hyps: list[str]) -> dict:
    return {"wer": round(jiwer.wer(refs, hyps), 4), "cer": round(jiwer.cer(refs, hyps), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, help="PyTorch checkpoint for the full-attention reference")
    p.add_argument("--int8-dir", type=Path)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--beam", type=int, default=DEFAULT_BEAM_SIZE, help="beam width (default: the service's)")
    p.add_argument("--beam-threshold", type=float, default=DEFAULT_BEAM_THRESHOLD,
                   help="beam pruning in log-prob below the best (0: off; default: the service's)")
    p.add_argument("--ctc-weight", type=float, default=DEFAULT_CTC_WEIGHT,
                   help="joint CTC/attention scoring weight (0: attention only; default: the service's)")
    p.add_argument("--lm-weight", type=float, default=DEFAULT_LM_WEIGHT,
                   help="language model weight, when the model folder has an lm.onnx (0: off; default: the service's)")
    p.add_argument("--cut-lead", action="store_true",
                   help="cut each utterance's lead silence at its speech onset (a stream that opens on speech; every "
                        "corpus utterance opens on 0.05-0.6 s of silence)")
    p.add_argument("--join", type=int, default=1,
                   help="utterances per segment, back to back with --join-gap-s of silence after each")
    p.add_argument("--join-gap-s", type=float, default=0.3)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    utts = read_manifest(args.manifest)
    utts = utts[: args.limit] if args.limit else utts
    audios = [load_audio(u.path) for u in utts]
    if args.cut_lead:
        audios = [cut_lead_silence(a) for a in audios]
    refs = [u.text for u in utts]
    if args.join > 1:
        audios = join_segments(audios, args.join, args.join_gap_s)
        refs = [" ".join(refs[i:i + args.join]) for i in range(0, len(refs), args.join)]
    hours = sum(len(a) for a in audios) / 16000 / 3600
    rec = Recognizer(args.model_dir, inference_threads=1, lm_weight=args.lm_weight)
    options = DecodeOptions(beam_size=args.beam, ctc_weight=args.ctc_weight, lm_weight=rec.lm_weight,
                            beam_threshold=args.beam_threshold)
    report: dict = {"manifest": str(args.manifest), "utterances": len(utts), "hours": round(hours, 3),
                    "beam": args.beam, "beam_threshold": args.beam_threshold, "ctc_weight": options.ctc_weight,
                    "lm_weight": options.lm_weight, "cut_lead": args.cut_lead}
    if args.join > 1:
        report.update(join=args.join, join_gap_s=args.join_gap_s)
    if args.checkpoint:
        report["full_attention_offline"] = score(refs, full_attention(args.checkpoint, audios))
    t0 = time.perf_counter()
    report["windowed_offline"] = score(refs, [windowed_offline(rec, a, options) for a in audios])
    report["windowed_offline"]["rtf_1thread"] = round((time.perf_counter() - t0) / (hours * 3600), 4)
    if options.beam_size > 1:
        greedy = dataclasses.replace(options, beam_size=1)
        report["windowed_offline_greedy"] = score(refs, [windowed_offline(rec, a, greedy) for a in audios])
    if options.lm_weight:
        report["windowed_offline_no_lm"] = score(refs, [windowed_offline(rec, a, dataclasses.replace(options, lm_weight=0.0))
                                                        for a in audios])
    if options.ctc_weight:
        plain = dataclasses.replace(options, ctc_weight=0.0, lm_weight=0.0)
        t0 = time.perf_counter()
        report["windowed_offline_attention_only"] = score(refs, [windowed_offline(rec, a, plain) for a in audios])
        report["windowed_offline_attention_only"]["rtf_1thread"] = round((time.perf_counter() - t0) / (hours * 3600), 4)
    hyps = asyncio.run(_stream_all(rec, audios, options))
    report["windowed_streaming"] = score(refs, hyps)
    report["examples"] = [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:5]]
    if args.int8_dir:
        rec8 = Recognizer(args.int8_dir, inference_threads=1, lm_weight=args.lm_weight)
        t0 = time.perf_counter()
        options8 = dataclasses.replace(options, lm_weight=rec8.lm_weight)
        report["windowed_offline_int8"] = score(refs, [windowed_offline(rec8, a, options8) for a in audios])
        report["windowed_offline_int8"]["rtf_1thread"] = round((time.perf_counter() - t0) / (hours * 3600), 4)
        report["windowed_offline_int8"]["lm_weight"] = rec8.lm_weight  # 0 unless the int8 folder has an lm.onnx
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))


async def _stream_all(rec: Recognizer, audios: list[np.ndarray], options: DecodeOptions) -> list[str]:
    return [await windowed_streaming(rec, a, options) for a in audios]


if __name__ == "__main__":
    main()
