"""Build the synthetic speech corpus as NeMo-style JSON-lines manifests.

    python -m model_export.corpus --out data/corpus --train-utts 14000 --dev-utts 500

Writes `<out>/wav/<id>.wav` (16 kHz, 16-bit) and `<out>/train.jsonl`, `<out>/dev.jsonl`
with `audio_filepath`, `duration` (s), `text`, plus `voice` and `augment` tags.
Train and dev differ in voices and in sentences. Re-running resumes: utterances
already in a manifest are skipped, so a killed build loses at most in-flight work.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import multiprocessing as mp
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from model_export import augment, text, voices

log = logging.getLogger(__name__)
SR = 16000


@dataclass(frozen=True)
class Job:
    uid: str
    split: str
    voice: voices.Voice
    text: str
    seed: int
    source: str = "prose"  # which sentence source `text` came from (SOURCES)


SOURCES = {"prose": text.build_sentences, "talk": text.build_talk_sentences}


def plan_jobs(n_train: int, n_dev: int, seed: int, exclude: frozenset[str] = frozenset(),
              voice_glob: str | None = None, source: str = "prose") -> list[Job]:
    """Deterministic job list: the same arguments always give the same corpus.

    `exclude`: sentences never to use, e.g. another corpus's dev texts when this one adds
    training data with a new seed (a new seed splits the text pool differently).
    `voice_glob`: keep only voices whose id (`engine:name`) matches, e.g. `mbrola:mb-*-en`, or
    any of several comma-separated globs;
    if all kept voices of a split have weight 0 they are drawn uniformly.
    `source`: "prose" (fortunes, WordNet, everyday commands) or "talk" (conversation only).
    """
    sentences = [s for s in SOURCES[source](seed) if s not in exclude]
    n_dev_text = max(n_dev * 2, len(sentences) // 50)
    dev_text, train_text = sentences[:n_dev_text], sentences[n_dev_text:]
    rng = random.Random(seed)
    jobs = []
    for split, count, pool in (("train", n_train, train_text), ("dev", n_dev, dev_text)):
        vs = [v for v in voices.all_voices() if v.split == split
              and (voice_glob is None or any(fnmatch.fnmatchcase(v.id, g) for g in voice_glob.split(",")))]
        if count and not vs:
            raise ValueError(f"no {split} voice matches {voice_glob!r}; use --{split}-utts 0")
        weights = [v.weight for v in vs]
        picked = rng.choices(vs, weights=weights if sum(weights) > 0 else None, k=count)
        for i, voice in enumerate(picked):
            jobs.append(Job(f"{split}-{i:06d}", split, voice, pool[i % len(pool)], rng.randrange(2**31), source))
    return jobs


_BABBLE: list[np.ndarray] = []  # per worker process: recent utterances reused as babble noise


def run_job(job: Job, out_dir: str) -> dict:
    rng = random.Random(job.seed)
    audio, sr = voices.synthesize(job.voice, job.text, rng)
    if sr != SR:
        audio = soxr.resample(audio, sr, SR).astype(np.float32)
    clean = audio
    audio, tag = augment.augment(audio, rng, _BABBLE)
    _BABBLE.append(clean)
    del _BABBLE[:-20]
    path = Path(out_dir) / "wav" / f"{job.uid}.wav"
    tmp = path.with_suffix(".tmp.wav")
    sf.write(tmp, audio, SR, subtype="PCM_16")
    os.replace(tmp, path)  # atomic: a killed build never leaves a half-written file
    return {"audio_filepath": str(path.resolve()), "duration": round(len(audio) / SR, 3),
            "text": job.text, "voice": job.voice.id, "augment": tag, "uid": job.uid,
            "text_source": job.source}


def _run_job_star(args: tuple[Job, str]) -> dict:
    return run_job(*args)


def done_ids(manifest: Path) -> set[str]:
    if not manifest.exists():
        return set()
    ids = set()
    for line in manifest.read_text().splitlines():
        try:
            ids.add(json.loads(line)["uid"])
        except (json.JSONDecodeError, KeyError):
            continue  # a torn last line from a killed run: redo that utterance
    return ids


def build(out: Path, n_train: int, n_dev: int, workers: int, seed: int,
          exclude: frozenset[str] = frozenset(), only: str | None = None,
          voice_glob: str | None = None, source: str = "prose") -> None:
    """Synthesizes the planned corpus into `out`; `only` ("train" or "dev") builds one split.

    The plan is always made for both splits, so a dev set built alone has the same
    sentences, voices and augmentation choices as in a full build (babble noise is cut
    from the worker's recent utterances, so its content may differ).
    """
    (out / "wav").mkdir(parents=True, exist_ok=True)
    jobs = [j for j in plan_jobs(n_train, n_dev, seed, exclude, voice_glob, source) if only is None or j.split == only]
    manifests = {s: out / f"{s}.jsonl" for s in ("train", "dev")}
    finished = done_ids(manifests["train"]) | done_ids(manifests["dev"])
    todo = [j for j in jobs if j.uid not in finished]
    log.info("corpus: %d planned, %d done, %d to synthesize", len(jobs), len(finished), len(todo))
    files = {s: open(p, "a") for s, p in manifests.items()}
    try:
        with mp.Pool(workers) as pool:
            hours = 0.0
            bar = tqdm(pool.imap_unordered(_run_job_star, [(j, str(out)) for j in todo], chunksize=8),
                       total=len(todo), unit="utt", mininterval=10)
            for row in bar:
                files[row["uid"].split("-")[0]].write(json.dumps(row) + "\n")
                hours += row["duration"] / 3600
                bar.set_postfix(hours=f"{hours:.2f}", refresh=False)
    finally:
        for f in files.values():
            f.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/corpus"))
    parser.add_argument("--train-utts", type=int, default=14000)
    parser.add_argument("--dev-utts", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--exclude-text", type=Path, action="append", default=[],
                        help="manifest whose texts this corpus must not contain (repeatable), e.g. "
                             "data/corpus/dev.jsonl when adding training data with another --seed")
    parser.add_argument("--only", choices=("train", "dev"),
                        help="synthesize one split of the planned corpus, e.g. the dev set for evaluation")
    parser.add_argument("--voices", metavar="GLOB",
                        help="only voices whose id matches, e.g. 'mbrola:mb-*-en' for the accented "
                             "MBROLA set (train-only, so pair it with --dev-utts 0); several globs: "
                             "comma-separated")
    parser.add_argument("--text", choices=sorted(SOURCES), default="prose",
                        help="sentence source: prose (fortunes, WordNet, everyday commands; the default) or "
                             "talk (templated conversation and chatterbot-corpus small talk)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    exclude = frozenset(json.loads(line)["text"] for m in args.exclude_text for line in m.read_text().splitlines())
    build(args.out, args.train_utts, args.dev_utts, args.workers, args.seed, exclude, args.only, args.voices, args.text)


if __name__ == "__main__":
    main()
