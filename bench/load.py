"""Load: how many concurrent real-time streams one server keeps up with, and at what latency.

    .venv/bin/python -m bench.load                                  # ramp 1..150 streams, bundled model
    .venv/bin/python -m bench.load --streams 1,2 --seconds 8        # a quick check
    .venv/bin/python -m bench.load --server-arg=--workers=2         # two worker processes (STT_WORKERS)

Starts ``python -m service`` itself, then for each level N runs N StreamingRecognize
clients (grpc.aio, one asyncio process) that send espeak-ng speech at real-time pace
in ``--chunk-ms`` messages with interim results on. Per stream:

- partial latency: a partial covers the stream up to ``result_end_time``; latency is
  its arrival minus the moment the audio up to that point had been sent (partials
  ending inside speech, up to 300 ms after it: those are the ones that bring words);
- final latency: a final's arrival minus the moment the end of its utterance's speech
  had been sent (includes the endpointing silence, ``--end-silence-ms``);
- kept up: the client never fell more than one chunk behind real time (gRPC flow
  control pushes back on a server that does not read) and no RPC error.

The server's CPU % (of one core; all its processes) and RSS are sampled from /proc meanwhile, and
the p95 of its event-loop lag (``stt_event_loop_lag_seconds``, all workers) is read from its
/metrics before and after each level (the bucket bound it falls under). Prints a
table, the most streams with p95 partial latency <= ``--target-ms`` and every stream
kept up, and writes a PNG plot and a JSON file.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.common import (
    ProcessSampler,
    ServerProcess,
    Utterance,
    default_model_dir,
    fmt_ms,
    machine_report,
    percentiles,
    require_model,
    speech_stream,
    to_pcm16,
)
from service.proto.stt.v1 import stt_pb2, stt_pb2_grpc

DEFAULT_LEVELS = "1,5,10,20,40,60,80,100,150"


@dataclass
class StreamStats:
    partial_latencies: list[float] = field(default_factory=list)
    final_latencies: list[float] = field(default_factory=list)
    max_lag_s: float = 0.0  # how far the sender fell behind real time
    finals: int = 0
    error: str | None = None


@dataclass
class LevelResult:
    streams: int
    ok: int
    errors: int
    kept_up: int
    partial_ms: list[float]  # p50, p95, p99
    final_ms: list[float]
    server_cpu_percent: float
    server_rss_mb: float
    finals: int
    client_cpu_percent: float = float("nan")  # this load generator: on the same machine, it competes
    loop_lag_p95_ms: float = float("nan")  # the server's stt_event_loop_lag_seconds p95 during the level (bucket bound)


class SendClock:
    """When the audio up to each stream position had been sent (monotonic seconds)."""

    def __init__(self) -> None:
        self.positions: list[float] = [0.0]
        self.times: list[float] = [0.0]

    def record(self, position_s: float, at: float) -> None:
        self.positions.append(position_s)
        self.times.append(at)

    def sent_at(self, position_s: float) -> float:
        i = int(np.searchsorted(self.positions, position_s - 1e-6))
        return self.times[min(i, len(self.times) - 1)]


def in_speech(utterances: list[Utterance], position_s: float, margin_s: float = 0.3) -> bool:
    """True when ``position_s`` lies in an utterance (plus the default speech padding after it)."""
    return any(u.start_s <= position_s <= u.end_s + margin_s for u in utterances)


def config(end_silence_ms: int) -> stt_pb2.StreamingRecognitionConfig:
    recognition = stt_pb2.RecognitionConfig(
        encoding=stt_pb2.RecognitionConfig.LINEAR16, sample_rate_hertz=16000, language_code="en-US",
        endpointing=stt_pb2.EndpointingConfig(end_silence_ms=end_silence_ms),
    )
    return stt_pb2.StreamingRecognitionConfig(config=recognition, interim_results=True)


async def run_stream(stub: stt_pb2_grpc.SpeechStub, pcm: bytes, utterances: list[Utterance], chunk_ms: int,
                     end_silence_ms: int, delay_s: float) -> StreamStats:
    stats, clock = StreamStats(), SendClock()
    chunk_bytes = 32 * chunk_ms  # 16 kHz 16-bit: 32 bytes per ms
    await asyncio.sleep(delay_s)  # stagger the streams' chunk boundaries

    async def requests():
        yield stt_pb2.StreamingRecognizeRequest(streaming_config=config(end_silence_ms))
        start = time.monotonic()
        for i, pos in enumerate(range(0, len(pcm), chunk_bytes)):
            due = start + i * chunk_ms / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            stats.max_lag_s = max(stats.max_lag_s, time.monotonic() - due)
            yield stt_pb2.StreamingRecognizeRequest(audio_content=pcm[pos : pos + chunk_bytes])
            clock.record((pos + len(pcm[pos : pos + chunk_bytes])) / 32000, time.monotonic())

    ends = [u.end_s for u in utterances]
    try:
        async for response in stub.StreamingRecognize(requests()):
            now = time.monotonic()
            for result in response.results:
                end_s = result.result_end_time.ToNanoseconds() / 1e9
                if result.is_final:
                    stats.finals += 1
                    # The utterance whose speech ended last at or before the final's end.
                    i = int(np.searchsorted(ends, end_s + 1e-6)) - 1
                    if i >= 0:
                        stats.final_latencies.append(now - clock.sent_at(ends[i]))
                elif result.stability < 0.5 and in_speech(utterances, end_s):
                    # One latency per partial response (its unstable part), for partials that end in
                    # speech: the VAD holds trailing silence back and releases it with the final, and
                    # partials covering only that silence carry no new words.
                    stats.partial_latencies.append(now - clock.sent_at(end_s))
    except grpc.aio.AioRpcError as err:
        stats.error = f"{err.code().name}: {err.details()}"
    return stats


async def run_level(address: str, n: int, audio: list[tuple[bytes, list[Utterance]]], chunk_ms: int,
                    end_silence_ms: int, connections: int = 16) -> list[StreamStats]:
    rng = random.Random(n)
    # HTTP/2 connections, each its own (a local subchannel pool): with STT_WORKERS > 1 the
    # kernel spreads connections, not streams, over the worker processes. 0: one per stream.
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(min(n, connections) if connections else n)]
    try:
        tasks = [
            run_stream(stt_pb2_grpc.SpeechStub(channels[i % len(channels)]), *audio[i % len(audio)], chunk_ms,
                       end_silence_ms, rng.uniform(0, 1.0))
            for i in range(n)
        ]
        return await asyncio.gather(*tasks)
    finally:
        for channel in channels:
            await channel.close()


def summarize(n: int, stats: list[StreamStats], sampler: ProcessSampler, chunk_ms: int,
              client: ProcessSampler | None = None) -> LevelResult:
    partial = [x for s in stats for x in s.partial_latencies]
    final = [x for s in stats for x in s.final_latencies]
    kept_up = sum(1 for s in stats if s.error is None and s.max_lag_s <= chunk_ms / 1000)
    return LevelResult(
        streams=n, ok=sum(s.error is None for s in stats), errors=sum(s.error is not None for s in stats),
        kept_up=kept_up, partial_ms=[v * 1000 for v in percentiles(partial)],
        final_ms=[v * 1000 for v in percentiles(final)], server_cpu_percent=sampler.mean_cpu(),
        server_rss_mb=sampler.max_rss() / 2**20, finals=sum(s.finals for s in stats),
        client_cpu_percent=client.mean_cpu() if client else float("nan"),
    )


def lag_p95_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """p95 of the observations between two scrapes of a histogram, as the bucket bound it falls under (ms)."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return float("nan")
    return 1000 * next(le for le, count in counts if count >= 0.95 * total)


def table(results: list[LevelResult]) -> str:
    lines = ["| streams | ok | kept up | partial p50/p95/p99 ms | final p50/p95/p99 ms | server CPU % | server RSS MB "
             "| client CPU % | loop lag p95 ms (<=) |", "|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in results:
        part = "/".join(fmt_ms(v / 1000) for v in r.partial_ms)
        fin = "/".join(fmt_ms(v / 1000) for v in r.final_ms)
        lines.append(f"| {r.streams} | {r.ok} | {r.kept_up} | {part} | {fin} | {r.server_cpu_percent:.0f} | "
                     f"{r.server_rss_mb:.0f} | {r.client_cpu_percent:.0f} | {r.loop_lag_p95_ms:g} |")
    return "\n".join(lines)


def plot(results: list[LevelResult], target_ms: float, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    n = [r.streams for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, q in enumerate(("p50", "p95", "p99")):
        ax1.plot(n, [r.partial_ms[i] for r in results], marker="o", label=f"partial {q}")
        ax1.plot(n, [r.final_ms[i] for r in results], marker="x", linestyle="--", label=f"final {q}")
    ax1.axhline(target_ms, color="red", linewidth=0.8, label=f"target {target_ms:g} ms")
    ax1.set(xlabel="concurrent streams", ylabel="latency (ms)", yscale="log", title="latency vs streams")
    ax1.legend(fontsize=7)
    ax2.plot(n, [r.server_cpu_percent for r in results], marker="o", label="server CPU % (one core = 100)")
    ax2b = ax2.twinx()
    ax2b.plot(n, [r.server_rss_mb for r in results], marker="s", color="gray", label="server RSS MB")
    ax2.set(xlabel="concurrent streams", ylabel="CPU %", title="server resources")
    ax2b.set_ylabel("RSS (MB)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default=DEFAULT_LEVELS, help=f"levels of concurrent streams (default {DEFAULT_LEVELS})")
    p.add_argument("--seconds", type=float, default=30.0, help="audio per stream at each level (real time)")
    p.add_argument("--chunk-ms", type=int, default=100, help="audio per message, 20..100 ms")
    p.add_argument("--end-silence-ms", type=int, default=800, help="endpointing silence that ends a segment")
    p.add_argument("--target-ms", type=float, default=300.0, help="p95 partial latency target")
    p.add_argument("--model-dir", type=Path, default=default_model_dir())
    p.add_argument("--server-arg", action="append", default=[], help="extra server flag, e.g. --server-arg=--batch-max-wait-ms=2")
    p.add_argument("--connections", type=int, default=16,
                   help="client connections the streams share (0: one per stream, as many small clients)")
    p.add_argument("--no-early-stop", action="store_true", help="run every level even past the target")
    p.add_argument("--plot", type=Path, default=Path("bench/load.png"))
    p.add_argument("--json", type=Path, default=Path("bench/load.json"))
    args = p.parse_args(argv)
    levels = [int(x) for x in args.streams.split(",")]
    print(machine_report())
    audio = [speech_stream(args.seconds, seed=i) for i in range(8)]  # 8 different speech streams, reused
    audio = [(to_pcm16(samples), utterances) for samples, utterances in audio]
    server_args = ["--max-streams", str(max(levels) + 10), *args.server_arg]
    results: list[LevelResult] = []
    with ServerProcess(require_model(args.model_dir), server_args) as server:
        print(f"server: pid {server.pid}, start-up {server.startup_s:.2f} s, model {args.model_dir}")
        for n in levels:
            lag_before = server.histogram("stt_event_loop_lag_seconds")
            with ProcessSampler(server.pid) as sampler, ProcessSampler(os.getpid(), tree=False) as client:
                stats = asyncio.run(run_level(server.address, n, audio, args.chunk_ms, args.end_silence_ms,
                                              args.connections))
            result = summarize(n, stats, sampler, args.chunk_ms, client)
            result.loop_lag_p95_ms = lag_p95_ms(lag_before, server.histogram("stt_event_loop_lag_seconds"))
            results.append(result)
            errors = {s.error for s in stats if s.error}
            print(f"{n:4d} streams: partial p95 {result.partial_ms[1]:.0f} ms, final p95 {result.final_ms[1]:.0f} ms, "
                  f"kept up {result.kept_up}/{n}, CPU {result.server_cpu_percent:.0f} %" + (f", errors {errors}" if errors else ""),
                  flush=True)
            if not args.no_early_stop and (result.partial_ms[1] > 3 * args.target_ms or result.kept_up < n // 2):
                print("stopping the ramp: far past the target")
                break
    good = [r.streams for r in results if r.partial_ms[1] <= args.target_ms and r.kept_up == r.streams and not r.errors]
    print(f"\n## load ({args.chunk_ms} ms chunks, {args.seconds:g} s per stream, end silence {args.end_silence_ms} ms, "
          f"{args.connections or 'one per stream'} connections, server flags {' '.join(server_args)})\n")
    print(table(results))
    print(f"\nmost real-time streams with p95 partial latency <= {args.target_ms:g} ms: {max(good) if good else 0}")
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                     "machine": machine_report(), "results": [asdict(r) for r in results]}, indent=1))
    plot(results, args.target_ms, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
