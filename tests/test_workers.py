"""STT_WORKERS > 1: one port served by several worker processes under a supervisor.

Real processes (`python -m service --workers 2`), real clients, one connection per
stream so the kernel's SO_REUSEPORT balancing has connections to spread.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from service.proto.stt.v1 import stt_pb2_grpc
from tests.server_harness import final_texts, finals_or_error, free_port, speech_audio, stream_requests
from tests.test_end_to_end import wait_serving

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return speech_audio()


def start(model_dir: Path, log_path: Path, *flags: str, grace_s: float = 20.0, port: int | None = None,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int, int]:
    port, metrics_port = port or free_port(), free_port()
    env = {**os.environ, "STT_HOST": "127.0.0.1", "STT_DRAIN_GRACE_SECONDS": str(grace_s), "STT_LOG_FORMAT": "text",
           **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--workers", str(WORKERS), "--port", str(port),
         "--metrics-port", str(metrics_port), "--model-dir", str(model_dir), "--inference-threads", "1",
         # Streams held open by these tests may wait on a busy test machine: not the timeout under test.
         "--idle-timeout-seconds", "60", *flags],
        cwd=ROOT, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
    )
    return process, port, metrics_port


def wait_all_serving(process: subprocess.Popen, port: int, log_path: Path, timeout: float = 60.0) -> None:
    wait_serving(port, process, timeout)
    deadline = time.monotonic() + timeout
    while "all workers serving" not in log_path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.1)


def metric(metrics_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def own_channel(port: int) -> grpc.Channel:
    # A local subchannel pool: each channel opens its own TCP connection instead of sharing one.
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # the supervisor drains its workers
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_pids(log_path: Path) -> list[int]:
    return [int(p) for p in re.findall(r"worker started worker=\d+ pid=(\d+)", log_path.read_text())]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too (its parent, the killed supervisor, is gone; init reaps it soon)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections that process ``pid`` accepted on ``port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            count += local_port == port and state == "01" and inode in inodes  # 01: ESTABLISHED
    return count


def test_workers_share_the_port_the_limit_and_the_metrics_and_drain_on_sigterm(tiny_model_dir, audio, tmp_path):
    log_path = tmp_path / "server.log"
    process, port, metrics_port = start(tiny_model_dir, log_path)
    release = threading.Event()
    try:
        wait_all_serving(process, port, log_path)
        assert metric(metrics_port, "stt_max_streams") == 200
        assert metric(metrics_port, "stt_workers_serving") == WORKERS
        assert metric(metrics_port, "stt_worker_restarts_total") == 0
        for index in range(WORKERS):  # per-worker process series (the multiprocess registry has no process_*)
            assert metric(metrics_port, f'stt_worker_resident_memory_bytes{{worker="{index}"}}') > 20e6
            assert metric(metrics_port, f'stt_worker_cpu_seconds_total{{worker="{index}"}}') > 0
        n = 16  # P(all 16 connections hashed onto one of 2 workers) = 2 ** -15
        results: list = []

        def stream() -> None:  # sends the audio, then holds the stream open until released
            with own_channel(port) as channel:
                results.append(finals_or_error(channel, audio, pace_s=0.01, stall=release))

        threads = [threading.Thread(target=stream) for _ in range(n)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while metric(metrics_port, "stt_active_streams") < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(metrics_port, "stt_active_streams") == n, "the supervisor's /metrics sums the workers"
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.5)  # the workers drain: the streams they hold still get their finals
        release.set()
        for thread in threads:
            thread.join(60)
        assert process.wait(30) == 0
        assert time.monotonic() - signalled < 20, "exit within the grace period"
        assert len(results) == n and all(isinstance(r, list) and len(r) == 2 for r in results), results
        assert all(r == results[0] for r in results), "every worker runs the same model"
        log = log_path.read_text()
        served_by = set(re.findall(r"stream ended .*worker=(\d+)", log))
        assert served_by == {"0", "1"}, log[-3000:]
        assert log.count("draining") == WORKERS and "workers stopped exit_code=0" in log
    finally:
        release.set()
        stop(process)


def test_max_streams_counts_all_workers_together(tiny_model_dir, audio, tmp_path):
    log_path = tmp_path / "server.log"
    process, port, metrics_port = start(tiny_model_dir, log_path, "--max-streams", "3")
    release = threading.Event()
    holders: list[threading.Thread] = []
    outcomes: list = []

    def hold() -> None:
        with own_channel(port) as channel:
            try:
                outcomes.append(final_texts(stt_pb2_grpc.SpeechStub(channel).StreamingRecognize(
                    stream_requests(audio[:16000], stall=release), timeout=60)))
            except grpc.RpcError as err:
                outcomes.append(err.code())

    try:
        wait_all_serving(process, port, log_path)
        for _ in range(3):
            holders.append(threading.Thread(target=hold))
            holders[-1].start()
        deadline = time.monotonic() + 30
        while metric(metrics_port, "stt_active_streams") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(metrics_port, "stt_active_streams") == 3
        for _ in range(6):  # new connections, whichever worker they reach
            with own_channel(port) as channel:
                with pytest.raises(grpc.RpcError) as info:
                    list(stt_pb2_grpc.SpeechStub(channel).StreamingRecognize(stream_requests(audio[:8000]), timeout=10))
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "3 concurrent streams" in info.value.details()
        release.set()
        for thread in holders:
            thread.join(30)
        assert len(outcomes) == 3 and all(isinstance(o, list) for o in outcomes), outcomes
        with own_channel(port) as channel:  # slots came back
            assert final_texts(stt_pb2_grpc.SpeechStub(channel).StreamingRecognize(
                stream_requests(audio[:16000]), timeout=30)) is not None
    finally:
        release.set()
        stop(process)


def test_a_killed_worker_is_replaced_and_its_slots_freed(tiny_model_dir, audio, tmp_path):
    log_path = tmp_path / "server.log"
    process, port, metrics_port = start(tiny_model_dir, log_path, "--max-streams", "4")
    release = threading.Event()
    holders: list[tuple[grpc.Channel, object]] = []

    def hold() -> None:
        channel = own_channel(port)
        holders.append((channel, stt_pb2_grpc.SpeechStub(channel).StreamingRecognize(
            stream_requests(audio[:16000], stall=release), timeout=60)))

    def wait_active(n: int) -> None:
        deadline = time.monotonic() + 30
        while metric(metrics_port, "stt_active_streams") != n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(metrics_port, "stt_active_streams") == n

    try:
        wait_all_serving(process, port, log_path)
        pids = {int(w): int(p) for w, p in re.findall(r"worker started worker=(\d+) pid=(\d+)", log_path.read_text())}
        for _ in range(4):  # fill the server; the kernel spreads the connections over both workers
            hold()
        wait_active(4)
        victim = max(pids, key=lambda w: connections_to(pids[w], port))  # one that holds streams
        os.kill(pids[victim], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while log_path.read_text().count(f"worker serving worker={victim}") < 2:
            assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.1)
        assert f"worker died; restarting worker={victim}" in log_path.read_text()
        assert metric(metrics_port, "stt_worker_restarts_total") == 1
        survivors = int(metric(metrics_port, "stt_active_streams"))  # the other worker's streams
        assert survivors < 4, "the killed worker's streams are no longer counted"
        for _ in range(4 - survivors):  # the dead worker's slots were given back
            hold()
        wait_active(4)
        with own_channel(port) as channel:
            with pytest.raises(grpc.RpcError) as info:
                list(stt_pb2_grpc.SpeechStub(channel).StreamingRecognize(stream_requests(audio[:8000]), timeout=10))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        finished = 0
        for channel, call in holders:  # streams on the killed worker broke; every other one finishes
            try:
                final_texts(call)
                finished += 1
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            channel.close()
        assert finished == 4
        wait_active(0)
    finally:
        release.set()
        stop(process)


def test_a_worker_that_cannot_load_the_model_stops_the_server(tmp_path):
    log_path = tmp_path / "server.log"
    process, _port, _metrics_port = start(tmp_path / "no-model", log_path)
    try:
        assert process.wait(60) == 1
        log = log_path.read_text()
        assert "model failed to load" in log and "worker failed to start" in log, log[-3000:]
    finally:
        stop(process)


def test_ipv6_any_address_as_grpc_spells_it(tiny_model_dir, tmp_path):
    """STT_HOST=[::] (gRPC's spelling) works for the reserved port and the /metrics server."""
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    log_path = tmp_path / "server.log"
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "STT_HOST": "[::]", "STT_LOG_FORMAT": "text"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--workers", "2", "--port", str(port), "--metrics-port", str(metrics_port),
         "--model-dir", str(tiny_model_dir), "--inference-threads", "1"],
        cwd=ROOT, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        wait_all_serving(process, port, log_path)
        assert metric(metrics_port, "stt_workers_serving") == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        stop(process)


def test_workers_exit_when_the_supervisor_is_killed(tiny_model_dir, tmp_path):
    """SIGKILL leaves the supervisor no chance to stop its workers: they notice on their own
    (parent-death signal) and drain, instead of serving on as orphans."""
    log_path = tmp_path / "server.log"
    process, port, _metrics_port = start(tiny_model_dir, log_path, grace_s=2.0)
    try:
        wait_all_serving(process, port, log_path)
        pids = worker_pids(log_path)
        assert len(pids) == WORKERS and all(alive(pid) for pid in pids)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in pids), log_path.read_text()[-3000:]
        assert log_path.read_text().count("draining") == WORKERS
    finally:
        stop(process)


def test_a_second_server_cannot_share_a_busy_port(tiny_model_dir, tmp_path):
    """SO_REUSEPORT would let a second server join the first one's port and take half its
    connections: it must refuse to start instead. Also: a metrics directory given by the
    operator keeps its other files (only stale counter files, *.db, go) and is created when missing."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "keep.txt").write_text("not ours")
    (metrics_dir / "counter_123.db").write_bytes(b"stale")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first, port, _ = start(tiny_model_dir, first_log, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        wait_all_serving(first, port, first_log)
        assert (metrics_dir / "keep.txt").exists() and not (metrics_dir / "counter_123.db").exists()
        second, _, _ = start(tiny_model_dir, second_log, port=port, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m2")})
        try:
            assert second.wait(60) == 1
        finally:
            stop(second)
        log = second_log.read_text()
        assert "cannot bind the gRPC port" in log and "worker started" not in log, log[-3000:]
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    finally:
        stop(first)


def _take_a_slot_and_hang(slots) -> None:
    slots._lock.acquire()  # killed inside try_acquire's critical section, as an OOM kill could
    slots._counts[slots._index] += 1
    time.sleep(600)


def test_a_worker_killed_holding_the_slot_lock_does_not_block_the_others(tmp_path):
    from service.config import load_settings
    from service.workers import SharedSlots, Supervisor

    supervisor = Supervisor(load_settings(["--workers", "2"]))
    dying = SharedSlots(supervisor._counts, supervisor._slot_lock, 0)
    proc = supervisor._ctx.Process(target=_take_a_slot_and_hang, args=(dying,))
    proc.start()
    deadline = time.monotonic() + 30
    while supervisor._counts[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.join()
    other = SharedSlots(supervisor._counts, supervisor._slot_lock, 1)
    assert not other.try_acquire(4), "the lock of the dead worker is still held: refused, not hung"
    supervisor._procs[0] = proc
    supervisor._forget(0, str(tmp_path))  # what the supervisor does when it sees the worker dead
    assert supervisor._counts[0] == 0
    assert other.try_acquire(4) and other.try_acquire(4) and supervisor._counts[1] == 2
    other.release()
    assert supervisor._counts[1] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_busy_metrics_port_is_one_clear_error_and_exit_1(tiny_model_dir, tmp_path, workers):
    """An operator mistake, not a crash: one log line naming the port and the setting, no traceback."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        log_path = tmp_path / "server.log"
        env = {**os.environ, "STT_HOST": "127.0.0.1", "STT_LOG_FORMAT": "text"}
        with open(log_path, "w") as out:
            process = subprocess.run(
                [sys.executable, "-m", "service", "--workers", str(workers), "--port", str(free_port()),
                 "--metrics-port", str(busy.getsockname()[1]), "--model-dir", str(tiny_model_dir)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=120)
        log = log_path.read_text()
        assert process.returncode == 1, log[-3000:]
        assert f"cannot bind the metrics port 127.0.0.1:{busy.getsockname()[1]}" in log and "STT_METRICS_PORT" in log
        assert "Traceback" not in log and "worker started" not in log, log[-3000:]
    finally:
        busy.close()
