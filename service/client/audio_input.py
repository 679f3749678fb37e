"""Audio files and raw streams -> bytes plus the RecognitionConfig fields that describe them.

Containers libsndfile reads (WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3 with libsndfile >= 1.1,
AIFF...) are decoded here to 16-bit PCM, so the server can recognize while audio arrives;
FLAC is sent as it is (smaller, and the server decodes it). Raw headerless audio needs its
encoding, rate and channel count from the command line.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from service.proto.stt.v1 import stt_pb2

Encoding = stt_pb2.RecognitionConfig.AudioEncoding
RAW_ENCODINGS = {"linear16": Encoding.LINEAR16, "mulaw": Encoding.MULAW, "alaw": Encoding.ALAW}
BYTES_PER_SAMPLE = {Encoding.LINEAR16: 2, Encoding.MULAW: 1, Encoding.ALAW: 1}
# File name endings `stt-client batch` picks up when it scans a folder.
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}


class AudioInputError(Exception):
    """A file that cannot be read or decoded (the message names it)."""


@dataclass(frozen=True)
class RawFormat:
    """Headerless audio: encoding name (linear16|mulaw|alaw), rate in Hz, interleaved channels."""

    encoding: str = "linear16"
    rate: int = 16000
    channels: int = 1

    @property
    def proto_encoding(self) -> int:
        return RAW_ENCODINGS[self.encoding]

    @property
    def bytes_per_second(self) -> int:
        return BYTES_PER_SAMPLE[self.proto_encoding] * self.channels * self.rate


@dataclass(frozen=True)
class AudioData:
    """Bytes to send and how to describe them to the server."""

    content: bytes
    encoding: int
    rate: int  # Hz; 0: read from the container header
    channels: int  # 0: read from the container header
    duration_s: float

    @property
    def streamable(self) -> bool:
        """Raw samples the server recognizes while they arrive (containers are buffered)."""
        return self.encoding in BYTES_PER_SAMPLE

    def chunk_bytes(self, chunk_ms: int) -> int:
        """Bytes in chunk_ms of audio, whole sample frames (containers: 64 KiB pieces)."""
        if not self.streamable:
            return 64 * 1024
        frame = BYTES_PER_SAMPLE[self.encoding] * max(1, self.channels)
        return max(1, self.rate * chunk_ms // 1000) * frame

    def config(self, **fields) -> stt_pb2.RecognitionConfig:
        return stt_pb2.RecognitionConfig(encoding=self.encoding, sample_rate_hertz=self.rate,
                                         audio_channel_count=self.channels, language_code="en-US", **fields)


def read_raw(source: Path | BinaryIO, raw: RawFormat) -> AudioData:
    """Headerless bytes from a file or a binary stream (stdin), sent as they are."""
    content = source.read_bytes() if isinstance(source, Path) else source.read()
    return AudioData(content, raw.proto_encoding, raw.rate, raw.channels, len(content) / raw.bytes_per_second)


def read_pcm(path: Path) -> tuple[bytes, int, int]:
    """Any file libsndfile reads -> (16-bit little-endian PCM, sample rate, channels)."""
    samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return np.ascontiguousarray(samples).astype("<i2").tobytes(), int(rate), samples.shape[1]


def load_file(path: Path, raw: RawFormat | None = None, keep_flac: bool = True) -> AudioData:
    """Read an audio file; raises AudioInputError with a one-line reason."""
    if not path.is_file():
        raise AudioInputError(f"no such file: {path}")
    if raw is not None:
        return read_raw(path, raw)
    try:
        info = soundfile.info(str(path))
        if keep_flac and info.format == "FLAC":
            return AudioData(path.read_bytes(), Encoding.FLAC, 0, 0, info.duration)
        pcm, rate, channels = read_pcm(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        reason = getattr(err, "error_string", None) or str(err) or type(err).__name__
        raise AudioInputError(f"unsupported or unreadable audio file {path}: {reason}") from None
    return AudioData(pcm, Encoding.LINEAR16, rate, channels, len(pcm) / (2 * channels * rate))


def load(name: str, raw: RawFormat | None = None) -> AudioData:
    """A path, or '-' for raw audio on stdin (linear16 16 kHz mono unless --raw-encoding etc.)."""
    if name == "-":
        return read_raw(sys.stdin.buffer, raw or RawFormat())
    return load_file(Path(name), raw)


def duration_s(path: Path, raw: RawFormat | None = None) -> float:
    """Audio length from the header only (0.0 when it cannot be read: the real read reports it)."""
    try:
        if raw is not None:
            return path.stat().st_size / raw.bytes_per_second
        return float(soundfile.info(str(path)).duration)
    except (OSError, soundfile.LibsndfileError, RuntimeError):
        return 0.0
