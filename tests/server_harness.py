"""A real grpc.aio SttServer on a loopback port, run in a background thread, and client helpers."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from service.proto.stt.v1 import stt_pb2, stt_pb2_grpc
from service.server import SttServer
from tests.speech_audio import to_linear16, utterances

RATE = 16000
CHUNK_BYTES = 3200  # 100 ms of 16 kHz LINEAR16
# Servers over the tiny random model (tests/conftest.py: 30 tokens, near-uniform scores) decode at
# beam 4, not the default 8: at beam 8 an end is among the best candidates of almost every step, so
# every step waits for the segment's end (service/pipeline/decoder.py, "Ending") and no interim
# result would arrive before it.
TINY_MODEL_BEAM = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "log_format": "text"}
    values.update(overrides)
    return Settings(**values)


class RunningServer:
    """SttServer in its own event loop thread. ``engine=None`` leaves it loading (NOT_SERVING)."""

    def __init__(self, settings: Settings, engine: Any | None) -> None:
        self.settings = settings
        self.engine = engine
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stt-test-server", daemon=True)
        self._thread.start()
        self.server = SttServer(settings)
        self.port = self.run(self.server.start())
        self.metrics_port = self.server.metrics_port
        if engine is not None:
            self.run(engine.start())  # the real Recognizer starts its batchers on the serving loop
            self.run(self.server.set_engine(engine))
        self.address = f"127.0.0.1:{self.port}"

    def run(self, coro, timeout: float = 30.0):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self) -> None:
        if self._loop.is_running():
            self.run(self.server.drain(0))
            if self.engine is not None:
                self.run(self.engine.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def channel(self, **kwargs: Any) -> grpc.Channel:
        return grpc.insecure_channel(self.address, **kwargs)

    def stub(self, channel: grpc.Channel | None = None) -> stt_pb2_grpc.SpeechStub:
        return stt_pb2_grpc.SpeechStub(channel or self.channel())

    def scrape(self) -> list:
        """One scrape of /metrics over HTTP: its samples. Compare samples of one histogram
        within one scrape; two scrapes straddle observations made between them."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def metric(self, name: str, labels: dict[str, str] | None = None, samples: list | None = None) -> float:
        """One sample's value (0.0 if absent), from `samples` (see `scrape`) or a fresh scrape."""
        for sample in self.scrape() if samples is None else samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
        return 0.0

    def wait_metric(self, name: str, value: float, timeout: float = 5.0, labels: dict[str, str] | None = None) -> float:
        deadline = time.monotonic() + timeout
        current = self.metric(name, labels)
        while current != value and time.monotonic() < deadline:
            time.sleep(0.05)
            current = self.metric(name, labels)
        return current


def speech_audio() -> np.ndarray:
    return utterances(["hello world", "how are you today"], pause_s=1.2, rate_hz=RATE, lead_s=1.0)


def streaming_config(**kwargs: Any) -> stt_pb2.StreamingRecognitionConfig:
    config = stt_pb2.RecognitionConfig(
        encoding=stt_pb2.RecognitionConfig.LINEAR16, sample_rate_hertz=RATE, language_code="en-US"
    )
    for key, value in kwargs.pop("config", {}).items():
        if isinstance(value, dict):
            getattr(config, key).CopyFrom(type(getattr(config, key))(**value))
        else:
            setattr(config, key, value)
    return stt_pb2.StreamingRecognitionConfig(config=config, **kwargs)


def stream_requests(
    audio: np.ndarray | bytes,
    config: stt_pb2.StreamingRecognitionConfig | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    pace_s: float = 0.0,
    stall: threading.Event | None = None,
) -> Iterator[stt_pb2.StreamingRecognizeRequest]:
    """Config, then audio in chunks (optionally paced); waits on ``stall`` before half-closing."""
    yield stt_pb2.StreamingRecognizeRequest(streaming_config=config or streaming_config())
    data = audio if isinstance(audio, bytes) else to_linear16(audio)
    for pos in range(0, len(data), chunk_bytes):
        yield stt_pb2.StreamingRecognizeRequest(audio_content=data[pos : pos + chunk_bytes])
        if pace_s:
            time.sleep(pace_s)
    if stall is not None:
        stall.wait(30)


def finals_or_error(
    channel: grpc.Channel, audio: np.ndarray, pace_s: float, stall: threading.Event | None = None
) -> list[str] | grpc.RpcError:
    """One paced StreamingRecognize on ``channel`` (held open until ``stall`` is set): its
    final texts, or the error that ended it."""
    try:
        return final_texts(stt_pb2_grpc.SpeechStub(channel).StreamingRecognize(
            stream_requests(audio, pace_s=pace_s, stall=stall), timeout=60))
    except grpc.RpcError as err:
        return err


def final_texts(responses) -> list[str]:
    return [r.alternatives[0].transcript for resp in responses for r in resp.results if r.is_final]


class BackgroundStream:
    """A well-behaved stream running in a thread while a test breaks another one."""

    def __init__(self, server: RunningServer, audio: np.ndarray, pace_s: float = 0.03) -> None:
        self.responses: list = []
        self.error: Exception | None = None
        self._channel = server.channel()
        self._stub = server.stub(self._channel)
        self._audio = audio
        self._pace = pace_s
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _requests(self) -> Iterator[stt_pb2.StreamingRecognizeRequest]:
        for i, request in enumerate(stream_requests(self._audio, pace_s=self._pace)):
            yield request
            if i == 1:  # config and first audio sent: the stream is running
                self._started.set()

    def _run(self) -> None:
        try:
            for response in self._stub.StreamingRecognize(self._requests()):
                self.responses.append(response)
        except Exception as err:  # noqa: BLE001 - reported by finish()
            self.error = err
        finally:
            self._started.set()

    def finish(self) -> list[str]:
        """Join and return the final transcripts; raises if the stream failed."""
        self._thread.join(60)
        self._channel.close()
        if self.error is not None:
            raise self.error
        return final_texts(self.responses)
