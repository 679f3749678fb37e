"""Cross-stream micro-batching of ONNX Runtime calls.

Streams submit single requests (batch axis of size >= 1, e.g. a beam) and await their
rows. A worker takes a free inference thread first and then everything queued by
then (plus an optional bounded wait), stacks requests of equal shapes along their
batch axes and runs one call in the thread pool. Under light load a request runs at
once; under heavy load requests pile up while the threads are busy and go out in
large batches. ONNX Runtime never runs on the event loop.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
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
        self._threads = asyncio.Semaphore(threads)
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        await asyncio.gather(*self._running, return_exceptions=True)

    async def submit(self, inputs: Arrays) -> Arrays:
        """One stream's request -> its rows of the outputs."""
        if self._worker is None:  # not started: run alone (offline tools, tests)
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, inputs)
        rows = next(v.shape[self._axes[k]] for k, v in inputs.items() if k in self._axes)
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(inputs, rows, future))
        return await future

    async def _collect(self) -> None:
        while True:
            first = await self._queue.get()
            await self._threads.acquire()  # requests keep queuing while all threads are busy
            batch, rows = [first], first.rows
            deadline = time.monotonic() + self._max_wait_s
            while rows < self._max_batch:
                if self._queue.empty():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        req = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    req = self._queue.get_nowait()
                batch.append(req)
                rows += req.rows
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Request]) -> None:
        try:
            groups: dict[tuple, list[_Request]] = defaultdict(list)
            for req in batch:
                groups[self._signature(req.inputs)].append(req)
            loop = asyncio.get_running_loop()
            for reqs in groups.values():
                reqs = [r for r in reqs if not r.future.cancelled()]
                if not reqs:
                    continue
                try:
                    stacked = self._stack([r.inputs for r in reqs])
                    if self._batch_size_metric is not None:
                        self._batch_size_metric.observe(sum(r.rows for r in reqs))
                    started = time.perf_counter()
                    outputs = await loop.run_in_executor(self._executor, self._run, stacked)
                    metrics.INFERENCE_SECONDS.labels(graph=self.name).observe(time.perf_counter() - started)
                except Exception as exc:  # a failed call fails its requests, never the worker
                    for r in reqs:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    continue
                self._scatter(reqs, outputs)
        finally:
            self._threads.release()

    def _signature(self, inputs: Arrays) -> tuple:
        return tuple((k, v.dtype.str, tuple(d for i, d in enumerate(v.shape) if i != self._axes.get(k, -1)))
                     for k, v in sorted(inputs.items()))

    def _stack(self, items: list[Arrays]) -> Arrays:
        if len(items) == 1:
            return items[0]
        return {k: np.concatenate([it[k] for it in items], axis=self._axes[k]) for k in items[0]}

    def _scatter(self, reqs: list[_Request], outputs: Arrays) -> None:
        start = 0
        for r in reqs:
            rows = {k: np.take(v, np.arange(start, start + r.rows), axis=self._axes[k]) for k, v in outputs.items()}
            start += r.rows
            if not r.future.done():
                r.future.set_result(rows)
