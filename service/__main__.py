"""stt-server: settings -> recognizer -> serve.

    stt-server --port 50051 --metrics-port 9090        (or python -m service)

Every flag has an STT_* environment variable of the same name (service/config.py).
The gRPC port answers health checks (NOT_SERVING) while the model loads;
SIGTERM or SIGINT drains: in-flight streams get STT_DRAIN_GRACE_SECONDS.
With STT_WORKERS > 1 a supervisor runs that many such processes on the port (service/workers.py).
Exit status: 0 after a drain, 1 when the model fails to load, 2 on bad settings.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import TYPE_CHECKING

from service.config import Settings, SettingsError, load_settings
from service.logs import configure_logging
from service.server import SttServer

if TYPE_CHECKING:
    from service.workers import WorkerContext

log = logging.getLogger("service")


def load_recognizer(settings: Settings):
    """Build the shared Recognizer (blocking: ONNX sessions, tokenizer)."""
    from service.recognizer import Recognizer  # imported here: onnxruntime loads only when serving

    if not settings.model_dir.is_dir():
        raise FileNotFoundError(
            f"no model directory at {settings.model_dir}: set STT_MODEL_DIR (or --model-dir) to a folder "
            "exported by model_export, or install a package that bundles service/models/default"
        )
    return Recognizer.load(
        settings.model_dir,
        precision=settings.precision,
        inference_threads=settings.inference_threads,
        batch_max_size=settings.batch_max_size,
        batch_max_wait_ms=settings.batch_max_wait_ms,
        ctc_weight=settings.ctc_weight,
        lm_weight=settings.lm_weight,
        beam_size=settings.beam_size,
        beam_threshold=settings.beam_threshold,
    )


async def _first(*aws: asyncio.Future) -> None:
    await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)


async def serve(settings: Settings, worker: WorkerContext | None = None) -> int:
    """Run until SIGTERM/SIGINT (a worker: SIGTERM from its supervisor); returns the exit status.

    Alone, the server binds first and answers health checks with NOT_SERVING while the
    model loads. A worker binds only once its model is loaded: on a shared port the kernel
    would hand it new connections that it could only refuse, while the other workers serve.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM,) if worker else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = SttServer(settings, worker.slots if worker else None, serve_metrics=worker is None)
    if worker is None and not await _start(server):
        return 1
    started = time.monotonic()
    loading = loop.run_in_executor(None, load_recognizer, settings)
    stopping = asyncio.ensure_future(stop.wait())
    await _first(loading, stopping)
    if not loading.done():  # signalled while loading
        await server.drain(0)
        return 0
    try:
        recognizer = loading.result()
        await recognizer.start()
    except Exception:  # noqa: BLE001 - reported, then a clean non-zero exit
        log.exception("model failed to load", extra={"model_dir": str(settings.model_dir)})
        await server.drain(0)
        return 1
    log.info("model loaded", extra={"model_dir": str(settings.model_dir), "load_s": round(time.monotonic() - started, 3)})
    if worker is not None and not await _start(server):
        await recognizer.close()
        return 1
    await server.set_engine(recognizer)
    if worker is not None:
        worker.announce_serving()
    await stopping
    try:
        await server.drain()
    finally:
        await recognizer.close()
    return 0


async def _start(server: SttServer) -> bool:
    """Bind and start; a port that cannot be bound is an operator error: one clear line, no traceback."""
    try:
        await server.start()
    except OSError as err:
        log.error("cannot start: %s", err.strerror or err)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as err:
        print(f"stt-server: invalid settings:\n{err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        from service.workers import Supervisor

        return Supervisor(settings).run()
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
