"""Building a final result's attention alignment into its protobuf message, side by side.

    .venv/bin/python -m bench.alignment_proto                 # a 120 s segment (3000 frames), 480 tokens
    .venv/bin/python -m bench.alignment_proto --frames 750 --tokens 120

The servicer builds every response on the event loop, where a slow step delays every stream of
the process. "assigned": the floats assigned one by one (``weights=array.tolist()``, what the
servicer did until session 16); "packed": the same field parsed from the array's bytes
(``service.servicer._packed_floats``). Both produce the same bytes (checked here, and in
tests/test_server.py). Prints milliseconds per message (median of --repeat) and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.common import machine_report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=3000, help="encoder frames (40 ms each)")
    p.add_argument("--tokens", type=int, default=480)
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()

    from service.proto.stt.v1 import stt_pb2
    from service.servicer import _WEIGHTS_FIELD, _packed_floats

    weights = np.random.default_rng(0).random((args.tokens, args.frames), dtype=np.float32)
    tokens = [f"t{i}" for i in range(args.tokens)]

    def assigned() -> bytes:
        return stt_pb2.AttentionAlignment(tokens=tokens, num_frames=args.frames,
                                          weights=weights.reshape(-1).tolist()).SerializeToString()

    def packed() -> bytes:
        message = stt_pb2.AttentionAlignment(tokens=tokens, num_frames=args.frames)
        message.MergeFromString(_packed_floats(_WEIGHTS_FIELD, weights))
        return message.SerializeToString()

    assert assigned() == packed()
    times: dict[str, list[float]] = {"assigned": [], "packed": []}
    for _ in range(args.repeat):  # alternating: the machine's noise falls on both
        for name, build in (("assigned", assigned), ("packed", packed)):
            start = time.perf_counter()
            size = len(build())
            times[name].append(time.perf_counter() - start)
    print(machine_report())
    print(f"alignment: {args.tokens} tokens x {args.frames} frames, {size / 2**20:.1f} MiB serialized")
    med = {name: statistics.median(t) * 1000 for name, t in times.items()}
    for name, ms in med.items():
        print(f"{name:>9}: {ms:7.1f} ms per message (median of {args.repeat})")
    print(f"    ratio: {med['assigned'] / med['packed']:.1f}x")


if __name__ == "__main__":
    main()
