"""Training data: manifests in, cached log-mel features and token ids out, length-bucketed batches.

Accepted inputs:
- NeMo-style JSON lines: {"audio_filepath": ..., "duration": ..., "text": ...}
- a Kaldi data directory holding `wav.scp` (id -> path) and `text` (id -> transcript);
  wav.scp entries must be plain file paths (no pipes).
Transcripts go through the corpus normalizer, so real data with digits works too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from model_export.text import normalize
from service.pipeline.features import FeatureConfig, compute_features

log = logging.getLogger(__name__)
FEATURES = FeatureConfig()


@dataclass
class Utterance:
    path: str
    text: str
    duration: float
    augment: str = ""  # the corpus builder's augmentation ("clean", "noise", "tel", ...); "" for other data


def read_manifest(path: Path) -> list[Utterance]:
    """JSON-lines manifest file, or a Kaldi data directory (wav.scp + text)."""
    if path.is_dir():
        wavs = dict(line.split(maxsplit=1) for line in (path / "wav.scp").read_text().splitlines() if line.strip())
        texts = dict(line.split(maxsplit=1) for line in (path / "text").read_text().splitlines()
                     if len(line.split(maxsplit=1)) == 2)
        out = []
        for uid, wav in wavs.items():
            if uid in texts:
                info = sf.info(wav.strip())
                out.append(Utterance(wav.strip(), normalize(texts[uid]), info.duration))
        return out
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Utterance(r["audio_filepath"], normalize(r["text"]), float(r["duration"]), r.get("augment", ""))
            for r in rows]


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Any soundfile-readable file -> (N,) float32 mono at `sample_rate`."""
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate)
    return audio.astype(np.float32)


def speech_onset(feats: np.ndarray, rise: float = 0.5, share: float = 0.1) -> int:
    """First frame of speech in (T, n_mels) log-mel features; 0 when none stands out.

    A frame is speech when its mean log-mel rises above the quietest frames (5th percentile)
    by `share` of the way to the loud ones (95th), and by at least `rise` (natural log). The
    threshold sits low on purpose: an onset found early only keeps some silence, one found late
    would cut the start of a word. On clean espeak speech it falls 0-20 ms before the first
    sample above 1e-3; in white noise at 20 dB SNR a soft first sound ("th") can sit under the
    noise, and the onset then comes up to ~70 ms late (tests/test_training.py).
    """
    energy = feats.astype(np.float32).mean(axis=1)
    if not len(energy):
        return 0
    floor, loud = np.percentile(energy, [5, 95])
    above = np.flatnonzero(energy > floor + max(rise, share * (loud - floor)))
    return int(above[0]) if len(above) else 0


def cut_lead_silence(audio: np.ndarray) -> np.ndarray:
    """(N,) 16 kHz samples -> the same from one hop after the `speech_onset` frame begins: a stream
    that opens on speech. On clean corpus speech that leaves 2-12 ms (1st-75th percentile of 1,197
    utterances) before the first sample above 1e-3."""
    hop = FEATURES.sample_rate * int(FEATURES.frame_shift_ms) // 1000
    onset = speech_onset(compute_features(audio))
    return audio[(onset + 1) * hop if onset else 0:]


def join_segments(audios: list[np.ndarray], n: int, gap_s: float, sample_rate: int = 16000) -> list[np.ndarray]:
    """Continuous speech for evaluation: each n consecutive (N,) clips back to back, `gap_s` of silence
    after each, one segment per group (what the VAD hands over when pauses are shorter than its end
    silence)."""
    gap = np.zeros(int(round(gap_s * sample_rate)), np.float32)
    return [np.concatenate([x for a in audios[i:i + n] for x in (a, gap)]) for i in range(0, len(audios), n)]


def _featurize(path: str) -> np.ndarray:
    return compute_features(load_audio(path)).astype(np.float16)


class FeatureSet:
    """Features (float16, 58 MB per hour) and token ids for every utterance, cached on disk."""

    def __init__(self, utts: list[Utterance], text_encoder, cache: Path | None, workers: int) -> None:
        self.utts = utts
        self.tokens = [text_encoder.encode(u.text) for u in utts]  # CharEncoder or BpeEncoder
        # The cache belongs to one list of files: a resumed run given another manifest recomputes.
        key = np.frombuffer(hashlib.sha256("\n".join(u.path for u in utts).encode()).digest(), np.uint8)
        data = np.load(cache) if cache is not None and cache.exists() else None
        if data is not None and "key" in data and np.array_equal(data["key"], key):
            flat, offsets = data["feats"], data["offsets"]
            log.info("features: loaded %s", cache)
        else:
            if data is not None:
                log.warning("features: %s was computed for other files; recomputing", cache)
            with mp.Pool(workers) as pool:
                feats = pool.map(_featurize, [u.path for u in utts], chunksize=16)
            offsets = np.cumsum([0] + [len(f) for f in feats])
            flat = np.concatenate(feats)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, feats=flat, offsets=offsets, key=key)
        self.feats = [flat[offsets[i]:offsets[i + 1]] for i in range(len(utts))]

    def __len__(self) -> int:
        return len(self.utts)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Global per-bin mean and 1/std over (a sample of) the frames."""
        sample = np.concatenate(self.feats[:: max(1, len(self.feats) // 2000)]).astype(np.float64)
        return sample.mean(axis=0), 1.0 / np.maximum(sample.std(axis=0), 1e-3)


def make_batches(lengths: list[int], max_frames: int, rng: random.Random, sort: bool) -> list[list[int]]:
    """Length-bucketed batches of at most `max_frames` padded feature frames.

    `sort` keeps short-to-long order (curriculum); otherwise batch order is shuffled.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and longest_if_added * (len(current) + 1) > max_frames:
            batches.append(current)
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    if not sort:
        rng.shuffle(batches)
    return batches


def join_utterances(pool: list[int], lengths: list[int], share: float, max_frames: int,
                    rng: random.Random) -> list[tuple[int, ...]]:
    """Training examples over `pool` (utterance indices): each utterance once, and with probability
    `share` an example is 2-3 of them back to back, at most `max_frames` feature frames in all.

    A VAD segment of continuous speech holds several sentences with short pauses between them
    (pauses under the endpointer's end silence stay inside the segment). A model trained only on
    single utterances from a zero state loses its way after the first: on the conversational dev
    set joined by fours with 0.3 s gaps, v1.9.0's WER doubled (MODEL_NOTES.md, session 22). The
    utterances' own lead and trailing silence make the pauses.
    """
    order = list(pool)
    rng.shuffle(order)
    out, i = [], 0
    while i < len(order):
        group, total = [order[i]], lengths[order[i]]
        i += 1
        if rng.random() < share:
            for _ in range(rng.randint(1, 2)):
                if i >= len(order) or total + lengths[order[i]] > max_frames:
                    break
                group.append(order[i])
                total += lengths[order[i]]
                i += 1
        out.append(tuple(group))
    return out


@dataclass
class Batch:
    feats: torch.Tensor  # (B, T, 80), T a multiple of the subsampling factor
    feat_lens: torch.Tensor  # (B,)
    targets: torch.Tensor  # (B, U) token ids, padded with -1
    target_lens: torch.Tensor  # (B,)

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.feats, self.feat_lens, self.targets,
                                                                  self.target_lens)))


def collate(fs: FeatureSet, idx: list[int | tuple[int, ...]], subsampling: int,
            starts: list[int] | None = None) -> Batch:
    """One example per entry of `idx`: an utterance index, or a tuple of them joined back to back
    (features and tokens in order, see `join_utterances`). `starts`: feature frames to drop at each
    example's start (lead-silence trimming)."""
    groups = [(i,) if isinstance(i, (int, np.integer)) else tuple(i) for i in idx]
    starts = starts or [0] * len(idx)
    feats = [torch.from_numpy(np.concatenate([fs.feats[i] for i in g])[s:].astype(np.float32))
             for g, s in zip(groups, starts)]
    lens = torch.tensor([len(f) for f in feats])
    t_max = int(-(-lens.max() // subsampling) * subsampling)
    padded = torch.zeros(len(idx), t_max, feats[0].shape[1])
    for b, f in enumerate(feats):
        padded[b, : len(f)] = f
    toks = [[t for i in g for t in fs.tokens[i]] for g in groups]
    tlens = torch.tensor([len(t) for t in toks])
    targets = torch.full((len(idx), int(tlens.max())), -1, dtype=torch.long)
    for b, t in enumerate(toks):
        targets[b, : len(t)] = torch.tensor(t, dtype=torch.long)
    return Batch(padded, lens, targets, tlens)

