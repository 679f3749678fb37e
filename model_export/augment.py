"""Waveform augmentation for the synthetic corpus (16 kHz float32 in, same out).

What the service will meet and clean synthetic speech lacks: silence around and
inside utterances, level changes, background noise at 5-30 dB SNR, and the 8 kHz
telephone band with mu-law companding.
"""
from __future__ import annotations

import random

import numpy as np
import soxr

SR = 16000


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    # 1/f spectrum shaped in the frequency domain.
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    spectrum /= np.sqrt(np.maximum(np.arange(n // 2 + 1), 1.0))
    noise = np.fft.irfft(spectrum, n)
    return (noise / (np.std(noise) + 1e-9)).astype(np.float32)


def mulaw_roundtrip(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """8-bit mu-law encode/decode: the quantization telephony audio carries."""
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    q = np.round((y + 1) / 2 * 255) / 255 * 2 - 1
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(np.float32)


def telephone(x: np.ndarray, rng: random.Random) -> np.ndarray:
    narrow = soxr.resample(x, SR, 8000)
    if rng.random() < 0.6:
        narrow = mulaw_roundtrip(narrow)
    return soxr.resample(narrow, 8000, SR).astype(np.float32)


def insert_silences(x: np.ndarray, rng: random.Random) -> np.ndarray:
    """Leading/trailing silence always, plus sometimes a pause at a quiet point inside."""
    parts = [x]
    if rng.random() < 0.3 and len(x) > SR:
        frame = 160  # 10 ms
        energy = np.square(x[: len(x) // frame * frame]).reshape(-1, frame).mean(axis=1)
        inner = np.arange(len(energy))[int(0.25 * len(energy)): int(0.75 * len(energy))]
        quiet = inner[energy[inner] < 0.05 * energy.max()] if len(inner) else inner
        if len(quiet):
            cut = int(rng.choice(list(quiet))) * frame
            pause = np.zeros(int(rng.uniform(0.2, 0.7) * SR), np.float32)
            parts = [x[:cut], pause, x[cut:]]
    lead = np.zeros(int(rng.uniform(0.05, 0.6) * SR), np.float32)
    trail = np.zeros(int(rng.uniform(0.05, 0.6) * SR), np.float32)
    return np.concatenate([lead, *parts, trail])


def add_noise(x: np.ndarray, rng: random.Random, babble: list[np.ndarray]) -> np.ndarray:
    nrng = np.random.default_rng(rng.randrange(2**32))
    kind = rng.choice(["white", "pink", "babble"] if babble else ["white", "pink"])
    if kind == "white":
        noise = nrng.standard_normal(len(x)).astype(np.float32)
    elif kind == "pink":
        noise = _pink_noise(len(x), nrng)
    else:
        noise = np.zeros(len(x), np.float32)
        for other in rng.sample(babble, k=min(len(babble), rng.randint(2, 4))):
            tiled = np.resize(other, len(x))
            noise += tiled / (np.std(tiled) + 1e-9)
    snr_db = rng.uniform(5, 30)
    signal_power = np.mean(np.square(x[np.abs(x) > 1e-4])) if np.any(np.abs(x) > 1e-4) else 1e-6
    noise *= np.sqrt(signal_power / (np.mean(np.square(noise)) + 1e-12) / 10 ** (snr_db / 10))
    return x + noise


def augment(x: np.ndarray, rng: random.Random, babble: list[np.ndarray]) -> tuple[np.ndarray, str]:
    """Returns the augmented waveform and a short tag describing what was applied."""
    tags = []
    x = insert_silences(x, rng)
    if rng.random() < 0.2:
        x, tags = telephone(x, rng), tags + ["tel"]
    if rng.random() < 0.5:
        x, tags = add_noise(x, rng, babble), tags + ["noise"]
    peak = float(np.max(np.abs(x))) or 1.0
    x = x / peak * rng.uniform(0.05, 0.95)  # level: quiet to near full scale
    return x.astype(np.float32), "+".join(tags) or "clean"
