"""Micro-batching: stacked calls give each stream exactly the rows it would get alone."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.pipeline.batcher import MicroBatcher
from service.pipeline.decoder import DecoderGraph
from service.pipeline.model_info import ModelInfo, create_session
from service.recognizer import DECODER_BATCH_AXES


def _random_step_inputs(info: ModelInfo, rng, rows: int) -> dict:
    w = info.window_size
    return {"token": rng.integers(2, len(info.vocab), size=rows).astype(np.int64),
            "h": rng.normal(size=(rows, info.dec_hidden)).astype(np.float32),
            "c": rng.normal(size=(rows, info.dec_hidden)).astype(np.float32),
            "att_prev": np.full((rows, w), 1.0 / w, np.float32),
            "enc": rng.normal(size=(rows, w, info.enc_dim)).astype(np.float32),
            "keys": rng.normal(size=(rows, w, info.att_dim)).astype(np.float32),
            "mask": np.zeros((rows, w), np.float32)}


def test_batched_rows_match_single_calls(tiny_model_dir):
    sess = create_session(tiny_model_dir / "decoder.onnx")
    info = ModelInfo.from_session(sess)
    graph = DecoderGraph(sess)
    rng = np.random.default_rng(0)
    requests = [_random_step_inputs(info, rng, rows) for rows in (1, 3, 1, 2, 1, 1, 4, 1)]
    expected = [graph.run(r) for r in requests]
    calls = []

    def run(inputs):
        calls.append(len(inputs["token"]))
        return graph.run(inputs)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher("decoder", run, DECODER_BATCH_AXES, pool, threads=1, max_wait_s=0.05)
            batcher.start()
            try:
                return await asyncio.gather(*(batcher.submit(r) for r in requests))
            finally:
                await batcher.close()

    got = asyncio.run(main())
    assert max(calls) > 1, "nothing was batched"
    assert sum(calls) == sum(len(r["token"]) for r in requests)
    for g, e in zip(got, expected):
        for k in e:
            np.testing.assert_allclose(g[k], e[k], atol=1e-5, rtol=1e-5)


def test_failed_call_fails_only_its_requests(tiny_model_dir):
    def run(inputs):
        raise RuntimeError("boom")

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher("decoder", run, DECODER_BATCH_AXES, pool, threads=1)
            batcher.start()
            with pytest.raises(RuntimeError, match="boom"):
                await batcher.submit({"token": np.zeros(1, np.int64)})
            # the worker survives and keeps serving
            with pytest.raises(RuntimeError, match="boom"):
                await batcher.submit({"token": np.zeros(1, np.int64)})
            await batcher.close()

    asyncio.run(main())


def test_close_cancels_queued_requests_and_lets_the_running_batch_finish():
    """A request waiting for a busy thread must not hang forever when the batcher stops."""
    import threading

    release = threading.Event()

    def run(inputs):
        release.wait(10)
        return {"logp": inputs["token"].astype(np.float32)}

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher("decoder", run, DECODER_BATCH_AXES, pool, threads=1)
            batcher.start()
            running = asyncio.ensure_future(batcher.submit({"token": np.ones(1, np.int64)}))
            await asyncio.sleep(0.05)  # dispatched: the only thread is now busy
            queued = asyncio.ensure_future(batcher.submit({"token": np.full(1, 2, np.int64)}))
            await asyncio.sleep(0.05)
            closing = asyncio.ensure_future(batcher.close())
            await asyncio.sleep(0.05)
            assert queued.cancelled() and not closing.done()  # close waits for the running batch
            release.set()
            await closing
            return await running

    out = asyncio.run(main())
    np.testing.assert_array_equal(out["logp"], [1.0])
