"""`stt-client batch`: transcribe many files, concurrently, resumably, into one JSON Lines file.

Each finished file is one line of the output (see result_log.py). A rerun skips the files
already there, so a killed batch loses at most the files in flight and duplicates none.
Transient server errors (a restart, overload, a timeout) are retried with exponential
backoff; other failures are reported in the summary and make the exit status 1.
"""
from __future__ import annotations

import logging
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from service.client import audio_input
from service.client.audio_input import AudioInputError, RawFormat
from service.client.connection import Connection
from service.client.formats import file_record
from service.client.progress import Progress
from service.client.result_log import ResultLog
from service.client.transcript import recognize_results, segments_from
from service.proto.stt.v1 import stt_pb2_grpc

log = logging.getLogger(__name__)

# CANCELLED as well: a server stopping (drain grace over) cancels the calls it still has; our
# own cancellation (Ctrl-C, SIGTERM) sets FileTranscriber.stop, which ends the retries.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.CANCELLED}
# Every file would fail the same way: stop at once.
FATAL = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED}


@dataclass(frozen=True)
class BatchOptions:
    jobs: int = 4
    retries: int = 8  # attempts after the first, per file
    backoff_s: float = 0.5  # first retry delay; doubles each time, with jitter
    max_backoff_s: float = 30.0
    timeout_s: float | None = None  # per attempt; None: 60 s + 3 x the audio length
    raw: RawFormat | None = None
    progress: bool = True


class FileFailed(Exception):
    """A file that could not be transcribed; the message is the reason shown in the summary."""


class BatchAborted(Exception):
    """An error every file would get (authentication, wrong server); args[0] is the grpc.RpcError."""

    @property
    def rpc_error(self) -> grpc.RpcError:
        return self.args[0]


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0  # already in the output
    done: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0
    retries: int = 0
    wer: float | None = None
    wer_files: int = 0
    interrupted: bool = False

    def lines(self) -> list[str]:
        rtf = self.wall_s / self.audio_s if self.audio_s else 0.0
        out = [f"files: {self.total} ({self.skipped} already done, {self.done} transcribed now, "
               f"{len(self.failures)} failed)",
               f"audio: {self.audio_s / 3600:.3f} h in {self.wall_s:.1f} s wall, RTF {rtf:.3f}, {self.retries} retries"]
        if self.wer is not None:
            out.append(f"WER: {self.wer:.2%} over {self.wer_files} files with a reference transcript")
        out.extend(f"FAILED {name}: {reason}" for name, reason in self.failures)
        if self.interrupted:
            out.append("interrupted: rerun the same command to finish (done files are skipped)")
        return out


# --- inputs ----------------------------------------------------------------------------------


def _list_file(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def collect_inputs(inputs: Sequence[str]) -> list[str]:
    """Folders (scanned recursively for audio), audio files, and list files (one path a line)."""
    names: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            names.extend(str(p) for p in sorted(path.rglob("*"))
                         if p.is_file() and p.suffix.lower() in audio_input.AUDIO_SUFFIXES)
        elif path.suffix.lower() in audio_input.AUDIO_SUFFIXES:
            names.append(item)
        elif path.is_file():
            names.extend(_list_file(path))
        else:
            raise AudioInputError(f"no such file or folder: {item}")
    return list(dict.fromkeys(names))  # each file once, first mention wins


# --- references and WER ----------------------------------------------------------------------


def reference_for(name: str) -> str | None:
    """Reference transcript beside the audio: FILE.txt (speech.wav -> speech.txt or speech.wav.txt)."""
    path = Path(name)
    for candidate in (path.with_suffix(".txt"), Path(name + ".txt")):
        if candidate != path and candidate.is_file():
            return candidate.read_text(errors="replace").strip()
    return None


def normalize(text: str) -> str:
    """Lower case, punctuation removed (apostrophes kept), single spaces: WER on words only."""
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower()).split())


def corpus_wer(records: Iterable[dict]) -> tuple[float | None, int]:
    pairs = [(normalize(r["reference"]), normalize(r.get("transcript", ""))) for r in records if r.get("reference")]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref]
    if not pairs:
        return None, 0
    try:
        import jiwer
    except ImportError:
        log.warning("reference transcripts found but jiwer is not installed: no WER")
        return None, 0
    return float(jiwer.wer([p[0] for p in pairs], [p[1] for p in pairs])), len(pairs)


def file_wer(reference: str, hypothesis: str) -> float | None:
    try:
        import jiwer
    except ImportError:
        return None
    ref = normalize(reference)
    return float(jiwer.wer(ref, normalize(hypothesis))) if ref else None


# --- one file --------------------------------------------------------------------------------


class FileTranscriber:
    """Reads one file and recognizes it, retrying transient server errors with backoff."""

    def __init__(self, stub: stt_pb2_grpc.SpeechStub, connection: Connection, options: BatchOptions) -> None:
        self._stub, self._metadata, self._options = stub, connection.metadata(), options
        self.stop = threading.Event()  # set when the batch is interrupted: no more attempts

    def _delay(self, attempt: int) -> float:
        cap = min(self._options.max_backoff_s, self._options.backoff_s * 2**attempt)
        return random.uniform(cap / 2, cap)  # jitter: clients retrying together spread out

    def __call__(self, name: str) -> dict:
        started = time.monotonic()
        try:
            audio = audio_input.load_file(Path(name), self._options.raw)
        except AudioInputError as err:
            raise FileFailed(str(err)) from None
        config = audio.config(enable_word_time_offsets=True, enable_word_confidence=True)
        timeout = self._options.timeout_s or 60.0 + 3.0 * audio.duration_s
        for attempt in range(self._options.retries + 1):
            try:
                results = recognize_results(self._stub, audio, config, metadata=self._metadata, timeout=timeout)
                break
            except grpc.RpcError as err:
                code, details = err.code(), err.details()
                if code in FATAL:
                    raise BatchAborted(err) from None
                if code not in RETRYABLE or attempt == self._options.retries or self.stop.is_set():
                    raise FileFailed(f"{code.name}: {details}" + (f" (after {attempt + 1} attempts)" if attempt else "")) from None
                log.info("retrying %s after %s (attempt %d)", name, code.name, attempt + 1)
                if self.stop.wait(self._delay(attempt)):
                    raise FileFailed("interrupted") from None
        record = file_record(name, audio.duration_s, segments_from(results))
        record.update(attempts=attempt + 1, processing_s=round(time.monotonic() - started, 3))
        reference = reference_for(name)
        if reference is not None:
            record.update(reference=reference, wer=file_wer(reference, record["transcript"]))
        return record


# --- the batch -------------------------------------------------------------------------------


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _drain(pending: dict[Future, str], log_file: ResultLog, progress: Progress, summary: Summary,
           durations: dict[str, float]) -> None:
    """Wait for at least one file and record what finished."""
    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in finished:
        name = pending.pop(future)
        try:
            record = future.result()
        except BatchAborted:
            raise
        except Exception as err:  # noqa: BLE001 - FileFailed, or anything odd about one file: report, go on
            summary.failures.append((name, str(err) if isinstance(err, FileFailed) else repr(err)))
            progress.advance(durations.get(name, 0.0), failed=True)
            continue
        log_file.append(record)
        summary.done += 1
        summary.retries += record["attempts"] - 1
        summary.audio_s += record["duration_s"]
        progress.advance(record["duration_s"])


def run_batch(names: Sequence[str], out: Path, connection: Connection, options: BatchOptions) -> Summary:
    """Transcribe every name not yet in `out`; returns the summary (also when interrupted)."""
    summary = Summary(total=len(names))
    in_main = threading.current_thread() is threading.main_thread()
    # A deleted pod (SIGTERM) stops like Ctrl-C: calls in flight cancelled, summary printed.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    channel = connection.channel()
    with ResultLog(out) as log_file, ThreadPoolExecutor(max(1, options.jobs), "stt-batch") as pool:
        done = log_file.done()
        todo = [n for n in names if n not in done]
        summary.skipped = len(names) - len(todo)
        durations = {n: audio_input.duration_s(Path(n), options.raw) for n in todo}  # headers only
        progress = Progress(len(todo), sum(durations.values()), enabled=options.progress)
        transcribe = FileTranscriber(stt_pb2_grpc.SpeechStub(channel), connection, options)
        queue = iter(todo)
        pending: dict[Future, str] = {}
        try:
            while True:
                while len(pending) < 2 * max(1, options.jobs) and (name := next(queue, None)) is not None:
                    pending[pool.submit(transcribe, name)] = name
                if not pending:
                    break
                _drain(pending, log_file, progress, summary, durations)
        except (KeyboardInterrupt, BatchAborted) as err:
            summary.interrupted = isinstance(err, KeyboardInterrupt)
            transcribe.stop.set()
            for future in pending:
                future.cancel()
            channel.close()  # cancels the calls in flight: their files are not recorded
            if isinstance(err, BatchAborted):
                raise
        finally:
            progress.close()
            summary.wall_s = progress.wall_s
            summary.wer, summary.wer_files = corpus_wer(log_file.records)
            channel.close()
            if in_main:
                signal.signal(signal.SIGTERM, previous)
    return summary


def print_summary(summary: Summary, out=None) -> None:
    out = out or sys.stderr
    for line in summary.lines():
        out.write(line + "\n")
    out.flush()
