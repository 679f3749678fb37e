"""The grpc.aio server: Speech (both service names), health, reflection, metrics, TLS, auth, drain.

Lifecycle (``service/__main__.py`` drives it):

1. ``start()`` binds the port with health NOT_SERVING and serves /metrics;
   Speech calls get UNAVAILABLE while the model loads.
2. ``set_engine(recognizer)`` once the model is loaded: health SERVING.
3. ``drain(grace)`` on SIGTERM: health NOT_SERVING, new streams refused,
   in-flight streams get ``grace`` seconds to finish, then are cancelled.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from http.server import ThreadingHTTPServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import metrics
from service.config import Settings
from service.errors import ErrorMappingInterceptor
from service.limits import Admission, SlotPool
from service.servicer import GOOGLE_SERVICE_NAME, SERVICE_NAME, SpeechServicer, StreamLimits, method_handlers
from service.session import RecognitionEngine

log = logging.getLogger(__name__)

_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_SPEECH_PREFIXES = (f"/{SERVICE_NAME}/", f"/{GOOGLE_SERVICE_NAME}/")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _deny_unary(request, context: grpc.aio.ServicerContext):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid 'authorization: Bearer <token>' metadata")


async def _deny_stream(request_or_iterator, context: grpc.aio.ServicerContext):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid 'authorization: Bearer <token>' metadata")
    yield  # makes this an async generator, the shape stream handlers have


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every call but health checks.

    The comparison is constant-time (hmac.compare_digest). Health stays open
    so that load balancers and kubelet probes need no secret.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_HEALTH_PREFIX):
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        given = next((v for k, v in metadata if k == "authorization"), "")
        given = given.encode() if isinstance(given, str) else given
        if hmac.compare_digest(given, self._expected):
            return handler
        if handler_call_details.method.startswith(_SPEECH_PREFIXES):
            metrics.REJECTED_STREAMS_TOTAL.labels(reason="unauthenticated").inc()
        return _denying_handler(handler)


def _denying_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with UNAUTHENTICATED."""
    ser = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_deny_unary, *ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_deny_stream, *ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_deny_unary, *ser)
    return grpc.stream_stream_rpc_method_handler(_deny_stream, *ser)


def _server_credentials(settings: Settings) -> grpc.ServerCredentials:
    key = settings.tls_key_file.read_bytes()
    cert = settings.tls_cert_file.read_bytes()
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class SttServer:
    """One process's gRPC server and metrics endpoint.

    As one of several worker processes (service/workers.py): ``slots`` shares the stream
    limit with the other workers, the port is shared (SO_REUSEPORT) and the supervisor
    serves /metrics (``serve_metrics=False``).
    """

    def __init__(self, settings: Settings, slots: SlotPool | None = None, serve_metrics: bool = True) -> None:
        self.settings = settings
        self.admission = Admission(settings.max_streams, slots)
        self._shared_port = slots is not None
        self._serve_metrics = serve_metrics
        limits = StreamLimits(settings.max_stream_seconds, settings.idle_timeout_seconds)
        self.servicer = SpeechServicer(self.admission, limits)
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._metrics_http: ThreadingHTTPServer | None = None
        self._loop_watch: asyncio.Task | None = None  # samples stt_event_loop_lag_seconds
        self.port: int | None = None
        self.metrics_port: int | None = None

    def _build(self) -> grpc.aio.Server:
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.settings.auth_token is not None:
            interceptors.append(BearerTokenInterceptor(self.settings.auth_token.get_secret_value()))
        interceptors.append(ErrorMappingInterceptor(_SPEECH_PREFIXES))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", self.settings.max_message_bytes),
                # Alone, a second server on the port must fail to bind; workers share it.
                ("grpc.so_reuseport", 1 if self._shared_port else 0),
            ],
        )
        handlers = method_handlers(self.servicer)
        for name in (SERVICE_NAME, GOOGLE_SERVICE_NAME):
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
        )
        return server

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING until ``set_engine``); returns the gRPC port."""
        for name in ("", SERVICE_NAME, GOOGLE_SERVICE_NAME):
            await self.health.set(name, _NOT_SERVING)
        self._server = self._build()
        address = f"{self.settings.host}:{self.settings.port}"
        try:  # grpcio raises RuntimeError when the address is taken (older releases returned 0)
            if self.settings.tls_enabled:
                self.port = self._server.add_secure_port(address, _server_credentials(self.settings))
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot bind the gRPC port {address}: choose a free one with STT_PORT or --port")
        await self._server.start()
        self._loop_watch = asyncio.get_running_loop().create_task(metrics.watch_event_loop(), name="event-loop-lag")
        if self._serve_metrics:
            try:
                self._metrics_http = metrics.serve_metrics(self.settings.metrics_port, self.settings.host)
            except OSError:
                await self._server.stop(0)  # no half-started server: the caller exits
                self._stop_loop_watch()
                raise
            self.metrics_port = self._metrics_http.server_port
        log.info(
            "server started",
            extra={"port": self.port, "metrics_port": self.metrics_port, "tls": self.settings.tls_enabled,
                   "mtls": self.settings.tls_client_ca_file is not None, "auth": self.settings.auth_token is not None},
        )
        return self.port

    async def set_engine(self, engine: RecognitionEngine) -> None:
        """The model is loaded: accept streams, report SERVING."""
        self.servicer.set_engine(engine)
        self.admission.ready = True
        for name in ("", SERVICE_NAME, GOOGLE_SERVICE_NAME):
            await self.health.set(name, _SERVING)
        log.info("serving")

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop taking streams, let in-flight ones finish for ``grace_s``, then stop."""
        grace_s = self.settings.drain_grace_seconds if grace_s is None else grace_s
        self.admission.draining = True
        await self.health.enter_graceful_shutdown()  # every service NOT_SERVING
        log.info("draining", extra={"active_streams": self.admission.active, "grace_s": grace_s})
        if self._server is not None:
            await self._server.stop(grace_s)
        self._stop_loop_watch()
        self._stop_metrics()
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    def _stop_loop_watch(self) -> None:
        if self._loop_watch is not None:
            self._loop_watch.cancel()
            self._loop_watch = None

    def _stop_metrics(self) -> None:
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
