"""Domain errors and the one interceptor that maps them to gRPC status codes.

Code below the servicer raises these plain exceptions and never touches gRPC.
``ErrorMappingInterceptor`` wraps the Speech handlers: a domain error becomes
its status code with the error's message (written for the client: say what
was wrong and how to fix it); any other exception becomes INTERNAL with a
generic message (details go to the log only). It also records how each
recognition RPC ended (``stt_streams_total{outcome,code}``): ok, error, cancelled (by the
client), or rejected (refused before it started: capacity, loading, draining; these are
also counted by reason in ``stt_rejected_streams_total``). The error-rate alert leaves the
rejected ones out, so a full or restarting server does not page as a broken one.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from service import metrics

log = logging.getLogger(__name__)


class SttError(Exception):
    """Base of every error the client should see with a specific status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    outcome: str = "error"  # stt_streams_total's outcome label

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidConfig(SttError):
    """The request's configuration cannot be served (INVALID_ARGUMENT)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidAudio(SttError):
    """The audio bytes do not decode as the declared encoding (INVALID_ARGUMENT)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class StreamTooLong(SttError):
    """The stream went past the maximum duration (OUT_OF_RANGE)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class AudioTimeout(SttError):
    """The client stopped sending audio for longer than the idle timeout (OUT_OF_RANGE)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class AtCapacity(SttError):
    """The server already runs its maximum number of streams (RESOURCE_EXHAUSTED)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    outcome = "rejected"


class NotReady(SttError):
    """The model is still loading or the server is draining (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE
    outcome = "rejected"


def _outcome(code: grpc.StatusCode) -> str:
    if code == grpc.StatusCode.OK:
        return "ok"
    if code == grpc.StatusCode.CANCELLED:
        return "cancelled"
    return "error"


def _record(code: grpc.StatusCode, outcome: str | None = None) -> None:
    metrics.STREAMS_TOTAL.labels(outcome=outcome or _outcome(code), code=code.name).inc()


def _drop_frames(err: BaseException) -> None:
    """Forget the frames of an error about to become a status.

    ``context.abort`` raises AbortError with ``err`` as its context, and grpc
    keeps that AbortError in the call's state after the RPC ends; through
    ``err.__traceback__`` it would keep the handler frames, and so the stream's
    session, reachable. Only the code and message are needed.
    """
    err.__traceback__ = None


async def _map_unary(behavior: Callable, request: Any, context: grpc.aio.ServicerContext) -> Any:
    try:
        response = await behavior(request, context)
    except SttError as err:
        _record(err.code, err.outcome)
        _drop_frames(err)
        await context.abort(err.code, err.message)
    except asyncio.CancelledError:
        _record(grpc.StatusCode.CANCELLED)
        raise
    except Exception as err:  # noqa: BLE001 - last line of defence, logged in full
        if isinstance(err, grpc.aio.AbortError):
            raise
        log.exception("unexpected error in %s", getattr(behavior, "__name__", behavior))
        _record(grpc.StatusCode.INTERNAL)
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
    _record(grpc.StatusCode.OK)
    return response


async def _map_stream(
    behavior: Callable, request_iterator: AsyncIterator, context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    # aclosing: when the client cancels while we wait to send, the inner
    # generator (and the session it holds) is closed now, not at GC time.
    try:
        async with contextlib.aclosing(behavior(request_iterator, context)) as responses:
            async for response in responses:
                yield response
    except SttError as err:
        _record(err.code, err.outcome)
        _drop_frames(err)
        await context.abort(err.code, err.message)
    except (asyncio.CancelledError, GeneratorExit):
        # cancelled by the client, or by the server with a code set (limits.WriteWatchdog)
        code = context.code()
        _record(code if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK else grpc.StatusCode.CANCELLED)
        raise
    except Exception as err:  # noqa: BLE001 - last line of defence, logged in full
        if isinstance(err, grpc.aio.AbortError):
            raise
        log.exception("unexpected error in %s", getattr(behavior, "__name__", behavior))
        _record(grpc.StatusCode.INTERNAL)
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
    else:
        _record(grpc.StatusCode.OK)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps ``SttError`` to status codes for the methods under ``service_prefixes``."""

    def __init__(self, service_prefixes: tuple[str, ...]) -> None:
        self._prefixes = service_prefixes

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self._prefixes):
            return handler
        # functools.partial keeps the wrappers recognisable as coroutine /
        # async-generator functions, which is how grpc.aio picks the handler style.
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                functools.partial(_map_unary, handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                functools.partial(_map_stream, handler.stream_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler
