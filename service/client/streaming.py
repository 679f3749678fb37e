"""`stt-client stream`: send audio as a live stream; partials in place on a terminal, finals on their own lines.

--stats measures, per final, the wall time from sending the audio that ends its segment
(its result_end_time) to receiving it: what a live caller waits after they stop talking.
"""
from __future__ import annotations

import bisect
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from service.client import audio_input
from service.client.audio_input import AudioData, RawFormat
from service.client.formats import render_text
from service.client.transcript import Segment, segment_from, seconds
from service.proto.stt.v1 import stt_pb2


@dataclass(frozen=True)
class StreamOptions:
    realtime: bool = False
    chunk_ms: int = 100
    single_utterance: bool = False
    events: bool = False
    words: bool = False
    alternatives: int = 1
    stats: bool = False
    alignment: bool = False


class SendClock:
    """When (monotonic wall time) the audio up to each stream position was handed to gRPC."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: list[float] = []  # stream seconds sent so far, after each message
        self._times: list[float] = []

    def sent(self, audio_end_s: float) -> None:
        with self._lock:
            self._ends.append(audio_end_s)
            self._times.append(time.monotonic())

    def sent_at(self, audio_s: float) -> float | None:
        """Wall time the message holding stream time audio_s went out (the last one if beyond)."""
        with self._lock:
            if not self._ends:
                return None
            i = min(bisect.bisect_left(self._ends, audio_s - 1e-6), len(self._ends) - 1)
            return self._times[i]


class LiveLine:
    """One terminal line that partial results overwrite; finals are printed above it."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self._out, self._interactive, self._shown = out, interactive, False

    def partial(self, text: str) -> None:
        if self._interactive:
            self._out.write("\r\033[K" + text)
            self._out.flush()
            self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._out.write("\r\033[K")
            self._shown = False


def _chunks_from_stdin(stdin: BinaryIO, size: int) -> Iterator[bytes]:
    while chunk := stdin.read(size):
        yield chunk


def requests(config: stt_pb2.StreamingRecognitionConfig, chunks: Iterator[bytes], bytes_per_s: float,
             options: StreamOptions, clock: SendClock) -> Iterator[stt_pb2.StreamingRecognizeRequest]:
    """Config, then audio messages; with --realtime paced by the audio clock (sleeps do not drift)."""
    yield stt_pb2.StreamingRecognizeRequest(streaming_config=config)
    started, sent = time.monotonic(), 0
    for chunk in chunks:
        if options.realtime:
            time.sleep(max(0.0, started + sent / bytes_per_s - time.monotonic()))
        yield stt_pb2.StreamingRecognizeRequest(audio_content=chunk)
        sent += len(chunk)
        clock.sent(sent / bytes_per_s)


def open_source(name: str, raw: RawFormat | None, chunk_ms: int) -> tuple[stt_pb2.RecognitionConfig, Iterator[bytes], float]:
    """(config, audio chunks, bytes per second). '-' reads raw audio from stdin as it arrives."""
    if name == "-":
        raw = raw or RawFormat()
        audio = AudioData(b"", raw.proto_encoding, raw.rate, raw.channels, 0.0)
        return audio.config(), _chunks_from_stdin(sys.stdin.buffer, audio.chunk_bytes(chunk_ms)), raw.bytes_per_second
    audio = audio_input.load_file(Path(name), raw, keep_flac=False)  # PCM: the server recognizes as it arrives
    step = audio.chunk_bytes(chunk_ms)
    chunks = (audio.content[pos : pos + step] for pos in range(0, len(audio.content), step))
    return audio.config(), chunks, len(audio.content) / max(audio.duration_s, 1e-9)


def _latency_summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (f"[stats: {len(ordered)} finals, final latency p50 {pick(0.5) * 1000:.0f} ms, "
            f"p95 {pick(0.95) * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms]")


def run_stream(stub, name: str, raw: RawFormat | None, options: StreamOptions, metadata, timeout: float | None,
               out: TextIO | None = None, err: TextIO | None = None) -> list:
    """Stream one source; prints as results arrive (stdout, stats on stderr); returns the final results."""
    out, err = out or sys.stdout, err or sys.stderr
    config, chunks, bytes_per_s = open_source(name, raw, options.chunk_ms)
    config.max_alternatives = options.alternatives
    config.enable_word_time_offsets = options.words or options.alignment
    config.enable_attention_alignment = options.alignment
    streaming = stt_pb2.StreamingRecognitionConfig(config=config, interim_results=True,
                                                   single_utterance=options.single_utterance,
                                                   enable_voice_activity_events=options.events)
    clock, line = SendClock(), LiveLine(out, out.isatty())
    finals, latencies, previous_end = [], [], 0.0
    event_names = stt_pb2.StreamingRecognizeResponse.SpeechEventType
    for response in stub.StreamingRecognize(requests(streaming, chunks, bytes_per_s, options, clock),
                                            metadata=metadata, timeout=timeout):
        received = time.monotonic()
        if response.speech_event_type and options.events:
            line.clear()
            out.write(f"[{event_names.Name(response.speech_event_type)} at {seconds(response.speech_event_time):.2f}s]\n")
        for result in response.results:
            if not result.is_final:
                continue
            segment: Segment = segment_from(result, previous_end)
            previous_end = segment.end
            line.clear()
            out.write(render_text([segment], options.words))
            out.flush()
            finals.append(result)
            sent = clock.sent_at(segment.end)
            if options.stats and sent is not None:
                latencies.append(received - sent)
                err.write(f"[final {len(finals)}: segment ends {segment.end:.2f}s, latency {latencies[-1] * 1000:.0f} ms]\n")
        partial = " ".join(r.alternatives[0].transcript for r in response.results if not r.is_final and r.alternatives)
        if partial and not any(r.is_final for r in response.results):
            line.partial(partial)
    line.clear()
    out.flush()
    if options.stats and latencies:
        err.write(_latency_summary(latencies) + "\n")
    return finals
