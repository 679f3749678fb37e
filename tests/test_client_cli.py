"""service/client/cli.py (stt-client) against a real server (engine test double)."""
from __future__ import annotations

import pytest

from service.client import cli
from tests.engine_double import CountingRecognizer
from tests.server_harness import RunningServer, make_settings, speech_audio
from tests.speech_audio import to_container


@pytest.fixture(scope="module")
def server():
    running = RunningServer(make_settings(), CountingRecognizer())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    audio = speech_audio()
    (d / "speech.wav").write_bytes(to_container(audio, 16000, "WAV", "PCM_16"))
    (d / "speech.ogg").write_bytes(to_container(audio, 16000, "OGG", "VORBIS"))
    return d


@pytest.mark.parametrize("name", ["speech.wav", "speech.ogg"])
def test_recognize_prints_finals(server, files, capsys, name):
    assert cli.main(["--server", server.address, "recognize", str(files / name), "--words"]) == 0
    out = capsys.readouterr().out.splitlines()
    transcripts = [line for line in out if not line.startswith("    ")]
    assert len(transcripts) == 2 and all(t.startswith("w0") for t in transcripts)
    assert any(line.startswith("    ") for line in out)  # word times


def test_stream_prints_finals_on_own_lines(server, files, capsys):
    assert cli.main(["--server", server.address, "stream", str(files / "speech.wav"), "--events"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("w0") for line in out) == 2
    assert "[SPEECH_ACTIVITY_BEGIN" in out[0]
    assert "\r" not in "".join(out)  # not a terminal: no in-place partials


def test_live_line_overwrites_partials():
    import io

    buf = io.StringIO()
    line = cli.LiveLine(buf, interactive=True)
    line.partial("hello")
    line.partial("hello wor")
    line.clear()
    assert buf.getvalue() == "\r\033[Khello\r\033[Khello wor\r\033[K"


def test_errors_are_reported(server, files, capsys, tmp_path):
    assert cli.main(["--server", server.address, "recognize", str(tmp_path / "missing.wav")]) == 2
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    assert cli.main(["--server", server.address, "recognize", str(tmp_path / "bad.wav")]) == 2
    assert "unsupported or unreadable audio file" in capsys.readouterr().err
    # Raw audio at a rate the server refuses: its INVALID_ARGUMENT, on one line, exit 1.
    (tmp_path / "x.raw").write_bytes(b"\0" * 3200)
    assert cli.main(["--server", server.address, "recognize", str(tmp_path / "x.raw"),
                     "--raw-encoding", "linear16", "--rate", "4000"]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
