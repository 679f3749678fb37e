"""Decoder CPU alone: windowed joint CTC/attention decoding over encoded dev speech, one thread.

    .venv/bin/python -m bench.decoder_rtf                        # 48 dev utterances, beams 4 and 1
    .venv/bin/python -m bench.decoder_rtf --group 8              # 8 utterances per segment (~27 s)
    .venv/bin/python -m bench.decoder_rtf --beams 4 --thresholds 0,6,2   # beam pruning side by side
    .venv/bin/python -m bench.decoder_rtf --limit 600 --beams 4,8 --ctc-weights 0.3,0.4   # a decoding sweep
    .venv/bin/python -m bench.decoder_rtf --model-dir DIR --beams 8 --lm-weights 0,0.1,0.2   # DIR has an lm.onnx

The speech is encoded once (not timed); then every segment is decoded offline
(service/pipeline/decoder.py, as the service decodes it) and the process CPU time is
divided by the audio seconds. This isolates what the decoding rule costs (ONNX decoder
steps, CTC prefix scores, beam bookkeeping) from features, encoder and serving.

To compare two versions of the decoder, run it in both checkouts, alternating, on the
same machine (``git worktree add ../base REV``; the machines are noisy, so read the
ratio of runs made side by side). It also prints a digest of the decoded tokens: two
versions that should decode identically must print the same digest; and the WER/CER of
the best hypotheses (jiwer), so a setting that saves CPU shows what it costs.

Needs the dev set: ``python -m model_export.corpus --out data/corpus --train-utts 24000
--dev-utts 600 --only dev`` (30 s).
"""
from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, default_model_dir, machine_report, require_model
from service.pipeline.ctc_prefix import DEFAULT_CTC_WEIGHT
from service.pipeline.decoder import DEFAULT_BEAM_THRESHOLD, DecodeOptions, decode_offline
from service.pipeline.encoder import encode_offline

DEFAULT_MANIFEST = ROOT / "data" / "corpus" / "dev.jsonl"
GAP_S = 0.3  # silence between utterances joined into one segment


def main(argv: list[str] | None = None) -> int:
    from model_export.data import join_segments, load_audio, read_manifest  # soundfile: a [train] dependency
    from service.recognizer import Recognizer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--model-dir", type=Path, default=default_model_dir())
    p.add_argument("--limit", type=int, default=48, help="dev utterances")
    p.add_argument("--group", type=int, default=1, help="utterances joined into one segment")
    p.add_argument("--beams", default="4,1")
    p.add_argument("--ctc-weights", default=str(DEFAULT_CTC_WEIGHT),
                   help="joint CTC/attention weights to compare, comma-separated (0: attention only)")
    p.add_argument("--repeats", type=int, default=1,
                   help="decode everything this many times per setting and report the least CPU (noisy machines)")
    p.add_argument("--lm-weights", default="0",
                   help="shallow-fusion weights to compare, comma-separated; above 0 needs MODEL_DIR/lm.onnx")
    p.add_argument("--thresholds", default=str(DEFAULT_BEAM_THRESHOLD),
                   help="beam pruning thresholds to compare, comma-separated (0: off)")
    args = p.parse_args(argv)
    if not args.manifest.is_file():
        raise SystemExit(f"no dev set at {args.manifest}: see this module's docstring")
    lm_weights = [float(w) for w in args.lm_weights.split(",")]
    rec = Recognizer(require_model(args.model_dir), inference_threads=1, lm_weight=max(lm_weights))
    if max(lm_weights) > 0 and rec.lm is None:
        raise SystemExit(f"--lm-weights above 0 need {args.model_dir}/lm.onnx (python -m model_export.lm --export)")
    import jiwer  # a [dev] dependency, as is this benchmark

    utts = read_manifest(args.manifest)[: args.limit]
    audios = [load_audio(u.path) for u in utts]
    refs = [" ".join(u.text for u in utts[i:i + args.group]) for i in range(0, len(utts), args.group)]
    segments = join_segments(audios, args.group, GAP_S)
    stores = [encode_offline(rec.encoder, s, rec.chunk_frames) for s in segments]
    audio_s = sum(s.length for s in stores) * rec.info.frame_shift_s
    print(machine_report())
    print(f"{len(segments)} segments of {args.group} utterance(s), {audio_s:.0f} s of audio, model {rec.info.version}")
    settings = [(int(b), float(t), float(w), lm) for b in args.beams.split(",") for t in args.thresholds.split(",")
                for w in args.ctc_weights.split(",") for lm in lm_weights]
    for beam, threshold, weight, lm_weight in settings:
        options = DecodeOptions(beam_size=beam, ctc_weight=weight, beam_threshold=threshold, lm_weight=lm_weight)
        cpu = float("inf")
        for _ in range(args.repeats):
            digest, results = hashlib.sha256(), []
            started = time.process_time()
            for store in stores:
                results.append(decode_offline(rec.decoder, rec.info, store, options, rec.lm))
                for hyp in results[-1].nbest():
                    digest.update(np.asarray(hyp.tokens, np.int64).tobytes())
            cpu = min(cpu, time.process_time() - started)
        hyps = [rec.tokenizer.decode(r.nbest()[0].content_tokens(r.eos)) for r in results]
        print(f"beam {beam}, threshold {threshold:g}, ctc weight {weight:g}, lm weight {lm_weight:g}: "
              f"decoder RTF {cpu / audio_s:.4f} ({cpu:.2f} CPU s), "
              f"WER {100 * jiwer.wer(refs, hyps):.2f} %, CER {100 * jiwer.cer(refs, hyps):.2f} %, "
              f"tokens digest {digest.hexdigest()[:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
