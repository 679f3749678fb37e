"""Pre-fork worker processes: one server, several Python processes on one gRPC port.

One process cannot use more than about one core (the GIL serializes gRPC, VAD, features
and the decoder's numpy work; docs/BENCHMARKS.md). With ``STT_WORKERS=N`` this supervisor
starts N worker processes that each load the model and bind the same port with
SO_REUSEPORT, so the kernel spreads incoming *connections* over them (a gRPC channel
is one connection: its streams all land on one worker). The supervisor itself serves
no RPCs; it

- reserves the port (so ``--port 0`` picks one port for all workers) and logs it;
- serves /metrics for all workers (prometheus_client multiprocess mode);
- shares ``STT_MAX_STREAMS`` across workers (``SharedSlots``): the limit is per server;
- forwards SIGTERM/SIGINT: every worker drains within ``STT_DRAIN_GRACE_SECONDS``;
- exits with a worker's status when one fails before serving (bad model: 1), and
  restarts a worker that dies while serving (at most ``_MAX_RESTARTS`` per minute).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event

from service import metrics
from service.config import Settings

log = logging.getLogger("service.workers")

_MAX_RESTARTS = 5  # per minute, all workers together; then the supervisor gives up
_KILL_AFTER_GRACE_S = 10.0  # a worker still alive this long after its drain grace is killed
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class SharedSlots:
    """Stream slots of all workers: one counter per worker in shared memory, under one lock.

    Per-worker counters (not one total) so the supervisor can zero a dead worker's slots.
    """

    def __init__(self, counts: SynchronizedArray, index: int) -> None:
        self._counts = counts
        self._index = index

    def try_acquire(self, max_streams: int) -> bool:
        with self._counts.get_lock():
            if sum(self._counts.get_obj()) >= max_streams:
                return False
            self._counts[self._index] += 1
            return True

    def release(self) -> None:
        with self._counts.get_lock():
            self._counts[self._index] -= 1


@dataclass
class WorkerContext:
    """What a worker process gets from the supervisor."""

    index: int
    slots: SharedSlots
    ready: Event  # set once the worker serves


def _die_with_supervisor(supervisor_pid: int) -> None:
    """SIGTERM (a drain) to this worker when the supervisor dies, even by SIGKILL: no orphan
    keeps serving on the port. Linux prctl(PR_SET_PDEATHSIG); a no-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:  # it died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(settings: Settings, index: int, counts: SynchronizedArray, ready: Event, supervisor_pid: int) -> None:
    import asyncio

    from service.__main__ import serve
    from service.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format, {"worker": index})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor turns Ctrl-C into SIGTERM
    _die_with_supervisor(supervisor_pid)
    raise SystemExit(asyncio.run(serve(settings, WorkerContext(index, SharedSlots(counts, index), ready))))


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: fixes the port (0 -> a free one) for the
    workers' listeners without receiving connections itself."""
    host = host.strip("[]")  # gRPC spells IPv6 addresses "[::]"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    """Starts, watches and stops the worker processes of one server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx = mp.get_context("spawn")  # no fork: ONNX Runtime and gRPC threads do not survive it
        self._counts = self._ctx.Array("i", settings.workers)
        self._procs: list[mp.process.BaseProcess | None] = [None] * settings.workers
        self._ready: list[Event] = [self._ctx.Event() for _ in range(settings.workers)]
        self._stopping = False
        self._restarts: list[float] = []
        self._serving = [False] * settings.workers
        self._signal: int | None = None
        self._restarted = 0  # workers replaced after dying while serving

    def _start(self, index: int, settings: Settings) -> None:
        self._counts[index] = 0
        self._ready[index].clear()
        proc = self._ctx.Process(target=_worker_main, name=f"stt-worker-{index}", daemon=False,
                                 args=(settings, index, self._counts, self._ready[index], os.getpid()))
        proc.start()
        self._procs[index] = proc
        log.info("worker started", extra={"worker": index, "pid": proc.pid})

    def _signal_all(self, sig: int) -> None:
        for proc in self._procs:
            if proc is not None and proc.is_alive():
                os.kill(proc.pid, sig)

    def _on_signal(self, signum, _frame) -> None:
        # No logging here: the handler may interrupt the main thread inside a logging call.
        self._signal = self._signal or signum
        self._stopping = True

    def run(self) -> int:
        """Until SIGTERM/SIGINT (then 0 once every worker drained) or a worker fails to start."""
        own_dir = _MULTIPROC_ENV not in os.environ
        directory = os.environ.setdefault(_MULTIPROC_ENV, tempfile.mkdtemp(prefix="stt-metrics-"))
        for stale in os.listdir(directory):  # counters of an earlier run must not add up
            os.unlink(os.path.join(directory, stale))
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        reserved = _reserve_port(self.settings.host, self.settings.port)
        http = None
        try:
            port = reserved.getsockname()[1]
            worker_settings = self.settings.model_copy(update={"port": port, "workers": 1})
            own = metrics.SupervisorMetrics(lambda: sum(self._serving), lambda: self._restarted)
            http = metrics.serve_multiprocess_metrics(self.settings.metrics_port, self.settings.host, directory, own)
            log.info("supervisor started", extra={"port": port, "metrics_port": http.server_port,
                                                  "workers": self.settings.workers})
            for index in range(self.settings.workers):
                self._start(index, worker_settings)
            status = self._watch(worker_settings, directory)
            return self._stop(directory) or status
        finally:
            reserved.close()
            if http is not None:
                http.shutdown()
                http.server_close()
            if own_dir:
                shutil.rmtree(directory, ignore_errors=True)

    def _watch(self, worker_settings: Settings, directory: str) -> int:
        serving = self._serving
        while not self._stopping:
            wait([p.sentinel for p in self._procs if p is not None], timeout=0.2)
            for index, ready in enumerate(self._ready):
                if ready.is_set() and not serving[index]:
                    serving[index] = True
                    log.info("worker serving", extra={"worker": index, "pid": self._procs[index].pid})
                    if all(serving):
                        log.info("all workers serving", extra={"workers": len(self._procs)})
            for index, proc in enumerate(self._procs):
                if proc is None or proc.is_alive() or self._stopping:
                    continue
                metrics.forget_process(proc.pid, directory)
                self._counts[index] = 0  # its streams died with it
                if not self._ready[index].is_set():
                    log.error("worker failed to start", extra={"worker": index, "exit_code": proc.exitcode})
                    return proc.exitcode or 1
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < 60] + [now]
                if len(self._restarts) > _MAX_RESTARTS:
                    log.error("workers keep dying; giving up", extra={"restarts_per_minute": len(self._restarts)})
                    return 1
                log.error("worker died; restarting", extra={"worker": index, "exit_code": proc.exitcode})
                serving[index] = False
                self._restarted += 1
                self._start(index, worker_settings)
        return 0

    def _stop(self, directory: str) -> int:
        """SIGTERM every worker (each drains for the grace period), wait, kill stragglers."""
        if self._signal is not None:
            log.info("stopping workers", extra={"signal": signal.Signals(self._signal).name})
        self._stopping = True
        self._serving[:] = [False] * len(self._serving)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_grace_seconds + _KILL_AFTER_GRACE_S
        status = 0
        for index, proc in enumerate(self._procs):
            if proc is None:
                continue
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("worker did not stop in time; killing it", extra={"worker": index})
                proc.kill()
                proc.join()
            metrics.forget_process(proc.pid, directory)
            status = status or (proc.exitcode if proc.exitcode and proc.exitcode > 0 else 0)
        log.info("workers stopped", extra={"exit_code": status})
        return status
