"""Memory: bytes per idle and per active stream, RSS over a long fast-fed stream, start-up time.

    .venv/bin/python -m bench.memory                                  # 60 min of audio at 20x, 50 streams
    .venv/bin/python -m bench.memory --minutes 2 --streams 5          # a quick check

- start-up: ``python -m service`` process start -> health SERVING (mean of ``--starts``);
- per idle stream: RSS growth with ``--streams`` open streams that sent their config only;
- per active stream: the same with every stream sending speech at real time;
- long stream: one stream of ``--minutes`` of speech and pauses fed at ``--speed`` x
  real time, RSS sampled every minute of audio; memory should stay flat (the
  slope over the second half is printed) and a PNG is written.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import grpc
import numpy as np

from bench.common import ServerProcess, default_model_dir, machine_report, require_model, rss_bytes, speech_stream, to_pcm16
from service.proto.stt.v1 import stt_pb2, stt_pb2_grpc

CHUNK = 3200  # 100 ms of 16 kHz LINEAR16


def config_request() -> stt_pb2.StreamingRecognizeRequest:
    config = stt_pb2.RecognitionConfig(encoding=stt_pb2.RecognitionConfig.LINEAR16, sample_rate_hertz=16000,
                                       language_code="en-US")
    return stt_pb2.StreamingRecognizeRequest(
        streaming_config=stt_pb2.StreamingRecognitionConfig(config=config, interim_results=True))


async def held_streams(server: ServerProcess, n: int, pcm: bytes | None, settle_s: float) -> float:
    """Open n streams (idle when ``pcm`` is None, else sending it at real time); RSS growth per stream."""
    before = rss_bytes(server.pid)
    release = asyncio.Event()

    async def one(stub) -> None:
        async def requests():
            yield config_request()
            if pcm is not None:
                for pos in range(0, len(pcm), CHUNK):
                    yield stt_pb2.StreamingRecognizeRequest(audio_content=pcm[pos : pos + CHUNK])
                    await asyncio.sleep(0.1)
            await release.wait()

        async for _ in stub.StreamingRecognize(requests()):
            pass

    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = stt_pb2_grpc.SpeechStub(channel)
        tasks = [asyncio.create_task(one(stub)) for _ in range(n)]
        await asyncio.sleep(settle_s)
        during = rss_bytes(server.pid)
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return (during - before) / n


def long_stream(address: str, pid: int, pcm: bytes, speed: float, every_s: float) -> list[tuple[float, int]]:
    """Feed ``pcm`` as one stream at ``speed`` x real time; (audio minutes, RSS) every ``every_s`` of audio."""
    points: list[tuple[float, int]] = []
    step = every_s * 32000

    def requests():
        yield config_request()
        start, next_mark = time.monotonic(), 0
        for i, pos in enumerate(range(0, len(pcm), CHUNK)):
            if pos >= next_mark:
                points.append((pos / 32000 / 60, rss_bytes(pid)))
                next_mark += step
            await_s = start + i * 0.1 / speed - time.monotonic()
            if await_s > 0:
                time.sleep(await_s)
            yield stt_pb2.StreamingRecognizeRequest(audio_content=pcm[pos : pos + CHUNK])

    with grpc.insecure_channel(address) as channel:
        for _ in stt_pb2_grpc.SpeechStub(channel).StreamingRecognize(requests()):
            pass
    points.append((len(pcm) / 32000 / 60, rss_bytes(pid)))
    return points


def long_audio(minutes: float) -> bytes:
    """``minutes`` of speech with pauses, built by repeating a 2-minute synthesized piece."""
    piece = to_pcm16(speech_stream(min(120.0, minutes * 60), seed=7)[0])
    repeats = int(np.ceil(minutes * 60 * 32000 / len(piece)))
    return (piece * repeats)[: int(minutes * 60) * 32000]


def slope_mb_per_hour(points: list[tuple[float, int]]) -> float:
    """Least-squares RSS slope over the second half of the stream (first half: warm-up)."""
    half = [p for p in points if p[0] >= points[-1][0] / 2]
    if len(half) < 2:
        return float("nan")
    x, y = np.array([p[0] for p in half]), np.array([p[1] for p in half]) / 2**20
    return float(np.polyfit(x, y, 1)[0] * 60)


def plot(points: list[tuple[float, int]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([p[0] for p in points], [p[1] / 2**20 for p in points], marker=".")
    ax.set(xlabel="audio minutes into the stream", ylabel="server RSS (MB)", title="RSS over one long stream")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=default_model_dir())
    p.add_argument("--minutes", type=float, default=60.0, help="audio in the long stream")
    p.add_argument("--speed", type=float, default=20.0, help="long stream feed rate, x real time")
    p.add_argument("--streams", type=int, default=50, help="streams held for the per-stream figures")
    p.add_argument("--starts", type=int, default=3, help="server starts timed")
    p.add_argument("--plot", type=Path, default=Path("bench/memory.png"))
    args = p.parse_args(argv)
    print(machine_report())
    model_dir = require_model(args.model_dir)
    startups = []
    for _ in range(args.starts):
        with ServerProcess(model_dir) as server:
            startups.append(server.startup_s)
    limit = ["--max-stream-seconds", str(args.minutes * 60 + 600), "--max-streams", str(args.streams + 10)]
    with ServerProcess(model_dir, limit) as server:
        idle_rss = rss_bytes(server.pid)
        per_idle = asyncio.run(held_streams(server, args.streams, None, settle_s=3.0))
        speech = to_pcm16(speech_stream(8.0, seed=3)[0])
        per_active = asyncio.run(held_streams(server, args.streams, speech, settle_s=6.0))
        points = long_stream(server.address, server.pid, long_audio(args.minutes), args.speed, every_s=60.0)
    print(f"\n## memory (model {model_dir})\n")
    print("| figure | value |\n|---|---:|")
    print(f"| start-up, process start -> SERVING (mean of {len(startups)}) | {np.mean(startups):.2f} s "
          f"(min {min(startups):.2f}, max {max(startups):.2f}) |")
    print(f"| server RSS, no streams | {idle_rss / 2**20:.0f} MB |")
    print(f"| per idle stream ({args.streams} held) | {per_idle / 1024:.0f} KiB |")
    print(f"| per active stream ({args.streams} sending) | {per_active / 1024:.0f} KiB |")
    print(f"| long stream: RSS slope over the second half | {slope_mb_per_hour(points):+.1f} MB per hour of audio |")
    print(f"\n### RSS over one {args.minutes:g}-minute stream at {args.speed:g}x\n")
    print("| audio minute | RSS MB |\n|---:|---:|")
    for minute, rss in points:
        print(f"| {minute:.1f} | {rss / 2**20:.1f} |")
    plot(points, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
