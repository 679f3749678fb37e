"""Cross-stream micro-batching of ONNX Runtime calls.

Streams submit single requests (batch axis of size >= 1, e.g. a beam) and await their
rows. Whenever an inference thread is free, everything queued by then (after an optional
bounded wait) is stacked along the batch axes, requests of equal shapes together, and run
as one call in the thread pool. Under light load a request runs at once; under heavy load
requests pile up while the threads are busy and go out in large batches. ONNX Runtime
never runs on the event loop.

The batcher is driven by loop callbacks, not a task and a queue: a request costs one list
append, a batch one scheduled callback and one wake-up from its thread. At tens of streams
each request's own task switches were a measurable share of the event loop.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from service import metrics

Arrays = dict[str, np.ndarray]


@dataclass
class _Request:
    inputs: Arrays
    rows: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, name: str, run: Callable[[Arrays], Arrays], batch_axes: dict[str, int],
                 executor: Executor, threads: int, max_batch: int = 64, max_wait_s: float = 0.0,
                 batch_size_metric=None) -> None:
        self.name = name
        self._batch_size_metric = batch_size_metric
        self._run = run
        self._axes = batch_axes
        self._executor = executor
        self._free = threads  # inference threads not running a batch of ours
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._pending: deque[_Request] = deque()
        self._pending_rows = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatch_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._running: set[asyncio.Future] = set()  # batches in the thread pool

    def start(self) -> None:
        """Batch from now on (call on the serving event loop)."""
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Stop batching: queued requests are cancelled, running batches finish."""
        if self._dispatch_handle is not None:
            self._dispatch_handle.cancel()
            self._dispatch_handle = None
        pending, self._pending, self._pending_rows = self._pending, deque(), 0
        for req in pending:
            req.future.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._loop = None

    async def submit(self, inputs: Arrays) -> Arrays:
        """One stream's request -> its rows of the outputs."""
        loop = self._loop
        if loop is None:  # not started: run alone (offline tools, tests)
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, inputs)
        rows = next(v.shape[self._axes[k]] for k, v in inputs.items() if k in self._axes)
        future = loop.create_future()
        self._pending.append(_Request(inputs, rows, future))
        self._pending_rows += rows
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Dispatch soon if a thread is free: on the next loop pass, so that every stream that
        runs in this pass joins the batch, or after the bounded wait unless the batch is full."""
        if not self._free or not self._pending:
            return
        full = self._pending_rows >= self._max_batch
        if self._dispatch_handle is not None:
            if not full or not isinstance(self._dispatch_handle, asyncio.TimerHandle):
                return
            self._dispatch_handle.cancel()  # the bounded wait ends early: the batch is full
        if self._max_wait_s > 0 and not full:
            self._dispatch_handle = loop.call_later(self._max_wait_s, self._dispatch)
        else:
            self._dispatch_handle = loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_handle = None
        loop = self._loop
        while loop is not None and self._free and self._pending:
            batch, rows = [], 0
            while self._pending and (not batch or rows + self._pending[0].rows <= self._max_batch):
                req = self._pending.popleft()
                self._pending_rows -= req.rows
                if not req.future.cancelled():
                    batch.append(req)
                    rows += req.rows
            if not batch:
                continue
            groups: dict[tuple, list[_Request]] = defaultdict(list)
            for req in batch:
                groups[self._signature(req.inputs)].append(req)
            try:
                stacked = [self._stack([r.inputs for r in reqs]) for reqs in groups.values()]
            except Exception as exc:  # inputs that do not stack fail their requests, never the batcher
                self._fail(batch, exc)
                continue
            if self._batch_size_metric is not None:
                for reqs in groups.values():
                    self._batch_size_metric.observe(sum(r.rows for r in reqs))
            self._free -= 1
            done = loop.run_in_executor(self._executor, self._run_groups, stacked)
            self._running.add(done)
            done.add_done_callback(lambda fut, reqs=list(groups.values()): self._finish(reqs, fut))

    def _run_groups(self, stacked: list[Arrays]) -> list[Arrays | Exception]:
        """In an inference thread: one call per group of equal shapes; a failed call fails its group only."""
        results: list[Arrays | Exception] = []
        for inputs in stacked:
            started = time.perf_counter()
            try:
                results.append(self._run(inputs))
            except Exception as exc:
                results.append(exc)
            metrics.INFERENCE_SECONDS.labels(graph=self.name).observe(time.perf_counter() - started)
        return results

    def _finish(self, groups: list[list[_Request]], done: asyncio.Future) -> None:
        self._running.discard(done)
        self._free += 1
        if done.cancelled() or done.exception() is not None:  # e.g. the pool was shut down
            exc = asyncio.CancelledError() if done.cancelled() else done.exception()
            for reqs in groups:
                self._fail(reqs, exc)
        else:
            for reqs, outputs in zip(groups, done.result()):
                if isinstance(outputs, Exception):
                    self._fail(reqs, outputs)
                else:
                    self._scatter(reqs, outputs)
        if self._loop is not None:
            self._schedule(self._loop)  # what queued while the thread was busy goes out now

    @staticmethod
    def _fail(reqs: list[_Request], exc: BaseException) -> None:
        for r in reqs:
            if not r.future.done():
                r.future.set_exception(exc)

    def _signature(self, inputs: Arrays) -> tuple:
        return tuple((k, v.dtype.str, tuple(d for i, d in enumerate(v.shape) if i != self._axes.get(k, -1)))
                     for k, v in sorted(inputs.items()))

    def _stack(self, items: list[Arrays]) -> Arrays:
        if len(items) == 1:
            return items[0]
        return {k: np.concatenate([it[k] for it in items], axis=self._axes[k]) for k in items[0]}

    def _scatter(self, reqs: list[_Request], outputs: Arrays) -> None:
        if len(reqs) == 1:
            if not reqs[0].future.done():
                reqs[0].future.set_result(outputs)
            return
        start = 0
        for r in reqs:
            rows = {k: _rows(v, self._axes[k], start, start + r.rows) for k, v in outputs.items()}
            start += r.rows
            if not r.future.done():
                r.future.set_result(rows)


def _rows(array: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """array[start:stop] along `axis`, copied: a request must not keep the whole batch's output alive."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    return array[tuple(index)].copy()
