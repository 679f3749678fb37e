"""stt-client recognize / stream / align against a real server on loopback running the tiny ONNX model.

The tiny model has random weights: transcripts are garbage, but every byte goes through the
real decode, VAD, encoder, decoder and assembly, and the public gRPC API.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from service.client import cli
from service.client.subtitles import MAX_CHARS, MAX_LINES, build_cues, to_srt, to_vtt
from service.client.transcript import Segment, Word
from tests.server_harness import TINY_MODEL_BEAM, RunningServer, make_settings, speech_audio
from tests.speech_audio import to_container, to_linear16

srt = pytest.importorskip("srt")


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from service.recognizer import Recognizer

    engine = Recognizer.load(tiny_model_dir, inference_threads=1, batch_max_size=8, batch_max_wait_ms=2.0,
                             beam_size=TINY_MODEL_BEAM)
    running = RunningServer(make_settings(), engine)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("audio")
    audio = speech_audio()  # two utterances: two segments
    (d / "speech.wav").write_bytes(to_container(audio, 16000, "WAV", "PCM_16"))
    (d / "speech.flac").write_bytes(to_container(audio, 16000, "FLAC"))
    (d / "speech.ogg").write_bytes(to_container(audio, 16000, "OGG", "VORBIS"))
    (d / "speech.opus").write_bytes(to_container(audio, 48000 // 3, "OGG", "OPUS"))
    if "MP3" in soundfile.available_formats():
        (d / "speech.mp3").write_bytes(to_container(audio, 16000, "MP3"))
    (d / "speech.raw").write_bytes(to_linear16(audio))
    mulaw = io.BytesIO()
    soundfile.write(mulaw, audio, 8000 * 2, format="RAW", subtype="ULAW")
    (d / "speech.ul").write_bytes(mulaw.getvalue())
    alaw = io.BytesIO()
    soundfile.write(alaw, audio, 16000, format="RAW", subtype="ALAW")
    (d / "speech.al").write_bytes(alaw.getvalue())
    stereo = np.stack([audio, audio], axis=1)
    (d / "stereo.raw").write_bytes(to_linear16(stereo))
    return d


def run_cli(server, capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["--server", server.address, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def vtt_seconds(stamp: str) -> float:
    """'00:01:02.345' -> 62.345 (webvtt-py's *_in_seconds are whole seconds)."""
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def two_finals(text: str) -> bool:
    return len([line for line in text.splitlines() if line.strip()]) == 2


@pytest.mark.parametrize("name", ["speech.wav", "speech.flac", "speech.ogg", "speech.opus", "speech.mp3"])
def test_recognize_container_formats(server, files, capsys, name):
    if not (files / name).exists():
        pytest.skip(f"this libsndfile cannot write {name.split('.')[1]}")
    code, out, err = run_cli(server, capsys, "recognize", str(files / name), "--format", "txt")
    assert code == 0, err
    assert two_finals(out), out


@pytest.mark.parametrize("name,flags", [
    ("speech.raw", ["--raw-encoding", "linear16", "--rate", "16000"]),
    ("speech.ul", ["--raw-encoding", "mulaw", "--rate", "16000"]),
    ("speech.al", ["--raw-encoding", "alaw", "--rate", "16000"]),
    ("stereo.raw", ["--raw-encoding", "linear16", "--rate", "16000", "--channels", "2"]),
])
def test_recognize_raw(server, files, capsys, name, flags):
    code, out, err = run_cli(server, capsys, "recognize", str(files / name), "--format", "txt", *flags)
    assert code == 0, err
    assert two_finals(out), out


def test_recognize_json_has_words_times_and_confidence(server, files, capsys):
    code, out, _ = run_cli(server, capsys, "recognize", str(files / "speech.wav"), "--format", "json")
    assert code == 0
    record = json.loads(out)
    assert record["file"].endswith("speech.wav") and abs(record["duration_s"] - 5.43) < 0.1
    assert len(record["segments"]) == 2
    for seg in record["segments"]:
        assert 0 <= seg["confidence"] <= 1 and seg["start"] <= seg["end"]
        assert seg["words"] and all(w["start"] <= w["end"] and 0 <= w["confidence"] <= 1 for w in seg["words"])
    assert record["segments"][0]["end"] <= record["segments"][1]["start"]
    assert record["transcript"] == " ".join(s["transcript"] for s in record["segments"])


def test_recognize_jsonl_one_line_per_file(server, files, capsys):
    code, out, _ = run_cli(server, capsys, "recognize", str(files / "speech.wav"), str(files / "speech.flac"),
                           "--format", "jsonl")
    assert code == 0
    lines = out.splitlines()
    assert [Path(json.loads(line)["file"]).name for line in lines] == ["speech.wav", "speech.flac"]


def test_recognize_srt_parses_and_follows_segments(server, files, capsys):
    code, out, _ = run_cli(server, capsys, "recognize", str(files / "speech.wav"), "--format", "srt")
    assert code == 0
    cues = list(srt.parse(out))
    assert len(cues) >= 2
    assert all(c.start < c.end for c in cues)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))
    for cue in cues:
        lines = cue.content.splitlines()
        assert 1 <= len(lines) <= MAX_LINES and all(len(line) <= MAX_CHARS for line in lines)
    # The pause between the two utterances (1.2 s) falls between cues.
    assert any(b.start.total_seconds() - a.end.total_seconds() > 0.5 for a, b in zip(cues, cues[1:]))


def test_recognize_vtt_parses(server, files, capsys, tmp_path):
    webvtt = pytest.importorskip("webvtt")
    code, _, _ = run_cli(server, capsys, "recognize", str(files / "speech.wav"), "--format", "vtt",
                         "--output-dir", str(tmp_path))
    assert code == 0
    captions = webvtt.read(str(tmp_path / "speech.wav.vtt"))
    assert len(captions) >= 2
    times = [(vtt_seconds(c.start), vtt_seconds(c.end)) for c in captions]
    assert all(start < end for start, end in times)
    assert all(a[1] <= b[0] for a, b in zip(times, times[1:]))
    assert all(len(line) <= MAX_CHARS for c in captions for line in c.lines)


def test_recognize_several_files_text(server, files, capsys):
    code, out, _ = run_cli(server, capsys, "recognize", str(files / "speech.wav"), str(files / "speech.ogg"), "--words")
    assert code == 0
    assert out.count("==> ") == 2 and any(line.startswith("    ") for line in out.splitlines())


def test_subtitle_cues_split_at_line_length_and_segments():
    words = [Word(w, i * 0.4, i * 0.4 + 0.3, 0.9) for i, w in enumerate(
        "the quick brown fox jumps over the lazy dog and then runs far away into the deep dark forest".split())]
    segments = [Segment(" ".join(w.word for w in words[:8]), 0.0, 3.2, 0.9, words[:8]),
                Segment(" ".join(w.word for w in words[8:]), 3.6, 8.0, 0.9, words[8:]),
                Segment("x" * 100, 9.0, 10.0, 0.5, [Word("x" * 100, 9.0, 10.0, 0.5)])]
    cues = build_cues(segments)
    assert all(len(c.lines) <= MAX_LINES and all(len(line) <= MAX_CHARS for line in c.lines) for c in cues)
    # No cue spans two segments.
    assert all(not (c.start < 3.2 < c.end and c.end > 3.6) for c in cues)
    speech = [c for c in cues if c.start < 9.0]
    assert " ".join(" ".join(c.lines) for c in speech).split() == [w.word for w in words]
    assert [len(c.lines) for c in speech] == [1, 2]  # 39 chars; then 52 chars over two lines
    assert [c.lines for c in cues if c.start >= 9.0] == [["x" * 42, "x" * 42], ["x" * 16]]
    parsed = list(srt.parse(to_srt(cues)))
    assert len(parsed) == len(cues)
    webvtt = pytest.importorskip("webvtt")
    assert len(webvtt.from_string(to_vtt(cues)).captions) == len(cues)


# --- stream ----------------------------------------------------------------------------------


def test_stream_finals_and_stats(server, files, capsys):
    code, out, err = run_cli(server, capsys, "stream", str(files / "speech.wav"), "--stats", "--words")
    assert code == 0, err
    assert "\r" not in out  # stdout is not a terminal: no in-place partials
    assert len([line for line in out.splitlines() if not line.startswith("    ")]) == 2
    latencies = [line for line in err.splitlines() if line.startswith("[final ")]
    assert len(latencies) == 2 and all("latency" in line and "ms]" in line for line in latencies)
    assert "[stats: 2 finals" in err


def test_stream_realtime_from_stdin(server, files, capsys, monkeypatch):
    audio = (files / "speech.raw").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(audio)))
    code, out, err = run_cli(server, capsys, "stream", "-", "--realtime", "--chunk-ms", "200", "--stats")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    # Paced by the audio clock: the segment's end was sent, then its final came back fast.
    stats = [line for line in err.splitlines() if line.startswith("[final ")]
    assert len(stats) == 2


def test_stream_partials_in_place_on_a_terminal(server, files, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    code, out, _ = run_cli(server, capsys, "stream", str(files / "speech.wav"), "--chunk-ms", "50")
    assert code == 0
    assert "\r\033[K" in out  # partials overwrote the line
    finals = [part.split("\r\033[K")[-1] for part in out.split("\n") if part.split("\r\033[K")[-1]]
    assert len(finals) == 2


# --- align -----------------------------------------------------------------------------------


def test_align_writes_png_and_json(server, files, capsys, tmp_path):
    png, data = tmp_path / "att.png", tmp_path / "att.json"
    code, _, err = run_cli(server, capsys, "align", str(files / "speech.wav"), "--png", str(png), "--json", str(data))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    alignment = json.loads(data.read_text())
    weights = np.asarray(alignment["weights"])
    assert weights.shape == (len(alignment["tokens"]), alignment["num_frames"])
    assert alignment["words"] and alignment["frame_shift_s"] > 0


# --- errors ----------------------------------------------------------------------------------


def test_unreachable_server_is_one_line(files, capsys):
    from tests.server_harness import free_port

    code = cli.main(["--server", f"127.0.0.1:{free_port()}", "recognize", str(files / "speech.wav")])
    err = capsys.readouterr().err
    assert code == 1 and "server not reachable" in err and len(err.strip().splitlines()) == 1


def test_unsupported_file_and_bad_options(server, capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not audio")
    code, _, err = run_cli(server, capsys, "recognize", str(tmp_path / "notes.txt"))
    assert code == 2 and "unsupported or unreadable audio file" in err
    code, _, err = run_cli(server, capsys, "recognize", str(tmp_path / "notes.txt"), "--rate", "8000")
    assert code == 2 and "--raw-encoding" in err
    code, _, err = run_cli(server, capsys, "--cert", str(tmp_path / "c.pem"), "recognize", str(tmp_path / "notes.txt"))
    assert code == 2 and "--cert and --key" in err
