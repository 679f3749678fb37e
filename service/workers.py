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

import ctypes
import glob
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
from multiprocessing.synchronize import Lock

from service import metrics
from service.config import Settings

log = logging.getLogger("service.workers")

_MAX_RESTARTS = 5  # per minute, all workers together; then the supervisor gives up
_KILL_AFTER_GRACE_S = 5.0  # a worker still alive this long after its drain grace is killed
# Held for microseconds; waited for at most this long (a worker's event loop blocks meanwhile).
_SLOT_LOCK_TIMEOUT_S = 2.0
_DEAD_HOLDER_S = 0.5  # the supervisor's wait before it assumes a dead worker kept the lock
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class SharedSlots:
    """Stream slots of all workers: one counter per worker in shared memory.

    Each counter has one writer, its worker (and the supervisor once that worker is dead),
    so releasing needs no lock. The lock only makes "count all, then take one" atomic across
    workers. It is a plain semaphore, taken with a timeout and never held across anything
    that can block: a worker killed while holding it must not stall the others, and the
    supervisor frees it when a dead worker kept it (``Supervisor._forget``).
    """

    def __init__(self, counts: ctypes.Array, lock: Lock, index: int) -> None:
        self._counts = counts
        self._lock = lock
        self._index = index

    def try_acquire(self, max_streams: int) -> bool:
        if not self._lock.acquire(timeout=_SLOT_LOCK_TIMEOUT_S):
            log.error("stream slot lock unavailable; refusing the stream", extra={"worker": self._index})
            return False
        try:
            if sum(self._counts) >= max_streams:
                return False
            self._counts[self._index] += 1
            return True
        finally:
            self._lock.release()

    def release(self) -> None:
        self._counts[self._index] -= 1


@dataclass
class WorkerContext:
    """What a worker process gets from the supervisor."""

    index: int
    slots: SharedSlots
    serving_flags: ctypes.Array  # one byte per worker, set by the worker once it serves

    def announce_serving(self) -> None:
        self.serving_flags[self.index] = 1


def _die_with_supervisor(supervisor_pid: int) -> None:
    """SIGTERM (a drain) to this worker when the supervisor dies, even by SIGKILL: no orphan
    keeps serving on the port. Linux prctl(PR_SET_PDEATHSIG); a no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:  # it died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(settings: Settings, context: WorkerContext, supervisor_pid: int) -> None:
    import asyncio

    from service.__main__ import serve
    from service.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format, {"worker": context.index})
    _die_with_supervisor(supervisor_pid)
    raise SystemExit(asyncio.run(serve(settings, context)))


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: fixes the port (0 -> a free one) for the
    workers' listeners without receiving connections itself.

    Raises OSError when anything else holds the port, another server with workers included:
    with SO_REUSEPORT alone a second server would silently share the port with the first.
    """
    host = host.strip("[]")  # gRPC spells IPv6 addresses "[::]"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    """Starts, watches and stops the worker processes of one server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx = mp.get_context("spawn")  # no fork: ONNX Runtime and gRPC threads do not survive it
        # Raw shared memory and a plain semaphore: nothing a dying worker could leave locked
        # for good (SharedSlots, _forget).
        self._counts = self._ctx.RawArray("i", settings.workers)
        self._slot_lock = self._ctx.Lock()
        self._serving_flags = self._ctx.RawArray("b", settings.workers)
        self._procs: list[mp.process.BaseProcess | None] = [None] * settings.workers
        self._stopping = False
        self._restarts: list[float] = []
        self._serving = [False] * settings.workers
        self._signal: int | None = None
        self._restarted = 0  # workers replaced after dying while serving

    def _start(self, index: int, settings: Settings) -> None:
        self._counts[index] = 0
        self._serving_flags[index] = 0
        context = WorkerContext(index, SharedSlots(self._counts, self._slot_lock, index), self._serving_flags)
        proc = self._ctx.Process(target=_worker_main, name=f"stt-worker-{index}", daemon=False,
                                 args=(settings, context, os.getpid()))
        # An ignored SIGINT survives exec and Python keeps ignoring it: Ctrl-C on the terminal
        # (sent to the whole process group) reaches only the supervisor, which turns it into
        # SIGTERM for the workers, also for a worker still importing.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            proc.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        self._procs[index] = proc
        log.info("worker started", extra={"worker": index, "pid": proc.pid})

    def _forget(self, index: int, directory: str) -> None:
        """A worker is dead: drop its metrics files, its stream slots and, if it died holding
        it, the slot lock (held for microseconds by a live worker)."""
        proc = self._procs[index]
        metrics.forget_process(proc.pid, directory)
        self._counts[index] = 0  # its streams died with it
        if not self._slot_lock.acquire(timeout=_DEAD_HOLDER_S):
            log.error("a dead worker held the stream slot lock; freeing it", extra={"worker": index})
        self._slot_lock.release()

    def _live_pids(self) -> dict[int, int]:
        """Worker index -> pid, for /metrics. Runs in the metrics server's thread, so it only reads:
        a worker that died meanwhile has no /proc entry left and simply reports nothing."""
        return {index: proc.pid for index, proc in enumerate(list(self._procs)) if proc is not None and proc.pid}

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
        try:
            reserved = _reserve_port(self.settings.host, self.settings.port)
        except OSError as err:
            log.error("cannot bind the gRPC port", extra={"host": self.settings.host, "port": self.settings.port,
                                                          "error": str(err)})
            return 1
        directory = os.environ.get(_MULTIPROC_ENV)
        own_dir = directory is None
        if own_dir:
            directory = os.environ[_MULTIPROC_ENV] = tempfile.mkdtemp(prefix="stt-metrics-")
        else:
            os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, "*.db")):  # counters of an earlier run must not add up
            os.unlink(stale)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        http = None
        status = 1
        try:
            port = reserved.getsockname()[1]
            worker_settings = self.settings.model_copy(update={"port": port, "workers": 1})
            own = metrics.SupervisorMetrics(lambda: sum(self._serving), lambda: self._restarted, self._live_pids)
            try:
                http = metrics.serve_multiprocess_metrics(self.settings.metrics_port, self.settings.host, directory, own)
            except OSError as err:  # before any worker starts: nothing to stop
                log.error("cannot start: %s", err.strerror or err)
                return 1
            log.info("supervisor started", extra={"port": port, "metrics_port": http.server_port,
                                                  "workers": self.settings.workers})
            try:
                for index in range(self.settings.workers):
                    if not self._stopping:
                        self._start(index, worker_settings)
                status = self._watch(worker_settings, directory)
            finally:  # also after an error in the supervisor itself: no worker outlives it
                status = self._stop(directory) or status
            return status
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
            for index in range(len(self._procs)):
                if self._serving_flags[index] and not serving[index]:
                    serving[index] = True
                    log.info("worker serving", extra={"worker": index, "pid": self._procs[index].pid})
                    if all(serving):
                        log.info("all workers serving", extra={"workers": len(self._procs)})
            for index, proc in enumerate(self._procs):
                if proc is None or proc.is_alive() or self._stopping:
                    continue
                self._forget(index, directory)
                if not self._serving_flags[index]:
                    log.error("worker failed to start", extra={"worker": index, "exit_code": proc.exitcode})
                    return _exit_status(proc.exitcode) or 1
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
        """SIGTERM every worker (each drains for the grace period), wait, kill stragglers.

        Returns 0 when every worker drained and exited cleanly, else 1."""
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
                status = 1  # its streams were cut short
            metrics.forget_process(proc.pid, directory)
            status = status or _exit_status(proc.exitcode)
        log.info("workers stopped", extra={"exit_code": status})
        return status


def _exit_status(exitcode: int | None) -> int:
    """A worker's exit code as the server's status: killed by a signal (negative) -> 1."""
    if not exitcode:
        return 0
    return exitcode if exitcode > 0 else 1
