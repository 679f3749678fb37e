"""Every Prometheus metric of the service, and nowhere else.

Served over HTTP on ``STT_METRICS_PORT`` at ``/metrics`` (see ``serve_metrics``).
Names follow docs/ARCHITECTURE.md; the deployment's alerts and dashboard use them.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# With PROMETHEUS_MULTIPROC_DIR set, prometheus_client opens a file there as soon as a metric
# below is created: an operator-chosen directory that does not exist yet must not crash the import.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Latency buckets in seconds: partial/final results are expected within tens to hundreds of ms.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
# Real-time factor: compute seconds per audio second; 1.0 means just keeping up.
_RTF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
EVENT_LOOP_LAG_INTERVAL_S = 0.25

# multiprocess_mode applies with STT_WORKERS > 1 (service/workers.py): the supervisor sums the
# workers' files; "livesum" drops a worker that died, "max" reports the one configured value.
ACTIVE_STREAMS = Gauge("stt_active_streams", "Recognition RPCs in progress (streaming and unary).",
                       multiprocess_mode="livesum")
MAX_STREAMS = Gauge("stt_max_streams", "Configured capacity: the most concurrent recognition RPCs.",
                    multiprocess_mode="max")
STREAMS_TOTAL = Counter(
    "stt_streams_total",
    "Recognition RPCs finished, by outcome (ok, error, cancelled, rejected: refused before starting) and gRPC status code.",
    ["outcome", "code"],
)
REJECTED_STREAMS_TOTAL = Counter(
    "stt_rejected_streams_total",
    "Recognition RPCs refused before starting, by reason (capacity, draining, loading, unauthenticated).",
    ["reason"],
)
AUDIO_SECONDS_TOTAL = Counter("stt_audio_seconds_total", "Seconds of audio received and decoded.")
SEGMENTS_TOTAL = Counter("stt_segments_total", "Speech segments recognized (one final result each).")
RTF = Histogram(
    "stt_rtf",
    "Real-time factor per segment: recognizer compute seconds / segment audio seconds.",
    buckets=_RTF_BUCKETS,
)
PARTIAL_LATENCY = Histogram(
    "stt_partial_latency_seconds",
    "From receiving an audio message to sending the partial result it produced.",
    buckets=_LATENCY_BUCKETS,
)
FINAL_LATENCY = Histogram(
    "stt_final_latency_seconds",
    "From receiving the audio that ended a segment (or the end of the stream) to sending its final result.",
    buckets=_LATENCY_BUCKETS,
)
ENCODER_BATCH_SIZE = Histogram(
    "stt_encoder_batch_size", "Streams stacked into one encoder ONNX call.", buckets=_BATCH_BUCKETS
)
DECODER_BATCH_SIZE = Histogram(
    "stt_decoder_batch_size", "Streams stacked into one decoder-step ONNX call (and its LM step).", buckets=_BATCH_BUCKETS
)
INFERENCE_SECONDS = Histogram(
    "stt_inference_seconds",
    "Wall time of one batched ONNX Runtime call, by graph (encoder; decoder, with the LM step when the model has one).",
    ["graph"],
    buckets=_INFERENCE_BUCKETS,
)
# A process serves all its streams from one event loop, and that loop, not the cores, is what
# saturates first under load (docs/BENCHMARKS.md section 1). Measured p95 with two workers on
# 2 CPUs: <= 5 ms at 60 streams, 10-25 ms at 100 (the capacity), 25-50 ms at 120 (overloaded).
EVENT_LOOP_LAG = Histogram(
    "stt_event_loop_lag_seconds",
    f"How late the server process's event loop ran a timer due every {EVENT_LOOP_LAG_INTERVAL_S:g} s "
    "(near 0 with CPU to spare).",
    buckets=_LAG_BUCKETS,
)


async def watch_event_loop(interval_s: float = EVENT_LOOP_LAG_INTERVAL_S) -> None:
    """Observe EVENT_LOOP_LAG until cancelled; run as a task on the serving loop."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        EVENT_LOOP_LAG.observe(max(0.0, loop.time() - due))


def serve_metrics(port: int, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> ThreadingHTTPServer:
    """Serve /metrics over HTTP from a daemon thread; port 0 picks a free one (see ``server_port``).

    Raises OSError naming the port and the setting when it cannot bind (e.g. the port is in use)."""
    try:
        server, _thread = start_http_server(port, addr=host.strip("[]"), registry=registry)  # gRPC's "[::]" -> "::"
    except OSError as err:
        raise OSError(err.errno, f"cannot bind the metrics port {host}:{port} ({err.strerror or err}): "
                                 "choose a free one with STT_METRICS_PORT or --metrics-port") from err
    return server


class SupervisorMetrics(Collector):
    """The supervisor's own series (STT_WORKERS > 1), read when scraped:
    ``stt_workers_serving`` (workers that loaded the model and take streams),
    ``stt_worker_restarts_total`` (workers that died while serving and were replaced) and,
    per live worker (label ``worker``, its index), what ``process_*`` says of one process:
    ``stt_worker_resident_memory_bytes``, ``stt_worker_cpu_seconds_total``, ... (prometheus_client's
    ProcessCollector reads them from /proc; the multiprocess registry has no process_* series)."""

    def __init__(self, serving: Callable[[], int], restarts: Callable[[], int],
                 worker_pids: Callable[[], dict[int, int]] = dict) -> None:
        self._serving = serving
        self._restarts = restarts
        self._worker_pids = worker_pids  # worker index -> pid of the live ones

    def collect(self):
        yield GaugeMetricFamily("stt_workers_serving", "Worker processes serving (STT_WORKERS > 1).",
                                value=self._serving())
        yield CounterMetricFamily("stt_worker_restarts", "Worker processes that died while serving and were replaced.",
                                  value=self._restarts())
        per_worker: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for index, pid in sorted(self._worker_pids().items()):
            # registry=None: a throwaway collector for one scrape, not registered anywhere
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                name = "stt_worker_" + family.name.removeprefix("process_")
                if name not in per_worker:
                    kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
                    per_worker[name] = kind(name, f"{family.documentation} (per worker process)", labels=["worker"])
                for sample in family.samples:
                    per_worker[name].add_metric([str(index)], sample.value)
        yield from per_worker.values()


def serve_multiprocess_metrics(port: int, host: str, directory: str, supervisor: Collector) -> ThreadingHTTPServer:
    """/metrics of all worker processes: the files they write under ``directory``
    (PROMETHEUS_MULTIPROC_DIR), summed per metric by each metric's multiprocess_mode,
    plus the ``supervisor``'s own series (SupervisorMetrics)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(supervisor)
    return serve_metrics(port, host, registry)


def forget_process(pid: int, directory: str) -> None:
    """A worker exited: drop its live gauges (its counters and histograms stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path=directory)
