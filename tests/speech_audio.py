"""Test audio: speech synthesized with espeak-ng (cached per process) and encoders for it."""
from __future__ import annotations

import functools
import io
import subprocess
import tempfile

import numpy as np
import soundfile
import soxr


@functools.lru_cache(maxsize=64)
def _espeak(text: str, voice: str) -> tuple[np.ndarray, int]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
        subprocess.run(["espeak-ng", "-v", voice, "-w", wav.name, text], check=True, capture_output=True)
        samples, rate = soundfile.read(wav.name, dtype="float32")
    samples.setflags(write=False)
    return samples, rate


def synthesize(text: str, rate_hz: int = 16000, voice: str = "en-us") -> np.ndarray:
    """(N,) float32 mono speech at rate_hz."""
    samples, rate = _espeak(text, voice)
    if rate == rate_hz:
        return samples.copy()
    return soxr.resample(samples, rate, rate_hz).astype(np.float32)


def silence(seconds: float, rate_hz: int = 16000) -> np.ndarray:
    return np.zeros(int(round(seconds * rate_hz)), np.float32)


def utterances(texts: list[str], pause_s: float = 1.5, rate_hz: int = 16000, lead_s: float = 0.5) -> np.ndarray:
    """Speech of each text, separated by pause_s of silence, with lead_s before and after."""
    parts = [silence(lead_s, rate_hz)]
    for i, text in enumerate(texts):
        if i:
            parts.append(silence(pause_s, rate_hz))
        parts.append(synthesize(text, rate_hz))
    parts.append(silence(lead_s, rate_hz))
    return np.concatenate(parts)


def to_linear16(samples: np.ndarray) -> bytes:
    """(N,) or (N, C) float32 -> interleaved 16-bit little-endian PCM bytes."""
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2").tobytes()


def to_container(samples: np.ndarray, rate_hz: int, fmt: str, subtype: str | None = None) -> bytes:
    """Encode with libsndfile: fmt 'WAV', 'FLAC' or 'OGG' (subtype e.g. 'PCM_16', 'OPUS', 'ULAW')."""
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate_hz, format=fmt, subtype=subtype)
    return buf.getvalue()


def split_bytes(data: bytes, sizes: list[int]) -> list[bytes]:
    """Cut data into pieces of the given sizes (cycled), the last piece taking the rest."""
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = max(1, sizes[i % len(sizes)])
        out.append(data[pos : pos + size])
        pos, i = pos + size, i + 1
    return out
