"""Model real-time factor on ONE thread: fp32 vs int8, micro-batched vs unbatched, side by side.

    .venv/bin/python -m bench.model_rtf                                   # bundled model, 8 streams, 20 s each
    .venv/bin/python -m bench.model_rtf --streams 2 --seconds 4           # a quick check
    .venv/bin/python -m bench.model_rtf --also-beams 4                    # the default beam beside beam 4

The process is pinned to one CPU (``--cpu``, default the last one it may use): "one thread"
then means one core for the event loop and the inference thread together, as in a pod with
one CPU per worker, and the figures no longer depend on where the scheduler puts the
inference thread (on this 2-core VM unpinned runs of the same code spread 0.017-0.025). Each
variant is run ``--repeats`` times and the least CPU counts: the VM's speed drifts between minutes.

The Recognizer runs with one inference thread (ONNX Runtime intra-op 1, inter-op 1,
one worker). Speech goes through SegmentRecognizer (features -> encoder -> decoder)
in 100 ms pieces, as the session feeds it, then ``finish()``. RTF = CPU seconds /
audio seconds per stream (lower is better; 1/RTF streams fit one core); the wall-clock
RTF is printed beside it.

- unbatched: the batchers are not started, so every ONNX call runs alone;
- batched: N streams run concurrently through the Recognizer's micro-batchers
  (``--batch-max-wait-ms``), so calls of different streams are stacked;
- decoding: the service defaults (joint CTC/attention, beam STT_BEAM_SIZE, the model
  folder's lm.onnx at STT_LM_WEIGHT when it has one), and on the fp32 graphs also without
  the LM (``no LM``), greedy (``beam 1``) and greedy attention only without the LM
  (``beam 1, ctc 0``: the graphs alone), to show what the LM, the beam and the CTC prefix
  scores cost.

int8 rows serve the model folder's int8/ graphs as STT_PRECISION=int8 does; a folder without
them gets int8 graphs from
model_export.export.quantize (onnxruntime.quantization, 7-bit weights as `export
--int8-reduce-range` makes them) in a temporary folder, beside a copy of the fp32 lm.onnx;
skipped with a note when that is not importable.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import RATE, default_model_dir, machine_report, require_model, speech_stream
from service.pipeline.ctc_prefix import DEFAULT_CTC_WEIGHT
from service.pipeline.decoder import DEFAULT_BEAM_SIZE, DecodeOptions
from service.pipeline.lm import DEFAULT_LM_WEIGHT, LM_FILE
from service.recognizer import INT8_SUBDIR

PIECE = RATE // 10  # 100 ms


async def recognize(recognizer, samples: np.ndarray) -> None:
    segment = recognizer.new_segment(offset_s=0.0, options=DecodeOptions(beam_size=None, ctc_weight=None))
    for pos in range(0, len(samples), PIECE):
        await segment.accept(samples[pos : pos + PIECE])
    await segment.finish()


async def run(model_dir: Path, streams: list[np.ndarray], batched: bool, wait_ms: float,
              ctc_weight: float, beam: int, lm_weight: float, repeats: int = 1,
              precision: str = "fp32") -> tuple[float, float]:
    """(CPU seconds, wall seconds) for all ``streams`` on one inference thread, the least of
    ``repeats`` passes (this VM's speed drifts by 20 % and more between minutes).

    Concurrently when batched, else one by one. CPU time (all threads of this
    process: the event loop and the ONNX worker) is the compute; wall time of the
    batched run also contains the batchers' waits.
    """
    from service.recognizer import Recognizer

    recognizer = Recognizer.load(model_dir, inference_threads=1, batch_max_size=64, batch_max_wait_ms=wait_ms,
                                 ctc_weight=ctc_weight, beam_size=beam, lm_weight=lm_weight, precision=precision)
    try:
        await recognize(recognizer, streams[0][: RATE * 2])  # warm-up: first-call allocations
        if batched:
            await recognizer.start()
        best = (float("inf"), float("inf"))
        for _ in range(repeats):
            started, cpu = time.perf_counter(), time.process_time()
            if batched:
                await asyncio.gather(*(recognize(recognizer, s) for s in streams))
            else:
                for s in streams:
                    await recognize(recognizer, s)
            best = min(best, (time.process_time() - cpu, time.perf_counter() - started))
        return best
    finally:
        await recognizer.close()


def int8_dir(model_dir: Path, tmp: Path) -> tuple[Path, str] | None:
    """(folder, precision) that serve the int8 graphs, or None when none can be made."""
    if all((model_dir / INT8_SUBDIR / name).is_file() for name in ("encoder.onnx", "decoder.onnx")):
        return model_dir, "int8"
    try:
        from model_export.export import quantize
    except ImportError as err:
        print(f"int8: skipped ({err}); install the [train] extra for onnx + onnxruntime.quantization")
        return None
    out = tmp / "int8"
    quantize(model_dir, out, reduce_range=True)
    if (model_dir / LM_FILE).is_file():  # the LM stays fp32, as the service would pair them
        shutil.copy(model_dir / LM_FILE, out / LM_FILE)
    return out, "fp32"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=default_model_dir())
    p.add_argument("--streams", type=int, default=8, help="streams in the batched (and unbatched) run")
    p.add_argument("--seconds", type=float, default=20.0, help="speech per stream (one segment)")
    p.add_argument("--batch-max-wait-ms", type=float, default=2.0)
    p.add_argument("--ctc-weight", type=float, default=DEFAULT_CTC_WEIGHT, help="joint decoding weight (service default)")
    p.add_argument("--beam", type=int, default=DEFAULT_BEAM_SIZE, help="beam width (service default)")
    p.add_argument("--lm-weight", type=float, default=DEFAULT_LM_WEIGHT,
                   help="shallow-fusion weight when the model folder has an lm.onnx (service default)")
    p.add_argument("--repeats", type=int, default=3, help="passes per variant; the least CPU counts")
    p.add_argument("--also-beams", default="", help="comma-separated beam widths to add as fp32 rows")
    p.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                   help="pin the process to this CPU (-1: do not pin)")
    args = p.parse_args(argv)
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    print(machine_report())
    print(f"pinned to:    {'CPU ' + str(args.cpu) if args.cpu >= 0 else 'no CPU (--cpu -1)'}")
    model_dir = require_model(args.model_dir)
    # One segment of continuous speech per stream (short pauses, as within one utterance).
    streams = [speech_stream(args.seconds, seed=i, pause_s=0.3, lead_s=0.0)[0] for i in range(args.streams)]
    audio_s = sum(len(s) for s in streams) / RATE
    rows: dict[tuple[str, str], float] = {}
    walls: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lm = args.lm_weight if (model_dir / LM_FILE).is_file() else 0.0
        fp32 = (model_dir, "fp32")
        variants = {"fp32": (fp32, args.ctc_weight, args.beam, lm)}
        if lm:
            variants["fp32, no LM"] = (fp32, args.ctc_weight, args.beam, 0.0)
        for beam in [int(b) for b in args.also_beams.split(",") if b]:
            variants[f"fp32, beam {beam}"] = (fp32, args.ctc_weight, beam, lm)
        variants.update({"fp32, beam 1": (fp32, args.ctc_weight, 1, lm),
                         "fp32, beam 1, ctc 0": (fp32, 0.0, 1, 0.0)})
        q = int8_dir(model_dir, Path(tmp))
        if q is not None:
            print(f"int8 graphs: {q[0] / INT8_SUBDIR if q[1] == 'int8' else 'quantized in a temporary folder'}")
            variants["int8"] = (q, args.ctc_weight, args.beam, lm)
            variants["int8, beam 1, ctc 0"] = (q, 0.0, 1, 0.0)
        for name, ((path, precision), weight, beam, lm_weight) in variants.items():
            for batched in (False, True):
                mode = "batched" if batched else "unbatched"
                cpu_s, wall_s = asyncio.run(run(path, streams, batched, args.batch_max_wait_ms, weight, beam,
                                                 lm_weight, args.repeats, precision))
                rows[(name, mode)], walls[(name, mode)] = cpu_s / audio_s, wall_s / audio_s
                print(f"{name} {mode}: {cpu_s:.2f} CPU s, {wall_s:.2f} wall s for {audio_s:.1f} s of audio", flush=True)
    print(f"\n## model RTF, one thread ({args.streams} streams x {args.seconds:g} s, model {model_dir}, "
          f"ctc weight {args.ctc_weight:g}, beam {args.beam} unless named, LM weight {lm:g} unless named, "
          f"least of {args.repeats} passes)\n")
    print("RTF = CPU seconds / audio seconds per stream (wall-clock RTF in brackets)\n")
    print("| graphs | unbatched RTF | batched RTF | batched / unbatched | streams per core (batched) |")
    print("|---|---:|---:|---:|---:|")
    for name in dict.fromkeys(n for n, _ in rows):
        u, b = rows[(name, "unbatched")], rows[(name, "batched")]
        wu, wb = walls[(name, "unbatched")], walls[(name, "batched")]
        print(f"| {name} | {u:.4f} ({wu:.4f}) | {b:.4f} ({wb:.4f}) | {b / u:.2f} | {1 / b:.0f} |")
    print()
    pairs = [("fp32", "fp32, no LM")] if lm else []
    pairs += [("fp32", f"fp32, beam {b}") for b in args.also_beams.split(",") if b]
    pairs += [("fp32", "fp32, beam 1"), ("fp32, beam 1", "fp32, beam 1, ctc 0")]
    if ("int8", "unbatched") in rows:
        pairs = [("int8", "fp32"), ("int8, beam 1, ctc 0", "fp32, beam 1, ctc 0")] + pairs
    for a, b in pairs:
        print(f"{a} / {b} RTF: unbatched {rows[(a, 'unbatched')] / rows[(b, 'unbatched')]:.2f}, "
              f"batched {rows[(a, 'batched')] / rows[(b, 'batched')]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
