"""stt-client: the command-line client of stt-service (public gRPC API only).

    stt-client recognize speech.wav [more.flac ...] [--format text|txt|json|jsonl|srt|vtt]
    stt-client stream speech.wav --realtime [--stats]          partials in place, finals on their own lines
    arecord -f S16_LE -r 16000 -c 1 | stt-client stream -      raw PCM from stdin as it arrives
    stt-client batch audio/ --out results.jsonl -j 8           resumable, retries, progress, summary
    stt-client align speech.wav --png att.png                  attention heatmap with word boundaries

Connection options (--server, --tls, --ca, --cert/--key, --token or STT_AUTH_TOKEN, --timeout)
go before or after the command. Exit status: 0 ok, 1 server or transcription error,
2 bad usage or unreadable input, 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from service.client import align as align_mod
from service.client import audio_input, batch as batch_mod, formats
from service.client.audio_input import RAW_ENCODINGS, AudioInputError, RawFormat
from service.client.connection import ClientSetupError, Connection, token_from
from service.client.streaming import LiveLine, StreamOptions, run_stream  # noqa: F401 - LiveLine re-exported
from service.client.transcript import recognize_results, segments_from
from service.proto.stt.v1 import stt_pb2_grpc

DEFAULT_SERVER = "localhost:50051"
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UsageError(Exception):
    """Options that do not go together (exit 2)."""


# --- arguments -------------------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """On the main parser with defaults; on each command with SUPPRESS, so either position works."""
    d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("connection")
    group.add_argument("--server", "--target", dest="server", default=d(DEFAULT_SERVER),
                       help="host:port or gRPC target, e.g. dns:///stt-headless:50051 (default: localhost:50051)")
    group.add_argument("--tls", action="store_true", default=d(False), help="connect with TLS (system CA roots)")
    group.add_argument("--ca", "--tls-ca", dest="ca", type=Path, default=d(None), help="PEM CA to verify the server (implies --tls)")
    group.add_argument("--cert", "--client-cert", dest="cert", type=Path, default=d(None), help="PEM client certificate (mutual TLS)")
    group.add_argument("--key", "--client-key", dest="key", type=Path, default=d(None), help="PEM client key (mutual TLS)")
    group.add_argument("--token", default=d(None), help="bearer token (default: $STT_AUTH_TOKEN)")
    group.add_argument("--timeout", type=float, default=d(None), help="RPC deadline in seconds (default: by audio length)")


def _raw_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("raw (headerless) audio")
    group.add_argument("--raw-encoding", choices=sorted(RAW_ENCODINGS), help="the input is raw samples in this encoding")
    group.add_argument("--rate", type=int, help="raw sample rate in Hz (default 16000)")
    group.add_argument("--channels", type=int, help="raw interleaved channels (default 1)")


def _command(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=help_text, description=help_text)
    _connection_options(cmd, defaults=False)
    _raw_options(cmd)
    return cmd


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stt-client", description="Speech-to-text client for stt-service.")
    _connection_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)

    rec = _command(sub, "recognize", "recognize whole files, print their transcripts")
    rec.add_argument("files", nargs="+", metavar="FILE", help="audio files ('-': raw audio on stdin)")
    rec.add_argument("--format", choices=formats.FORMATS, default="text", help="output format (default: text)")
    rec.add_argument("--output-dir", type=Path, help="write FILE.<format> there instead of printing")
    rec.add_argument("--words", action="store_true", help="text format: print word start/end times")
    rec.add_argument("--alternatives", type=int, default=1, help="alternatives per final result")
    rec.add_argument("--heatmap", type=Path, help="write the first file's attention heatmap PNG")

    stream = _command(sub, "stream", "stream a file (or raw PCM on stdin) and show results as they come")
    stream.add_argument("file", metavar="FILE|-")
    stream.add_argument("--realtime", action="store_true", help="send at real-time pace (default: as fast as possible)")
    stream.add_argument("--chunk-ms", type=int, default=100, help="audio per message (default: %(default)s)")
    stream.add_argument("--single-utterance", action="store_true", help="stop after the first utterance")
    stream.add_argument("--events", action="store_true", help="print speech activity events")
    stream.add_argument("--words", action="store_true", help="print word start/end times")
    stream.add_argument("--alternatives", type=int, default=1, help="alternatives per final result")
    stream.add_argument("--stats", action="store_true", help="latency per final on stderr (segment end sent -> final)")
    stream.add_argument("--heatmap", type=Path, help="write the first final's attention heatmap PNG")

    batch = _command(sub, "batch", "transcribe many files into one JSON Lines file (resumable)")
    batch.add_argument("inputs", nargs="*", metavar="DIR|LIST|FILE", help="folders, lists of paths (one a line), files")
    batch.add_argument("--files-from", action="append", default=[], metavar="LIST", help="a list of paths (repeatable)")
    batch.add_argument("--out", "--output", "-o", dest="out", type=Path, required=True, help="results (JSON Lines), appended")
    batch.add_argument("-j", "--jobs", type=int, default=4, help="files in flight (default: %(default)s)")
    batch.add_argument("--retries", type=int, default=8, help="retries per file on UNAVAILABLE/RESOURCE_EXHAUSTED/DEADLINE_EXCEEDED")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")

    align = _command(sub, "align", "attention alignment heatmap (tokens x audio time) with word boundaries")
    align.add_argument("file", metavar="FILE")
    align.add_argument("--png", type=Path, required=True, help="heatmap PNG to write")
    align.add_argument("--json", type=Path, help="also write tokens, weights and word times as JSON")
    return parser


def _raw(args: argparse.Namespace) -> RawFormat | None:
    if args.raw_encoding is None:
        if args.rate or args.channels:
            raise UsageError("--rate/--channels describe raw audio: add --raw-encoding linear16|mulaw|alaw")
        return None
    return RawFormat(args.raw_encoding, args.rate or 16000, args.channels or 1)


def _connection(args: argparse.Namespace) -> Connection:
    return Connection(args.server, args.tls, args.ca, args.cert, args.key, token_from(args.token))


# --- commands --------------------------------------------------------------------------------


def _write(text: str, name: str, fmt: str, output_dir: Path | None) -> None:
    if output_dir is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = "stdin" if name == "-" else Path(name).name
    target = output_dir / (stem + formats.SUFFIXES[fmt])
    target.write_text(text)
    print(f"wrote {target}", file=sys.stderr)


def recognize(args: argparse.Namespace, stub, connection: Connection) -> int:
    if len(args.files) > 1 and args.format in ("srt", "vtt", "json") and args.output_dir is None:
        raise UsageError(f"--format {args.format} with several files needs --output-dir (or use --format jsonl)")
    raw = _raw(args)
    for i, name in enumerate(args.files):
        audio = audio_input.load(name, raw)
        config = audio.config(max_alternatives=args.alternatives, enable_word_time_offsets=True,
                              enable_word_confidence=True, enable_attention_alignment=args.heatmap is not None and i == 0)
        results = recognize_results(stub, audio, config, metadata=connection.metadata(),
                                    timeout=args.timeout or 60.0 + 3.0 * audio.duration_s)
        if len(args.files) > 1 and args.format in ("text", "txt") and args.output_dir is None:
            sys.stdout.write(f"==> {name} <==\n")
        _write(formats.render(args.format, name, audio.duration_s, segments_from(results), args.words),
               name, args.format, args.output_dir)
        if i == 0 and args.heatmap:
            _heatmap([r.alternatives[0] for r in results if r.alternatives], args.heatmap)
    return 0


def _heatmap(alternatives, png: Path, json_path: Path | None = None) -> bool:
    alignment = align_mod.merge_alignments(alternatives)
    if alignment is None:
        print("stt-client: the server returned no attention alignment (no speech found?)", file=sys.stderr)
        return False
    align_mod.render(alignment, png)
    if json_path is not None:
        align_mod.write_json(alignment, json_path)
    print(f"heatmap written to {png}", file=sys.stderr)
    return True


def stream(args: argparse.Namespace, stub, connection: Connection) -> int:
    options = StreamOptions(args.realtime, args.chunk_ms, args.single_utterance, args.events, args.words,
                            args.alternatives, args.stats, alignment=args.heatmap is not None)
    finals = run_stream(stub, args.file, _raw(args), options, connection.metadata(), args.timeout)
    if args.heatmap and finals:
        _heatmap([finals[0].alternatives[0]], args.heatmap)
    return 0


def align(args: argparse.Namespace, stub, connection: Connection) -> int:
    audio = audio_input.load(args.file, _raw(args))
    config = audio.config(enable_word_time_offsets=True, enable_attention_alignment=True)
    results = recognize_results(stub, audio, config, metadata=connection.metadata(),
                                timeout=args.timeout or 60.0 + 3.0 * audio.duration_s)
    return 0 if _heatmap([r.alternatives[0] for r in results if r.alternatives], args.png, args.json) else EXIT_ERROR


def batch(args: argparse.Namespace, stub, connection: Connection) -> int:
    inputs = list(args.inputs) + list(args.files_from)
    if not inputs:
        raise UsageError("batch needs a folder, a list file or --files-from LIST")
    raw = _raw(args)
    names = batch_mod.collect_inputs(inputs)
    _check_reachable(connection, args.timeout or 10.0)
    options = batch_mod.BatchOptions(jobs=args.jobs, retries=args.retries, timeout_s=args.timeout, raw=raw,
                                     progress=not args.no_progress)
    summary = batch_mod.run_batch(names, args.out, connection, options)
    batch_mod.print_summary(summary)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_ERROR if summary.failures else 0


def _check_reachable(connection: Connection, timeout: float) -> None:
    """Fail fast when the server is down at the start (retries are for restarts during the batch)."""
    with connection.channel() as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ConnectionError(f"server not reachable at {connection.server} (waited {timeout:.0f} s)") from None


COMMANDS = {"recognize": recognize, "stream": stream, "batch": batch, "align": align}


# --- errors ----------------------------------------------------------------------------------


def rpc_error_message(err: grpc.RpcError, server: str) -> str:
    """One line a user can act on, for a failed call."""
    code, details = err.code(), (err.details() or "").strip()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"server not reachable at {server} (UNAVAILABLE: {details})"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"not authenticated (UNAUTHENTICATED: {details}); pass --token or set STT_AUTH_TOKEN"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return f"server rejected the request (INVALID_ARGUMENT: {details})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer before the deadline (DEADLINE_EXCEEDED); raise --timeout"
    return f"{code.name}: {details}"


def _run(args: argparse.Namespace) -> int:
    connection = _connection(args)
    with connection.channel() as channel:
        return COMMANDS[args.command](args, stt_pb2_grpc.SpeechStub(channel), connection)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except grpc.RpcError as err:
        return _fail(rpc_error_message(err, args.server), EXIT_ERROR)
    except batch_mod.BatchAborted as err:
        return _fail(rpc_error_message(err.rpc_error, args.server) + "; batch stopped", EXIT_ERROR)
    except ConnectionError as err:
        return _fail(str(err), EXIT_ERROR)
    except (AudioInputError, ClientSetupError, UsageError) as err:
        return _fail(str(err), EXIT_USAGE)
    except OSError as err:
        return _fail(f"{err.strerror or err}: {err.filename}" if err.filename else str(err), EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _fail(message: str, status: int) -> int:
    sys.stdout.flush()
    print(f"\nstt-client: {message}" if sys.stdout.isatty() else f"stt-client: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
