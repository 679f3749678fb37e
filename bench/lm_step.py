"""One language-model step on one thread: two or more lm.onnx graphs side by side.

    .venv/bin/python -m bench.lm_step OLD/lm.onnx service/models/default/lm.onnx
    .venv/bin/python -m bench.lm_step A.onnx B.onnx --batches 1,8,16 --calls 3000 --rounds 5

The decoder runs one LM step per decoding step, over the beam's rows (service/pipeline/lm.py),
so at the default beam 8 its cost is that of a (8,) token batch, about ten times a second of
audio. Each round times every graph at every batch size in turn (``--calls`` calls each, the
process pinned to ``--cpu``); the least time of the ``--rounds`` rounds counts, as this VM's speed
drifts between minutes. The outputs of the graphs are compared too: the same weights in another
graph form must give the same log-probs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.common import machine_report
from service.pipeline.lm import LmGraph
from service.pipeline.model_info import create_session


def time_calls(graph: LmGraph, inputs: dict[str, np.ndarray], calls: int) -> float:
    """Seconds per call."""
    for _ in range(calls // 10):  # warm-up
        graph.run(inputs)
    started = time.perf_counter()
    for _ in range(calls):
        graph.run(inputs)
    return (time.perf_counter() - started) / calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("graphs", type=Path, nargs="+", help="lm.onnx files (the first is the baseline)")
    p.add_argument("--batches", default="1,8,16", help="token batch sizes (the beam's rows)")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)), help="pin to this CPU; -1: no pinning")
    args = p.parse_args(argv)
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    print(machine_report())
    print(f"pinned to:    {'CPU ' + str(args.cpu) if args.cpu >= 0 else 'no CPU (--cpu -1)'}")
    sessions = [create_session(path, threads=1) for path in args.graphs]
    vocab = tuple(json.loads(sessions[0].get_modelmeta().custom_metadata_map["stt.lm_vocab"]))
    graphs = [LmGraph(session, vocab) for session in sessions]  # refuses a graph of another vocabulary
    hidden = graphs[0].info.hidden
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    inputs = {b: {"token": rng.integers(1, len(vocab), b).astype(np.int64),
                  "h": (0.3 * rng.standard_normal((b, hidden))).astype(np.float32),
                  "c": (0.3 * rng.standard_normal((b, hidden))).astype(np.float32)} for b in batches}
    for graph, path in zip(graphs[1:], args.graphs[1:]):
        for b in batches:
            ref, out = graphs[0].run(inputs[b]), graph.run(inputs[b])
            diff = max(float(np.abs(ref[k] - out[k]).max()) for k in ref)
            print(f"{path}: largest output difference from {args.graphs[0]} at batch {b}: {diff:.2e}")
    best = {(i, b): float("inf") for i in range(len(graphs)) for b in batches}
    for _ in range(args.rounds):
        for b in batches:
            for i, graph in enumerate(graphs):
                best[(i, b)] = min(best[(i, b)], time_calls(graph, inputs[b], args.calls))
    print(f"\n## LM step, one thread (least of {args.rounds} rounds of {args.calls} calls)\n")
    print("| graph | " + " | ".join(f"batch {b} (us)" for b in batches) + " | " +
          " | ".join(f"batch {b} / first" for b in batches) + " |")
    print("|---|" + "---:|" * (2 * len(batches)))
    for i, path in enumerate(args.graphs):
        us = " | ".join(f"{1e6 * best[(i, b)]:.1f}" for b in batches)
        ratio = " | ".join(f"{best[(i, b)] / best[(0, b)]:.2f}" for b in batches)
        print(f"| {path} | {us} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
