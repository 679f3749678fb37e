"""Subtitle cues (SRT, WebVTT) from recognized segments.

A cue never spans two segments (a pause the VAD heard is a natural cut), holds at most
MAX_LINES lines of at most MAX_CHARS characters (broadcast convention: 42 x 2), and lasts
at most MAX_CUE_SECONDS. Cue times come from word times; cues never overlap.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from service.client.transcript import Segment, Word

MAX_CHARS = 42
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0
MIN_CUE_SECONDS = 0.05  # players drop zero-length cues


@dataclass
class Cue:
    start: float  # seconds
    end: float
    lines: list[str] = field(default_factory=list)


def _words_of(segment: Segment) -> list[Word]:
    """The segment's timed words; without word times, its text spread evenly over the segment."""
    if segment.words:
        return segment.words
    tokens = segment.transcript.split()
    step = (segment.end - segment.start) / max(1, len(tokens))
    return [Word(t, segment.start + i * step, segment.start + (i + 1) * step, 0.0) for i, t in enumerate(tokens)]


def _pieces(words: Sequence[Word], max_chars: int) -> Iterable[tuple[Word, str]]:
    """Each word's text, a word longer than a line cut into line-sized pieces."""
    for word in words:
        text = word.word.strip()
        for pos in range(0, len(text), max_chars):
            yield word, text[pos : pos + max_chars]


def _segment_cues(words: Sequence[Word], max_chars: int, max_lines: int, max_seconds: float) -> Iterable[Cue]:
    cue: Cue | None = None
    for word, text in _pieces(words, max_chars):
        if cue is not None:
            fits_line = len(cue.lines[-1]) + 1 + len(text) <= max_chars
            if word.end - cue.start > max_seconds or (not fits_line and len(cue.lines) >= max_lines):
                yield cue
                cue = None
        if cue is None:
            cue = Cue(word.start, word.end, [text])
        elif len(cue.lines[-1]) + 1 + len(text) <= max_chars:
            cue.lines[-1] += " " + text
            cue.end = word.end
        else:
            cue.lines.append(text)
            cue.end = word.end
    if cue is not None:
        yield cue


def build_cues(segments: Sequence[Segment], max_chars: int = MAX_CHARS, max_lines: int = MAX_LINES,
               max_seconds: float = MAX_CUE_SECONDS) -> list[Cue]:
    cues: list[Cue] = []
    for segment in segments:
        for cue in _segment_cues(_words_of(segment), max_chars, max_lines, max_seconds):
            # Word times from the decoder are monotonic per segment, but keep cues strictly
            # ordered and non-empty whatever comes in.
            previous_end = cues[-1].end if cues else 0.0
            cue.start = max(cue.start, previous_end)
            cue.end = max(cue.end, cue.start + MIN_CUE_SECONDS)
            cues.append(cue)
    return cues


def _timestamp(t: float, separator: str) -> str:
    ms = int(round(max(0.0, t) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [f"{i}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n" + "\n".join(c.lines) + "\n"
              for i, c in enumerate(cues, 1)]
    return "\n".join(blocks)


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n" + "\n".join(c.lines) + "\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)
