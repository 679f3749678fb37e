"""Per-stream CPU of the whole recognition pipeline, without gRPC: where a stream's CPU goes.

    .venv/bin/python -m bench.pipeline_cpu                              # 40 streams x 15 s, 100 ms messages
    .venv/bin/python -m bench.pipeline_cpu --chunk-ms 20                # small messages: the per-message cost
    .venv/bin/python -m bench.pipeline_cpu --profile                    # plus a cProfile of the event loop

N StreamSessions (service/session.py: audio decoding, resampling, VAD, features, encoder,
windowed decoder, partial and final results) share one Recognizer with its micro-batchers
and one inference thread, as one server process does, and are fed LINEAR16 speech in
``--chunk-ms`` messages round-robin, as fast as they go (not at real-time pace: the point
is CPU per audio second, not latency). Prints CPU seconds (all threads of this process)
per audio second. With ``bench.load``'s server CPU at the same stream count, the
difference is what gRPC and the protobuf layer cost; ``--profile`` says which stage of
the pipeline costs what (the inference thread is not in the profile: it is the
difference between process CPU and the profile's total).

To compare two versions, run it in both checkouts, alternating (``git worktree``).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time
from pathlib import Path

from bench.common import RATE, default_model_dir, machine_report, require_model, speech_stream, to_pcm16


async def run(model_dir: Path, streams: int, seconds: float, chunk_ms: int) -> tuple[float, float, float, int]:
    """-> (audio seconds, process CPU seconds, wall seconds, results sent)."""
    from service.pipeline.audio import AudioFormat, Encoding
    from service.recognizer import Recognizer
    from service.session import StreamConfig, StreamSession

    pcm = [to_pcm16(speech_stream(seconds, seed=i)[0]) for i in range(4)]
    chunk = 2 * RATE * chunk_ms // 1000
    n_chunks = min(len(p) for p in pcm) // chunk
    recognizer = Recognizer.load(model_dir, inference_threads=1)
    await recognizer.start()
    config = StreamConfig(audio=AudioFormat(Encoding.LINEAR16, RATE, 1), interim_results=True)
    results: list[int] = []

    async def feed(audio: bytes) -> None:
        session = StreamSession(recognizer, config)
        try:
            for k in range(n_chunks):
                results.append(len(await session.accept_audio(audio[k * chunk:(k + 1) * chunk])))
                await asyncio.sleep(0)  # let the other streams send theirs: batches form as in a server
            results.append(len(await session.finish()))
        finally:
            session.close()

    started_wall, started_cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(feed(pcm[i % len(pcm)]) for i in range(streams)))
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    await recognizer.close()
    return streams * n_chunks * chunk / (2 * RATE), cpu, wall, sum(results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=default_model_dir())
    p.add_argument("--streams", type=int, default=40)
    p.add_argument("--seconds", type=float, default=15.0, help="speech per stream (pauses included)")
    p.add_argument("--chunk-ms", type=int, default=100, help="audio per message")
    p.add_argument("--profile", action="store_true", help="print the top functions by own time (cProfile)")
    args = p.parse_args(argv)
    model_dir = require_model(args.model_dir)
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    audio_s, cpu, wall, sent = asyncio.run(run(model_dir, args.streams, args.seconds, args.chunk_ms))
    if profiler is not None:
        profiler.disable()
    print(machine_report())
    print(f"\n## pipeline CPU without gRPC ({args.streams} streams x {args.seconds:g} s, {args.chunk_ms} ms messages, "
          f"one inference thread{', under cProfile: slower' if profiler else ''})")
    print(f"{audio_s:.0f} s of audio, {cpu:.2f} CPU s ({wall:.2f} s wall), {sent} responses: "
          f"**{1000 * cpu / audio_s:.2f} ms CPU per audio second** (1/{audio_s / cpu:.0f} of a core per stream)")
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
