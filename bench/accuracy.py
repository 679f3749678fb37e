"""Accuracy: WER through the real service (streaming and unary) beside pocketsphinx, same audio, one run.

    .venv/bin/python -m bench.accuracy                                   # data/corpus/dev.jsonl, bundled model
    .venv/bin/python -m bench.accuracy --limit 5                         # a quick check
    .venv/bin/python -m bench.accuracy --manifest my.jsonl --model-dir DIR
    .venv/bin/python -m bench.accuracy --texts bench/novel_sentences.txt   # text unlike the training text
    .venv/bin/python -m bench.accuracy --join 4 --gap-s 0.3              # continuous speech: 4 utterances a file

Manifest: JSON lines with ``audio_filepath`` and ``text`` (NeMo style). Default
data/corpus/dev.jsonl when present (held-out voices), else a small set synthesized
with espeak-ng en-us-nyc voice variants (a dev voice); ``--texts FILE`` synthesizes the
sentences of FILE (one per line) with the same voices instead. `bench/novel_sentences.txt`
holds 40 everyday sentences written for this check (session 20), not drawn from any of the
training text sources (fortunes, WordNet, templates, chatterbot): how the model and its LM
do on sentences of another origin. Each file is sent to the server
(``python -m service``, started here) as a stream (100 ms messages, as fast as the
server takes them) and as one Recognize call, and decoded by pocketsphinx (its
bundled en-us model). Text is normalized (lower case, letters, digits, apostrophes).
WER = word edits / reference words over the whole set; RTF = wall seconds / audio seconds.

``--join N`` sends N consecutive utterances as one file, ``--gap-s`` of silence after each: continuous
speech. Pauses shorter than the endpointer's end silence (800 ms by default) keep the sentences in one
VAD segment, so the recognizer hears several sentences in a row without a reset, as a caller who
dictates or talks on would make it (MODEL_NOTES.md, session 22).
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import soundfile
import soxr

from bench.common import RATE, ROOT, ServerProcess, default_model_dir, machine_report, require_model, to_pcm16
from service.proto.stt.v1 import stt_pb2, stt_pb2_grpc

DEFAULT_MANIFEST = ROOT / "data" / "corpus" / "dev.jsonl"
FALLBACK_TEXTS = [
    "turn the volume down a little", "what time does the train leave", "send a message to john",
    "the meeting starts at nine thirty", "how far is the nearest station", "add eggs to my shopping list",
    "it is going to rain this afternoon", "open the garage door please",
]
FALLBACK_VOICES = ["en-us-nyc", "en-us-nyc+f2", "en-us-nyc+m3", "en-us-nyc+f4"]


def normalize(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_edits(ref: list[str], hyp: list[str]) -> int:
    """Substitutions + deletions + insertions turning ref into hyp (jiwer's word alignment)."""
    import jiwer  # a [dev] dependency, as is this benchmark

    if not ref:
        return len(hyp)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions + out.deletions + out.insertions


@dataclass
class System:
    name: str
    edits: int = 0
    ref_words: int = 0
    wall_s: float = 0.0
    audio_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)

    def add(self, ref: str, hyp: str, wall_s: float, audio_s: float) -> None:
        r, h = normalize(ref), normalize(hyp)
        self.edits += word_edits(r, h)
        self.ref_words += len(r)
        self.wall_s += wall_s
        self.audio_s += audio_s
        if len(self.examples) < 3:
            self.examples.append((ref, hyp))

    @property
    def wer(self) -> float:
        return self.edits / max(self.ref_words, 1)


def load_manifest(path: Path | None, limit: int, tmp: Path, texts: list[str] | None = None) -> list[dict]:
    if texts is None and path is not None and path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        print(f"manifest: {path} ({len(rows)} utterances, using {min(limit, len(rows)) if limit else len(rows)})")
        return rows[:limit] if limit else rows
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.speech_audio import synthesize

    rows = []
    for i, text in enumerate(texts or FALLBACK_TEXTS):
        voice = FALLBACK_VOICES[i % len(FALLBACK_VOICES)]
        wav = tmp / f"utt{i}.wav"
        soundfile.write(wav, synthesize(text, RATE, voice), RATE, subtype="PCM_16")
        rows.append({"audio_filepath": str(wav), "text": text, "voice": voice})
    print(f"manifest: {len(rows)} utterances synthesized with espeak-ng ({', '.join(FALLBACK_VOICES)})")
    return rows[:limit] if limit else rows


def read_16k(path: str) -> np.ndarray:
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    return samples if rate == RATE else soxr.resample(samples, rate, RATE).astype(np.float32)


def config() -> stt_pb2.RecognitionConfig:
    return stt_pb2.RecognitionConfig(encoding=stt_pb2.RecognitionConfig.LINEAR16, sample_rate_hertz=RATE,
                                     language_code="en-US")


def finals(responses) -> str:
    return " ".join(r.alternatives[0].transcript for resp in responses for r in resp.results
                    if r.is_final and r.alternatives)


def streaming(stub, pcm: bytes) -> str:
    def requests():
        yield stt_pb2.StreamingRecognizeRequest(streaming_config=stt_pb2.StreamingRecognitionConfig(config=config()))
        for pos in range(0, len(pcm), 3200):
            yield stt_pb2.StreamingRecognizeRequest(audio_content=pcm[pos : pos + 3200])

    return finals(stub.StreamingRecognize(requests(), timeout=300))


def unary(stub, pcm: bytes) -> str:
    response = stub.Recognize(stt_pb2.RecognizeRequest(config=config(), audio=stt_pb2.RecognitionAudio(content=pcm)),
                              timeout=300)
    return " ".join(r.alternatives[0].transcript for r in response.results if r.alternatives)


def pocketsphinx_decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        print("pocketsphinx: not installed (pip install pocketsphinx, in the [dev] extra): column skipped")
        return None
    return Decoder(samprate=RATE, loglevel="FATAL") if "loglevel" in Decoder.default_config() else Decoder(samprate=RATE)


def sphinx(decoder, pcm: bytes) -> str:
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


def timed(fn, *args) -> tuple[str, float]:
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--limit", type=int, default=0, help="first N utterances only (0: all)")
    p.add_argument("--model-dir", type=Path, default=default_model_dir())
    p.add_argument("--join", type=int, default=1, help="utterances joined into one file (continuous speech)")
    p.add_argument("--gap-s", type=float, default=0.3, help="silence after each joined utterance, seconds")
    p.add_argument("--texts", type=Path, help="sentences, one per line, to synthesize with the fallback voices "
                                              "instead of reading a manifest")
    args = p.parse_args(argv)
    texts = [t.strip() for t in args.texts.read_text().splitlines() if t.strip()] if args.texts else None
    print(machine_report())
    systems = {name: System(name) for name in ("service streaming", "service unary", "pocketsphinx")}
    with tempfile.TemporaryDirectory() as tmp:
        rows = load_manifest(args.manifest, args.limit, Path(tmp), texts)
        groups = [rows[i:i + args.join] for i in range(0, len(rows), max(1, args.join))]
        gap = np.zeros(int(round(args.gap_s * RATE)), np.float32)
        decoder = pocketsphinx_decoder()
        with ServerProcess(require_model(args.model_dir), ["--inference-threads", "1"]) as server, \
                grpc.insecure_channel(server.address) as channel:
            stub = stt_pb2_grpc.SpeechStub(channel)
            for group in groups:
                samples = (read_16k(group[0]["audio_filepath"]) if len(group) == 1 else
                           np.concatenate([x for row in group for x in (read_16k(row["audio_filepath"]), gap)]))
                text = " ".join(row["text"] for row in group)
                pcm, audio_s = to_pcm16(samples), len(samples) / RATE
                jobs = [("service streaming", streaming, stub), ("service unary", unary, stub)]
                if decoder is not None:
                    jobs.append(("pocketsphinx", sphinx, decoder))
                for name, fn, target in jobs:
                    try:
                        hyp, wall = timed(fn, target, pcm)
                    except grpc.RpcError as err:
                        systems[name].errors.append(f"{group[0]['audio_filepath']}: {err.code().name}")
                        hyp, wall = "", 0.0
                    systems[name].add(text, hyp, wall, audio_s)
    joined = f", joined by {args.join} with {args.gap_s:g} s gaps" if args.join > 1 else ""
    print(f"\n## accuracy ({len(rows)} utterances{joined}, {systems['service unary'].audio_s:.0f} s of audio, "
          f"model {args.model_dir})\n")
    print("| system | WER | word edits / ref words | RTF | errors |")
    print("|---|---:|---:|---:|---:|")
    for s in systems.values():
        if s.ref_words:
            print(f"| {s.name} | {100 * s.wer:.1f} % | {s.edits} / {s.ref_words} | {s.wall_s / max(s.audio_s, 1e-9):.3f} | "
                  f"{len(s.errors)} |")
    for s in systems.values():
        for ref, hyp in s.examples:
            print(f"  {s.name:18s} ref: {ref!r}\n  {'':18s} hyp: {hyp!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
