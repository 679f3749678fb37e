"""The Speech servicer: protobuf <-> domain, nothing else.

Requests become a ``StreamConfig`` and audio bytes for a ``StreamSession``;
its ``StreamOutput``s become responses. Errors are domain exceptions mapped to
status codes by ``service.errors.ErrorMappingInterceptor``. The same handlers
serve ``stt.v1.Speech`` and ``google.cloud.speech.v1.Speech`` (field numbers
match, so the official Google client works against this server).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf import duration_pb2

from service.errors import InvalidConfig, NotReady
from service.limits import Admission, Slot, WriteWatchdog, read_requests
from service.pipeline.audio import AudioFormat, Encoding
from service.pipeline.vad import EndpointSettings
from service.proto.stt.v1 import stt_pb2
from service.session import RecognitionEngine, Result, StreamConfig, StreamOutput, StreamSession, Transcript

log = logging.getLogger(__name__)

SERVICE_NAME = "stt.v1.Speech"
GOOGLE_SERVICE_NAME = "google.cloud.speech.v1.Speech"

_AudioEncoding = stt_pb2.RecognitionConfig.AudioEncoding
_ENCODINGS = {
    _AudioEncoding.ENCODING_UNSPECIFIED: Encoding.ENCODING_UNSPECIFIED,
    _AudioEncoding.LINEAR16: Encoding.LINEAR16,
    _AudioEncoding.FLAC: Encoding.FLAC,
    _AudioEncoding.MULAW: Encoding.MULAW,
    _AudioEncoding.ALAW: Encoding.ALAW,
    _AudioEncoding.OGG_OPUS: Encoding.OGG_OPUS,
}
_SUPPORTED = "LINEAR16, MULAW, ALAW, FLAC, OGG_OPUS, or ENCODING_UNSPECIFIED with a WAV/FLAC file"
_EventType = stt_pb2.StreamingRecognizeResponse.SpeechEventType
_stream_ids = itertools.count(1)


@dataclass(frozen=True)
class StreamLimits:
    max_stream_seconds: float
    idle_timeout_seconds: float


def _duration(seconds: float) -> duration_pb2.Duration:
    nanos_total = int(round(max(0.0, seconds) * 1e9))
    return duration_pb2.Duration(seconds=nanos_total // 10**9, nanos=nanos_total % 10**9)


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


# --- proto -> domain ---------------------------------------------------------------------------


def _encoding(config: stt_pb2.RecognitionConfig) -> Encoding:
    encoding = _ENCODINGS.get(config.encoding)
    if encoding is None:
        name = _AudioEncoding.Name(config.encoding) if config.encoding in _AudioEncoding.values() else config.encoding
        raise InvalidConfig(f"encoding {name} is not supported; use {_SUPPORTED}")
    return encoding


def _endpointing(config: stt_pb2.RecognitionConfig) -> EndpointSettings:
    defaults, given = EndpointSettings(), config.endpointing
    return EndpointSettings(
        aggressiveness=given.vad_aggressiveness if given.HasField("vad_aggressiveness") else defaults.aggressiveness,
        padding_ms=given.speech_padding_ms if given.HasField("speech_padding_ms") else defaults.padding_ms,
        end_silence_ms=given.end_silence_ms if given.HasField("end_silence_ms") else defaults.end_silence_ms,
        max_segment_s=given.max_segment_seconds if given.HasField("max_segment_seconds") else defaults.max_segment_s,
    )


def _check_language(code: str) -> None:
    # The bundled model is English; an empty code means the default (en-US).
    if code and not code.lower().startswith("en"):
        raise InvalidConfig(f"language_code {code!r} is not supported; this server recognizes English (en-US)")


def stream_config(config: stt_pb2.RecognitionConfig, streaming: stt_pb2.StreamingRecognitionConfig | None = None) -> StreamConfig:
    """RecognitionConfig (+ streaming options) -> validated StreamConfig; raises InvalidConfig."""
    _check_language(config.language_code)
    streaming = streaming or stt_pb2.StreamingRecognitionConfig()
    timeouts = streaming.voice_activity_timeout
    result = StreamConfig(
        audio=AudioFormat(_encoding(config), config.sample_rate_hertz, config.audio_channel_count),
        separate_channels=config.enable_separate_recognition_per_channel,
        language_code=config.language_code or "en-US",
        max_alternatives=config.max_alternatives,
        interim_results=streaming.interim_results,
        single_utterance=streaming.single_utterance,
        voice_activity_events=streaming.enable_voice_activity_events,
        speech_start_timeout_s=_seconds(timeouts.speech_start_timeout) if timeouts.HasField("speech_start_timeout") else None,
        speech_end_timeout_s=_seconds(timeouts.speech_end_timeout) if timeouts.HasField("speech_end_timeout") else None,
        word_time_offsets=config.enable_word_time_offsets,
        word_confidence=config.enable_word_confidence,
        attention_alignment=config.enable_attention_alignment,
        beam_size=config.beam_size,
        endpointing=_endpointing(config),
    )
    result.validate()
    return result


# --- domain -> proto ---------------------------------------------------------------------------


def _alternative(transcript: Transcript) -> stt_pb2.SpeechRecognitionAlternative:
    alt = stt_pb2.SpeechRecognitionAlternative(transcript=transcript.text, confidence=transcript.confidence)
    for word in transcript.words:
        alt.words.add(
            start_time=_duration(word.start_s), end_time=_duration(word.end_s), word=word.word, confidence=word.confidence
        )
    if transcript.alignment is not None:
        a = transcript.alignment
        alignment = alt.attention_alignment
        alignment.tokens.extend(a.tokens)
        alignment.num_frames = int(a.weights.shape[1]) if a.weights.ndim == 2 else 0
        alignment.frame_shift.CopyFrom(_duration(a.frame_shift_s))
        alignment.offset.CopyFrom(_duration(a.offset_s))
        alignment.MergeFromString(_packed_floats(_WEIGHTS_FIELD, a.weights))
    return alt


_WEIGHTS_FIELD = stt_pb2.AttentionAlignment.DESCRIPTOR.fields_by_name["weights"].number


def _packed_floats(field_number: int, values: np.ndarray) -> bytes:
    """A packed repeated float field in protobuf wire format, from the array's bytes.

    Parsed with MergeFromString (in C) it is the same message as assigning the floats one by
    one, several times faster: a long segment's alignment is millions of floats, and this runs
    on the event loop (`bench.alignment_proto`, docs/BENCHMARKS.md).
    """
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return _varint((field_number << 3) | 2) + _varint(len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _streaming_result(result: Result, language: str) -> stt_pb2.StreamingRecognitionResult:
    return stt_pb2.StreamingRecognitionResult(
        alternatives=[_alternative(t) for t in result.alternatives],
        is_final=result.is_final,
        stability=result.stability,
        result_end_time=_duration(result.end_s),
        channel_tag=result.channel_tag,
        language_code=language,
    )


def streaming_response(output: StreamOutput, language: str) -> stt_pb2.StreamingRecognizeResponse:
    response = stt_pb2.StreamingRecognizeResponse(results=[_streaming_result(r, language) for r in output.results])
    if output.event is not None:
        response.speech_event_type = output.event.value
        response.speech_event_time.CopyFrom(_duration(output.event_time_s))
    return response


def recognize_response(outputs: list[StreamOutput], language: str, audio_seconds: float) -> stt_pb2.RecognizeResponse:
    results = [
        stt_pb2.SpeechRecognitionResult(
            alternatives=[_alternative(t) for t in r.alternatives],
            channel_tag=r.channel_tag,
            result_end_time=_duration(r.end_s),
            language_code=language,
        )
        for o in outputs
        for r in o.results
        if r.is_final
    ]
    # Billed like Google: whole seconds, rounded up.
    return stt_pb2.RecognizeResponse(results=results, total_billed_time=_duration(math.ceil(audio_seconds)))


# --- the servicer ------------------------------------------------------------------------------


class SpeechServicer:
    """Recognize and StreamingRecognize over the shared engine."""

    def __init__(self, admission: Admission, limits: StreamLimits, engine: RecognitionEngine | None = None) -> None:
        self._admission = admission
        self._limits = limits
        self._engine = engine

    def set_engine(self, engine: RecognitionEngine) -> None:
        self._engine = engine

    def _new_session(self, config: StreamConfig, slot: Slot) -> StreamSession:
        if self._engine is None:
            raise NotReady("the model is still loading; retry shortly")
        stream_id = f"s{next(_stream_ids)}"
        return StreamSession(self._engine, config, stream_id, max_audio_seconds=self._limits.max_stream_seconds,
                             reserve_streams=slot.widen)

    async def Recognize(self, request: stt_pb2.RecognizeRequest, context: grpc.aio.ServicerContext) -> stt_pb2.RecognizeResponse:
        with self._admission.slot() as slot:
            config = stream_config(request.config)
            if request.audio.WhichOneof("audio_source") == "uri":
                raise InvalidConfig("audio.uri is not supported (no outbound fetches); send the bytes in audio.content")
            session = self._new_session(config, slot)
            try:
                outputs = await session.accept_audio(request.audio.content)
                outputs += await session.finish()
                return recognize_response(outputs, config.language_code, session.audio_seconds)
            finally:
                session.close()

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[stt_pb2.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:
        with self._admission.slot() as slot:
            limits = self._limits
            reader = read_requests(request_iterator, limits.idle_timeout_seconds, limits.max_stream_seconds)
            async with contextlib.aclosing(reader) as requests:
                session = self._new_session(await self._first_config(requests), slot)
                started = time.monotonic()
                try:
                    watchdog = WriteWatchdog(limits.idle_timeout_seconds, context, slot, session.stream_id)
                    async with contextlib.aclosing(self._stream(session, requests, context)) as responses:
                        async for response in responses:
                            with watchdog.armed():
                                yield response
                finally:
                    session.close()
                    log.info(
                        "stream ended",
                        extra={"stream_id": session.stream_id, "audio_s": round(session.audio_seconds, 3),
                               "segments": session.segments, "wall_s": round(time.monotonic() - started, 3)},
                    )

    async def _first_config(self, requests: AsyncIterator[stt_pb2.StreamingRecognizeRequest]) -> StreamConfig:
        first = await anext(requests, None)
        if first is None or first.WhichOneof("streaming_request") != "streaming_config":
            got = "no message" if first is None else (first.WhichOneof("streaming_request") or "an empty message")
            raise InvalidConfig(
                f"the first StreamingRecognizeRequest must carry streaming_config (got {got}); "
                "send the audio in the messages after it"
            )
        return stream_config(first.streaming_config.config, first.streaming_config)

    async def _stream(
        self,
        session: StreamSession,
        requests: AsyncIterator[stt_pb2.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:
        language = session.config.language_code
        async for request in requests:
            kind = request.WhichOneof("streaming_request")
            received_at = time.monotonic()
            if kind == "audio_content":
                outputs = await session.accept_audio(request.audio_content, received_at)
            elif kind == "control":
                outputs = await session.end_segment(received_at) if request.control.end_segment else []
            elif kind == "streaming_config":
                raise InvalidConfig("streaming_config may only be sent in the first message of a stream")
            else:
                continue  # an empty message: nothing to do
            for output in outputs:
                yield streaming_response(output, language)
            if session.done:
                return
        # A cancel that arrives while we wait for audio also ends the request stream, and grpc.aio
        # cancels this task only on its next turn of the event loop: yield once so a cancelled
        # stream stops here instead of decoding its open segments for nobody (measured: 10 of 10).
        await asyncio.sleep(0)
        if context.cancelled():
            raise asyncio.CancelledError("client cancelled the stream")
        for output in await session.finish():
            yield streaming_response(output, language)


def method_handlers(servicer: SpeechServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The Speech methods, for registration under each service name."""
    return {
        "Recognize": grpc.unary_unary_rpc_method_handler(
            servicer.Recognize,
            request_deserializer=stt_pb2.RecognizeRequest.FromString,
            response_serializer=stt_pb2.RecognizeResponse.SerializeToString,
        ),
        "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
            servicer.StreamingRecognize,
            request_deserializer=stt_pb2.StreamingRecognizeRequest.FromString,
            response_serializer=stt_pb2.StreamingRecognizeResponse.SerializeToString,
        ),
    }
