"""TEST DOUBLE of the recognition engine. It is NOT a model and recognizes nothing.

``CountingRecognizer`` implements the engine interface of docs/ARCHITECTURE.md
(``new_segment(offset_s, options)``, ``SegmentRecognizer.accept/finish``,
``Hypothesis`` fields) so the serving layers (session, servicer, server, limits)
can be tested before, and independently of, the real Recognizer. Its
"transcript" only describes the audio it was given: one word ``w<i>`` per
started 0.5 s of segment audio, then ``n<samples>`` (the exact count of 16 kHz
samples the segment received) in the final. Tests use that to check that audio
reaches the engine whole, in order, and without duplication.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

WORD_SECONDS = 0.5
RATE = 16000


@dataclass
class WordTiming:
    word: str
    start_s: float
    end_s: float
    confidence: float


@dataclass
class Alternative:
    text: str
    confidence: float
    words: list[WordTiming]


@dataclass
class AttentionMatrix:
    tokens: list[str]
    weights: np.ndarray  # (n_tokens, n_frames) float32
    frame_shift_s: float
    offset_s: float


@dataclass
class Hypothesis:
    text: str
    stable_text: str
    stability: float
    confidence: float
    words: list[WordTiming]
    alternatives: list[Alternative]
    attention: AttentionMatrix | None
    end_s: float


@dataclass
class SegmentLog:
    """What one segment received, for assertions."""

    offset_s: float
    options: object
    samples: int = 0
    chunks: int = 0
    finished: bool = False
    checksum: float = 0.0  # sum of all samples received


class CountingSegment:
    """Per-segment state of the double."""

    def __init__(self, engine: "CountingRecognizer", record: SegmentLog) -> None:
        self._engine = engine
        self._record = record
        self._reported_words = 0

    async def accept(self, samples: np.ndarray) -> Hypothesis | None:
        if self._record.finished:
            raise RuntimeError("accept() after finish()")
        if self._engine.delay_s:
            await asyncio.sleep(self._engine.delay_s)
        self._record.samples += len(samples)
        self._record.chunks += 1
        self._record.checksum += float(np.sum(samples, dtype=np.float64))
        words = self._word_count()
        if words == self._reported_words:
            return None
        self._reported_words = words
        return self._hypothesis(final=False)

    async def finish(self) -> Hypothesis:
        self._record.finished = True
        return self._hypothesis(final=True)

    def _word_count(self) -> int:
        return -(-self._record.samples // int(WORD_SECONDS * RATE))

    def _hypothesis(self, final: bool) -> Hypothesis:
        offset = self._record.offset_s
        n = self._word_count()
        words = [WordTiming(f"w{i}", offset + i * WORD_SECONDS, offset + (i + 1) * WORD_SECONDS, 0.9) for i in range(n)]
        if final:
            words.append(WordTiming(f"n{self._record.samples}", offset, offset + self._record.samples / RATE, 0.5))
        text = " ".join(w.word for w in words)
        stable = " ".join(w.word for w in words[: max(0, n - 1)]) if not final else text
        alternatives = [Alternative(text, 0.8, words), Alternative(text + " alt", 0.1, words)]
        attention = None
        if getattr(self._record.options, "return_attention", False):
            frames = max(1, self._record.samples // 640)  # 40 ms encoder frames
            weights = np.full((len(words), frames), 1.0 / frames, np.float32)
            attention = AttentionMatrix([w.word for w in words], weights, 0.04, offset)
        return Hypothesis(text, stable, 0.9, 0.8, words, alternatives, attention, offset + self._record.samples / RATE)


@dataclass
class CountingRecognizer:
    """Engine double shared by all streams; records every segment it opened."""

    delay_s: float = 0.0  # simulated compute per accept()
    segments: list[SegmentLog] = field(default_factory=list)
    started: bool = False
    closed: bool = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def new_segment(self, offset_s: float, options: object) -> CountingSegment:
        record = SegmentLog(offset_s, options)
        self.segments.append(record)
        return CountingSegment(self, record)
