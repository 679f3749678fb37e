"""Shared benchmark helpers: machine details, the server as a subprocess, /proc sampling, test speech.

Every benchmark prints ``machine_report()`` beside its figures, starts the
server itself (``python -m service``) so that the server process alone is
measured, and synthesizes its speech with espeak-ng (tests/speech_audio.py).
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
BUNDLED_MODEL_DIR = ROOT / "service" / "models" / "default"

# Sentences for load and memory runs (the accuracy benchmark uses its own manifest).
SENTENCES = [
    "please turn on the kitchen lights",
    "what is the weather going to be like tomorrow",
    "call my sister and tell her i will be late",
    "set a timer for twenty minutes",
    "the quick brown fox jumps over the lazy dog",
    "remind me to buy milk on the way home",
    "how many kilometres is it to the airport",
    "play some quiet music in the living room",
]


# --- machine ---------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def machine_report() -> str:
    """CPU model, cores, RAM, load, Python and library versions: printed with every result."""
    import onnxruntime

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    try:
        import grpc

        grpc_version = grpc.__version__
    except ImportError:
        grpc_version = "-"
    return "\n".join([
        "## machine",
        f"cpu:          {_cpu_model()}",
        f"cores:        {os.cpu_count()} logical (affinity {len(os.sched_getaffinity(0))})",
        f"ram:          {_ram_gib():.1f} GiB",
        f"load avg:     {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min; should be ~0 on an idle machine)",
        f"os:           {platform.platform()}",
        f"python:       {platform.python_version()} ({sys.executable})",
        f"onnxruntime:  {onnxruntime.__version__}",
        f"grpcio:       {grpc_version}",
        f"numpy:        {np.__version__}",
    ])


# --- one process's CPU and memory, from /proc (psutil when installed) ----------------------------------


def rss_bytes(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a supervisor's worker processes: STT_WORKERS > 1)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _tree_each(pid: int, measure) -> dict[int, float]:
    """``measure(p)`` of the process and each live descendant, by pid."""
    out = {}
    for p in process_tree(pid):
        try:
            out[p] = measure(p)
        except Exception:  # noqa: BLE001 - exited between listing and reading (OSError or psutil.NoSuchProcess)
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all threads)."""
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except ImportError:
        pass
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    cpu_percent: float  # of one core, since the previous sample (200 = two cores busy)
    rss: int


@dataclass
class ProcessSampler:
    """Samples the CPU % and RSS of a process and its descendants (workers) every ``interval_s``
    in a background thread. CPU is summed per process over the interval: a worker that exits
    drops out (its last interval's CPU is lost), a new one counts from its start."""

    pid: int
    interval_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    tree: bool = True  # False: the process alone, not its children

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ProcessSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _each(self, measure) -> dict[int, float]:
        return _tree_each(self.pid, measure) if self.tree else {self.pid: measure(self.pid)}

    def _run(self) -> None:
        start = last_t = time.monotonic()
        last_cpu = self._each(cpu_seconds)
        while not self._stop.wait(self.interval_s):
            now, cpu = time.monotonic(), self._each(cpu_seconds)
            used = sum(c - last_cpu.get(p, 0.0) for p, c in cpu.items())
            self.samples.append(Sample(now - start, 100.0 * used / max(now - last_t, 1e-9),
                                       int(sum(self._each(rss_bytes).values()))))
            last_t, last_cpu = now, cpu

    def mean_cpu(self) -> float:
        return float(np.mean([s.cpu_percent for s in self.samples])) if self.samples else float("nan")

    def max_rss(self) -> int:
        return max((s.rss for s in self.samples), default=int(sum(self._each(rss_bytes).values())))


# --- the server ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flags(args: list[str]) -> dict[str, str]:
    """``--name value`` / ``--name=value`` server flags -> {name_with_underscores: value}."""
    out, i = {}, 0
    while i < len(args):
        if args[i].startswith("--"):
            name, _, value = args[i][2:].partition("=")
            if not value and i + 1 < len(args):
                i, value = i + 1, args[i + 1]
            out[name.replace("-", "_")] = value
        i += 1
    return out


class ServerProcess:
    """``python -m service`` on free loopback ports; ``startup_s`` is process start -> health SERVING."""

    def __init__(self, model_dir: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None, startup_timeout_s: float = 120.0) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = open(log_path, "w") if log_path else subprocess.DEVNULL
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(self.port), "--metrics-port", str(self.metrics_port),
             "--model-dir", str(model_dir), *(extra_args or [])],
            cwd=ROOT, env={**os.environ, "STT_HOST": "127.0.0.1", "STT_LOG_FORMAT": "text", **(env or {})},
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid
        self._wait_serving(startup_timeout_s)
        workers = int(_flags(extra_args or []).get("workers", {**os.environ, **(env or {})}.get("STT_WORKERS", 1)))
        while workers > 1 and self.metric("stt_workers_serving") < workers:  # health answered from one of them
            if time.monotonic() - started > startup_timeout_s:
                raise TimeoutError(f"not all {workers} workers started")
            time.sleep(0.02)
        self.startup_s = time.monotonic() - started

    def _wait_serving(self, timeout_s: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode} during start-up")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.02)
        raise TimeoutError("the server did not report SERVING")

    def metric(self, name: str) -> float:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    def histogram(self, name: str) -> dict[float, float]:
        """Cumulative bucket counts of a histogram on /metrics: upper bound (s) -> count."""
        import urllib.request

        prefix = f'{name}_bucket{{le="'
        buckets = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(prefix):
                    le, value = line[len(prefix):].split('"} ')
                    buckets[float(le)] = float(value)
        return buckets

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def default_model_dir() -> Path:
    return BUNDLED_MODEL_DIR


def require_model(model_dir: Path) -> Path:
    if not (model_dir / "encoder.onnx").is_file():
        sys.exit(f"no model at {model_dir} (encoder.onnx missing): train and export one, or pass --model-dir")
    return model_dir


# --- speech ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    text: str
    start_s: float  # where the speech starts in the stream
    end_s: float  # where it ends


def speech_stream(seconds: float, seed: int = 0, pause_s: float = 1.5, lead_s: float = 0.5,
                  voice: str = "en-us") -> tuple[np.ndarray, list[Utterance]]:
    """(N,) float32 16 kHz: SENTENCES in a seeded random order with pauses, at least ``seconds`` long."""
    sys.path.insert(0, str(ROOT))
    from tests.speech_audio import silence, synthesize

    rng = np.random.default_rng(seed)
    parts, utterances, pos = [silence(lead_s)], [], lead_s
    while pos < seconds:
        text = SENTENCES[int(rng.integers(len(SENTENCES)))]
        speech = synthesize(text, RATE, voice)
        utterances.append(Utterance(text, pos, pos + len(speech) / RATE))
        parts += [speech, silence(pause_s)]
        pos += len(speech) / RATE + pause_s
    return np.concatenate(parts), utterances


def to_pcm16(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2").tobytes()


def percentiles(values: list[float], qs=(50, 95, 99)) -> list[float]:
    return [float(np.percentile(values, q)) if values else float("nan") for q in qs]


def fmt_ms(value: float) -> str:
    return "-" if value != value else f"{value * 1000:.0f}"
