"""stt-client batch against a real server on loopback (tiny ONNX model): resume after a kill,
a server restart mid-batch, failures, WER, and the crash-safe result log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.client import cli
from service.client.result_log import ResultLog
from tests.server_harness import RunningServer, free_port, make_settings
from tests.speech_audio import to_container, utterances

ROOT = Path(__file__).resolve().parent.parent
N_FILES = 16


def start_server(model_dir: Path, port: int = 0) -> RunningServer:
    from service.recognizer import Recognizer

    engine = Recognizer.load(model_dir, inference_threads=1, batch_max_size=8, batch_max_wait_ms=2.0)
    return RunningServer(make_settings(port=port), engine)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("batch_audio")
    wav = to_container(utterances(["hello world", "good morning"], pause_s=1.0, lead_s=0.3), 16000, "WAV", "PCM_16")
    for i in range(N_FILES):
        sub = d / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        (sub / f"clip-{i:02d}.wav").write_bytes(wav)
    return d


def expected_files(audio_dir: Path) -> list[str]:
    return sorted(str(p) for p in audio_dir.rglob("*.wav"))


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def batch_process(address: str, inputs: Path, out: Path, jobs: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "service.client.cli", "--server", address, "batch", str(inputs),
           "--out", str(out), "-j", str(jobs), "--no-progress", "--retries", "10"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(out.read_text().splitlines()) if out.exists() else 0
        if count >= n:
            return count
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} results after {timeout} s")


def test_resume_after_kill_loses_and_duplicates_nothing(tiny_model_dir, audio_dir, tmp_path):
    server = start_server(tiny_model_dir)
    try:
        out = tmp_path / "results.jsonl"
        proc = batch_process(server.address, audio_dir, out, jobs=1)
        wait_for_lines(out, 3, proc)
        proc.kill()
        proc.wait(10)
        first = read_results(out)
        assert 3 <= len(first) < N_FILES, "the batch finished before it could be killed"
        # As if a later kill had landed inside write(): a torn last line.
        with open(out, "ab") as f:
            f.write(b'{"file": "' + str(audio_dir).encode() + b'/a/clip-0')
        rerun = batch_process(server.address, audio_dir, out, jobs=2)
        _, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, err
    finally:
        server.stop()
    results = read_results(out)  # every line parses: the torn one was cut off
    names = [r["file"] for r in results]
    assert sorted(names) == expected_files(audio_dir)  # none missing, none twice
    assert results[: len(first)] == first  # what the killed run wrote is kept as it was
    assert f"{len(first)} already done" in err and f"{N_FILES - len(first)} transcribed now" in err


def test_server_restart_during_batch(tiny_model_dir, audio_dir, tmp_path):
    port = free_port()
    server = start_server(tiny_model_dir, port)
    out = tmp_path / "results.jsonl"
    proc = batch_process(server.address, audio_dir, out, jobs=2)
    try:
        wait_for_lines(out, 2, proc)
        server.stop()
        time.sleep(2.0)  # down for a while: calls in flight and new ones fail, and are retried
        assert proc.poll() is None
        server = start_server(tiny_model_dir, port)
        _, err = proc.communicate(timeout=300)
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    names = [r["file"] for r in read_results(out)]
    assert sorted(names) == expected_files(audio_dir)
    retries = int(err.split(" retries")[0].rsplit(" ", 1)[-1])
    assert retries >= 1, err


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    running = start_server(tiny_model_dir)
    yield running
    running.stop()


def test_failures_are_summarized_and_retried_on_rerun(server, audio_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = (audio_dir / "a" / "clip-01.wav").read_bytes()
    (inputs / "one.wav").write_bytes(good)
    (inputs / "broken.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    (inputs / "one.txt").write_text("Hello, world. Good morning!")  # reference transcript: WER
    out = tmp_path / "results.jsonl"
    args = ["--server", server.address, "batch", str(inputs), "--out", str(out), "--no-progress"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "broken.wav" in err and "unsupported or unreadable" in err
    assert "WER:" in err and "over 1 files" in err
    (record,) = read_results(out)
    assert record["file"].endswith("one.wav") and record["reference"].startswith("Hello")
    assert 0.0 <= record["wer"] and record["segments"] and record["attempts"] == 1
    # Rerun: the done file is skipped, only the failure is tried again.
    (inputs / "broken.wav").write_bytes(good)
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "1 already done, 1 transcribed now, 0 failed" in err
    assert sorted(Path(r["file"]).name for r in read_results(out)) == ["broken.wav", "one.wav"]


def test_list_file_and_deploy_flags(server, audio_dir, tmp_path, capsys):
    """The flags deploy/batch/run-shard.sh uses: --target, --files-from, --output."""
    files = expected_files(audio_dir)[:3]
    listing = tmp_path / "files.txt"
    listing.write_text("# shard 0\n" + "\n".join(files) + "\n\n" + files[0] + "\n")
    out = tmp_path / "part-00000.jsonl.tmp"
    assert cli.main(["batch", "--target", server.address, "--files-from", str(listing), "--output", str(out),
                     "-j", "3", "--no-progress"]) == 0
    assert sorted(r["file"] for r in read_results(out)) == sorted(files)


def test_unreachable_server_fails_fast(audio_dir, tmp_path, capsys):
    started = time.monotonic()
    code = cli.main(["--server", f"127.0.0.1:{free_port()}", "--timeout", "2", "batch", str(audio_dir),
                     "--out", str(tmp_path / "r.jsonl")])
    assert code == 1 and time.monotonic() - started < 10
    assert "server not reachable" in capsys.readouterr().err


def test_result_log_cuts_torn_tail_and_keeps_complete_lines(tmp_path):
    out = tmp_path / "r.jsonl"
    with ResultLog(out) as log:
        log.append({"file": "a.wav", "transcript": "x"})
        log.append({"file": "b.wav", "transcript": "y"})
    with open(out, "ab") as f:
        f.write(b'{"file": "c.wav", "transcr')
    log = ResultLog(out)
    assert log.done() == {"a.wav", "b.wav"} and log.repaired_bytes > 0
    log.append({"file": "c.wav", "transcript": "z"})
    log.close()
    assert [json.loads(line)["file"] for line in out.read_text().splitlines()] == ["a.wav", "b.wav", "c.wav"]


def test_sigterm_stops_cleanly_with_a_summary(tiny_model_dir, audio_dir, tmp_path):
    """A deleted pod: calls in flight are cancelled, the summary is printed, exit 130, the file is whole."""
    import signal

    server = start_server(tiny_model_dir)
    try:
        out = tmp_path / "results.jsonl"
        proc = batch_process(server.address, audio_dir, out, jobs=2)
        wait_for_lines(out, 2, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 130, err
    assert "interrupted: rerun the same command" in err and "Traceback" not in err
    results = read_results(out)
    assert len({r["file"] for r in results}) == len(results) >= 2
