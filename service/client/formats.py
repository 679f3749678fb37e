"""Output formats of `stt-client recognize`: text, txt, json, jsonl, srt, vtt."""
from __future__ import annotations

import json
from collections.abc import Sequence

from service.client.subtitles import build_cues, to_srt, to_vtt
from service.client.transcript import Segment, transcript_text

FORMATS = ("text", "txt", "json", "jsonl", "srt", "vtt")
SUFFIXES = {"text": ".txt", "txt": ".txt", "json": ".json", "jsonl": ".jsonl", "srt": ".srt", "vtt": ".vtt"}


def file_record(name: str, duration_s: float, segments: Sequence[Segment]) -> dict:
    """One file's result: the JSON object of `--format json`, one line of jsonl and of batch output."""
    return {
        "file": name,
        "duration_s": round(duration_s, 3),
        "transcript": transcript_text(segments),
        "segments": [s.to_dict() for s in segments],
    }


def render_text(segments: Sequence[Segment], words: bool) -> str:
    """Default output: one final per line, alternatives indented, word times with --words."""
    lines = []
    for s in segments:
        lines.append(s.transcript)
        lines.extend(f"  alt {rank}: {alt}" for rank, alt in enumerate(s.alternatives, 1))
        if words:
            lines.extend(f"    {w.start:8.2f} {w.end:8.2f}  {w.word}" for w in s.words)
    return "".join(line + "\n" for line in lines)


def render(fmt: str, name: str, duration_s: float, segments: Sequence[Segment], words: bool = False) -> str:
    if fmt == "text":
        return render_text(segments, words)
    if fmt == "txt":
        return "".join(s.transcript.strip() + "\n" for s in segments if s.transcript.strip())
    if fmt == "json":
        return json.dumps(file_record(name, duration_s, segments), indent=2, ensure_ascii=False) + "\n"
    if fmt == "jsonl":
        return json.dumps(file_record(name, duration_s, segments), ensure_ascii=False) + "\n"
    if fmt == "srt":
        return to_srt(build_cues(segments))
    if fmt == "vtt":
        return to_vtt(build_cues(segments))
    raise ValueError(f"unknown format {fmt!r}")
