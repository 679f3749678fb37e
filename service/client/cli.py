"""stt-client: recognize or stream an audio file against an stt-service server.

    stt-client recognize speech.wav                 one request, final results
    stt-client stream speech.flac --realtime        stream in 100 ms chunks at real-time pace,
                                                    partials updating in place, finals on their own lines
    stt-client --server host:50051 --token T --tls-ca ca.pem recognize call.wav

Uses only the public gRPC API (service/proto). WAV and FLAC files are sent as they
are for `recognize` (the server reads the header); everything else, and every
`stream`, is decoded here to 16-bit PCM so the server can recognize while audio
arrives.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import soundfile

from service.proto.stt.v1 import stt_pb2, stt_pb2_grpc

CONTAINER_SUFFIXES = {".wav", ".flac"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stt-client", description="Speech-to-text client for stt-service.")
    parser.add_argument("--server", default="localhost:50051", help="host:port (default: %(default)s)")
    parser.add_argument("--token", help="bearer token (sent as 'authorization: Bearer <token>')")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA certificate: connect with TLS")
    parser.add_argument("--client-cert", type=Path, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--client-key", type=Path, help="PEM client key (mutual TLS)")
    parser.add_argument("--timeout", type=float, default=600.0, help="RPC deadline in seconds")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("recognize", "recognize a whole file in one request"),
                            ("stream", "stream a file and show results as they come")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("file", type=Path)
        cmd.add_argument("--words", action="store_true", help="print word start/end times")
        cmd.add_argument("--alternatives", type=int, default=1, help="alternatives per final result")
        cmd.add_argument("--heatmap", type=Path, help="write the first result's attention heatmap PNG (needs matplotlib)")
    stream = sub.choices["stream"]
    stream.add_argument("--realtime", action="store_true", help="send at real-time pace")
    stream.add_argument("--chunk-ms", type=int, default=100, help="audio per message (default: %(default)s)")
    stream.add_argument("--single-utterance", action="store_true", help="stop after the first utterance")
    stream.add_argument("--events", action="store_true", help="print speech activity events")
    return parser


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.tls_ca is None:
        return grpc.insecure_channel(args.server)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.tls_ca.read_bytes(),
        private_key=args.client_key.read_bytes() if args.client_key else None,
        certificate_chain=args.client_cert.read_bytes() if args.client_cert else None,
    )
    return grpc.secure_channel(args.server, credentials)


def _config(args: argparse.Namespace, rate: int = 0, channels: int = 0, pcm: bool = True) -> stt_pb2.RecognitionConfig:
    encoding = stt_pb2.RecognitionConfig.LINEAR16 if pcm else stt_pb2.RecognitionConfig.ENCODING_UNSPECIFIED
    return stt_pb2.RecognitionConfig(
        encoding=encoding,
        sample_rate_hertz=rate,
        audio_channel_count=channels,
        language_code="en-US",
        max_alternatives=args.alternatives,
        enable_word_time_offsets=args.words,
        enable_attention_alignment=args.heatmap is not None,
    )


def read_pcm(path: Path) -> tuple[bytes, int, int]:
    """Any file libsndfile reads -> (16-bit little-endian PCM, sample rate, channels)."""
    samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return np.ascontiguousarray(samples).astype("<i2").tobytes(), int(rate), samples.shape[1]


def _seconds(duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _print_final(alternatives: Sequence[stt_pb2.SpeechRecognitionAlternative], words: bool, out) -> None:
    for rank, alt in enumerate(alternatives):
        prefix = "" if rank == 0 else f"  alt {rank}: "
        out.write(f"{prefix}{alt.transcript}\n")
        if words and rank == 0:
            for w in alt.words:
                out.write(f"    {_seconds(w.start_time):8.2f} {_seconds(w.end_time):8.2f}  {w.word}\n")
    out.flush()


def _write_heatmap(path: Path, alt: stt_pb2.SpeechRecognitionAlternative) -> None:
    from service.client.heatmap import render_alignment

    a = alt.attention_alignment
    if not a.tokens:
        return
    weights = np.asarray(a.weights, np.float32).reshape(len(a.tokens), a.num_frames)
    words = [(w.word, _seconds(w.start_time), _seconds(w.end_time)) for w in alt.words]
    render_alignment(path, list(a.tokens), weights, _seconds(a.frame_shift), _seconds(a.offset), alt.transcript, words)
    print(f"heatmap written to {path}", file=sys.stderr)


def recognize(args: argparse.Namespace, stub: stt_pb2_grpc.SpeechStub, metadata) -> int:
    if args.file.suffix.lower() in CONTAINER_SUFFIXES:
        content, config = args.file.read_bytes(), _config(args, pcm=False)
    else:
        content, rate, channels = read_pcm(args.file)
        config = _config(args, rate, channels)
    request = stt_pb2.RecognizeRequest(config=config, audio=stt_pb2.RecognitionAudio(content=content))
    response = stub.Recognize(request, metadata=metadata, timeout=args.timeout)
    for result in response.results:
        _print_final(result.alternatives, args.words, sys.stdout)
    if args.heatmap and response.results:
        _write_heatmap(args.heatmap, response.results[0].alternatives[0])
    return 0


def stream_requests(args: argparse.Namespace) -> Iterator[stt_pb2.StreamingRecognizeRequest]:
    pcm, rate, channels = read_pcm(args.file)
    streaming = stt_pb2.StreamingRecognitionConfig(
        config=_config(args, rate, channels),
        interim_results=True,
        single_utterance=args.single_utterance,
        enable_voice_activity_events=args.events,
    )
    yield stt_pb2.StreamingRecognizeRequest(streaming_config=streaming)
    chunk = max(1, rate * args.chunk_ms // 1000) * 2 * channels
    started = time.monotonic()
    for i, pos in enumerate(range(0, len(pcm), chunk)):
        if args.realtime:  # pace by the audio clock, not by sleeps that drift
            time.sleep(max(0.0, started + i * args.chunk_ms / 1000 - time.monotonic()))
        yield stt_pb2.StreamingRecognizeRequest(audio_content=pcm[pos : pos + chunk])


class LiveLine:
    """One terminal line that partial results overwrite; finals are printed above it."""

    def __init__(self, out, interactive: bool) -> None:
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


def stream(args: argparse.Namespace, stub: stt_pb2_grpc.SpeechStub, metadata) -> int:
    line = LiveLine(sys.stdout, sys.stdout.isatty())
    first_final = None
    events = stt_pb2.StreamingRecognizeResponse.SpeechEventType
    for response in stub.StreamingRecognize(stream_requests(args), metadata=metadata, timeout=args.timeout):
        if response.speech_event_type and args.events:
            line.clear()
            print(f"[{events.Name(response.speech_event_type)} at {_seconds(response.speech_event_time):.2f}s]")
        finals = [r for r in response.results if r.is_final]
        partial = " ".join(r.alternatives[0].transcript for r in response.results if not r.is_final and r.alternatives)
        if finals:
            line.clear()
            for result in finals:
                _print_final(result.alternatives, args.words, sys.stdout)
                first_final = first_final or result.alternatives[0]
        elif partial:
            line.partial(partial)
    line.clear()
    if args.heatmap and first_final is not None:
        _write_heatmap(args.heatmap, first_final)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.file.is_file():
        print(f"stt-client: no such file: {args.file}", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else None
    with _channel(args) as channel:
        stub = stt_pb2_grpc.SpeechStub(channel)
        try:
            return (recognize if args.command == "recognize" else stream)(args, stub, metadata)
        except grpc.RpcError as err:
            print(f"\nstt-client: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        except soundfile.LibsndfileError as err:
            print(f"stt-client: cannot read {args.file}: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
