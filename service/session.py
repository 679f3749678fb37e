"""StreamSession: everything one recognition RPC owns, and nothing shared.

Per stream: the audio decoder, and per recognized channel a resampler, a VAD
segmenter and the current ``SegmentRecognizer`` from the shared Recognizer
(docs/ARCHITECTURE.md). Audio goes in as bytes; out come domain results
(``StreamOutput``) that the servicer turns into protobuf:

- partial results, split Google-style into a stable result (the recognizer's
  committed prefix, stability 0.9) and an unstable one (the rest, 0.01);
- one final result per speech segment, with alternatives, word times,
  confidences and, on request, the attention alignment;
- speech events (activity begin/end/timeout, end of single utterance).

The session never touches gRPC and is closed in ``finally`` by its owner.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service import metrics
from service.errors import InvalidConfig, StreamTooLong
from service.pipeline.audio import DEFAULT_MAX_BUFFER_BYTES, AudioDecoder, AudioFormat
from service.pipeline.recognition import DecodeOptions
from service.pipeline.resample import MODEL_RATE_HZ, Resampler
from service.pipeline.vad import EndpointSettings, SpeechAudio, SpeechBegin, SpeechEnd, VadEvent, VadSegmenter

log = logging.getLogger(__name__)

STABLE_STABILITY = 0.9  # the recognizer's committed prefix: it will not change
UNSTABLE_STABILITY = 0.01  # the tail after it: likely to change
MAX_ALTERNATIVES = 10
MAX_BEAM_SIZE = 16
# Inputs at least this big (about 8 s of 16 kHz 16-bit audio) are decoded and
# segmented in a worker thread so that a whole-file request does not stall the
# event loop that all streams share.
_OFF_LOOP_BYTES = 256 * 1024


class SegmentRecognizer(Protocol):
    """One speech segment's recognizer (service/pipeline/recognition.py)."""

    async def accept(self, samples: np.ndarray) -> Any | None: ...

    async def finish(self) -> Any: ...


class RecognitionEngine(Protocol):
    """The shared, read-only Recognizer (service/recognizer.py)."""

    def new_segment(self, offset_s: float, options: DecodeOptions) -> SegmentRecognizer: ...


@dataclass(frozen=True)
class StreamConfig:
    """What the client asked for, validated (see ``validate``)."""

    audio: AudioFormat
    separate_channels: bool = False  # recognize each channel on its own (channel_tag 1..N)
    language_code: str = ""
    max_alternatives: int = 1
    interim_results: bool = False
    single_utterance: bool = False
    voice_activity_events: bool = False
    speech_start_timeout_s: float | None = None  # no speech this long from the start: timeout
    speech_end_timeout_s: float | None = None  # silence this long after speech: timeout
    word_time_offsets: bool = False
    word_confidence: bool = False
    attention_alignment: bool = False
    beam_size: int = 0  # 0: server default (STT_BEAM_SIZE, or max_alternatives when larger)
    endpointing: EndpointSettings = field(default_factory=EndpointSettings)

    def validate(self) -> None:
        """Raise InvalidConfig naming the offending proto field."""
        self.audio.validate()
        self.endpointing.validate()
        if not 0 <= self.max_alternatives <= MAX_ALTERNATIVES:
            raise InvalidConfig(f"max_alternatives must be 0..{MAX_ALTERNATIVES}, got {self.max_alternatives}")
        if not 0 <= self.beam_size <= MAX_BEAM_SIZE:
            raise InvalidConfig(f"beam_size must be 0..{MAX_BEAM_SIZE}, got {self.beam_size}")
        if self.beam_size and self.beam_size < self.max_alternatives:
            raise InvalidConfig(
                f"beam_size ({self.beam_size}) must be at least max_alternatives ({self.max_alternatives})"
            )
        for name in ("speech_start_timeout_s", "speech_end_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidConfig(f"voice_activity_timeout durations must be positive, got {value:g} s")

    def decode_options(self) -> DecodeOptions:
        """Options for the recognizer; fields left unset (None) take the server's defaults."""
        return DecodeOptions(beam_size=self.beam_size or None, min_beam_size=max(1, self.max_alternatives),
                             return_attention=self.attention_alignment)


class SpeechEventKind(enum.Enum):
    END_OF_SINGLE_UTTERANCE = 1
    SPEECH_ACTIVITY_BEGIN = 2
    SPEECH_ACTIVITY_END = 3
    SPEECH_ACTIVITY_TIMEOUT = 4


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float  # stream time
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Alignment:
    """Attention over encoder frames: weights (n_tokens, n_frames) float32."""

    tokens: tuple[str, ...]
    weights: np.ndarray
    frame_shift_s: float
    offset_s: float


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float = 0.0
    words: tuple[Word, ...] = ()
    alignment: Alignment | None = None


@dataclass(frozen=True)
class Result:
    alternatives: tuple[Transcript, ...]
    is_final: bool
    stability: float
    end_s: float  # stream time the result covers up to
    channel_tag: int  # 0: channels mixed; 1..N with separate recognition


@dataclass(frozen=True)
class StreamOutput:
    """One response: results and/or a speech event."""

    results: tuple[Result, ...] = ()
    event: SpeechEventKind | None = None
    event_time_s: float = 0.0


@dataclass
class _Segment:
    recognizer: SegmentRecognizer
    start_sample: int
    samples: int = 0
    compute_s: float = 0.0
    last_partial: tuple[str, str] | None = None


class _Channel:
    """Per-channel pipeline: 16 kHz resampler, VAD segmenter, the open segment."""

    def __init__(self, tag: int, rate_hz: int, endpointing: EndpointSettings) -> None:
        self.tag = tag
        self.resampler = Resampler(rate_hz, MODEL_RATE_HZ)
        self.vad = VadSegmenter(endpointing)
        self.segment: _Segment | None = None
        self.heard_speech = False
        self.last_end_sample = 0


def _segment(channel: _Channel, samples: np.ndarray) -> list[VadEvent]:
    """Resample and segment one channel's new samples."""
    return channel.vad.process(channel.resampler.process(samples))


async def _off_loop_if_large(size: int, fn, *args):
    """Run fn here for stream-sized chunks; in a worker thread for whole files.

    The session is driven by one task at a time, so its state is never touched
    concurrently; other streams' tasks keep running meanwhile.
    """
    if size < _OFF_LOOP_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class StreamSession:
    """All per-stream state of one recognition RPC. Not thread-safe; one task drives it."""

    def __init__(
        self,
        engine: RecognitionEngine,
        config: StreamConfig,
        stream_id: str = "",
        max_audio_seconds: float = math.inf,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        reserve_streams: Callable[[int], None] | None = None,
    ) -> None:
        """reserve_streams(n) is called once the channel count is known (from the config or the
        audio's header) with the number of recognizers the stream runs; it may refuse (raise)."""
        config.validate()
        self.config = config
        self._reserve_streams = reserve_streams
        self.stream_id = stream_id
        self._engine = engine
        self._options = config.decode_options()
        self._decoder = AudioDecoder(config.audio, max_buffer_bytes, max_audio_seconds)
        self._max_audio_seconds = max_audio_seconds
        self._channels: list[_Channel] = []
        self.audio_seconds = 0.0
        self.segments = 0
        self.done = False  # single utterance ended or voice activity timeout: stop reading
        self.closed = False

    @property
    def buffers_until_end(self) -> bool:
        """True for FLAC/Ogg input: no results until the stream ends (see pipeline/audio.py)."""
        return self._decoder.buffers_until_end

    async def accept_audio(self, data: bytes, received_at: float | None = None) -> list[StreamOutput]:
        """Audio bytes in any chunking -> outputs now available."""
        if self.done or not data:
            return []
        received_at = time.monotonic() if received_at is None else received_at
        samples = await _off_loop_if_large(len(data), self._decoder.process, data)
        outputs = await self._feed(samples, received_at)
        return outputs + self._check_voice_timeouts()

    async def end_segment(self, received_at: float | None = None) -> list[StreamOutput]:
        """Client control: end the current segment of every channel now."""
        if self.done:
            return []
        received_at = time.monotonic() if received_at is None else received_at
        outputs: list[StreamOutput] = []
        for channel in self._channels:
            outputs += await self._handle(channel, channel.vad.force_end(), received_at)
        return outputs

    async def finish(self, received_at: float | None = None) -> list[StreamOutput]:
        """End of the client's audio: decode what is buffered, end open segments."""
        received_at = time.monotonic() if received_at is None else received_at
        if self.done:
            return []
        # Buffered FLAC/Ogg are decoded here, all at once: keep that off the event loop.
        samples = await asyncio.to_thread(self._decoder.flush) if self.buffers_until_end else self._decoder.flush()
        outputs = await self._feed(samples, received_at)
        for channel in self._channels:
            if self.done:
                break
            events = channel.vad.process(channel.resampler.flush()) + channel.vad.flush()
            outputs += await self._handle(channel, events, received_at)
        self.done = True
        return outputs

    def close(self) -> None:
        """Drop every per-stream resource (open segments included). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.done = True
        open_segments = sum(1 for c in self._channels if c.segment is not None)
        self._channels = []
        log.debug(
            "session closed",
            extra={"stream_id": self.stream_id, "audio_s": round(self.audio_seconds, 3),
                   "segments": self.segments, "open_segments": open_segments},
        )

    async def _feed(self, samples: np.ndarray, received_at: float) -> list[StreamOutput]:
        """(N, C) float32 at the decoder's rate -> outputs of every channel."""
        if not len(samples):
            return []
        rate = self._decoder.sample_rate_hz
        self.audio_seconds += len(samples) / rate
        metrics.AUDIO_SECONDS_TOTAL.inc(len(samples) / rate)
        if self.audio_seconds > self._max_audio_seconds:
            raise StreamTooLong(
                f"exceeded the maximum stream duration of {self._max_audio_seconds:g} seconds of audio; "
                "open a new stream to continue"
            )
        if not self._channels:
            self._open_channels(rate, samples.shape[1])
        columns = [samples[:, i] for i in range(samples.shape[1])] if self.config.separate_channels else [
            samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
        ]
        outputs: list[StreamOutput] = []
        for channel, column in zip(self._channels, columns):
            if self.done:
                break
            events = await _off_loop_if_large(column.nbytes, _segment, channel, column)
            outputs += await self._handle(channel, events, received_at)
        return outputs

    def _open_channels(self, rate: int, n_channels: int) -> None:
        if self._reserve_streams is not None:
            self._reserve_streams(n_channels if self.config.separate_channels else 1)
        if self.config.separate_channels:
            self._channels = [_Channel(i + 1, rate, self.config.endpointing) for i in range(n_channels)]
        else:
            self._channels = [_Channel(0, rate, self.config.endpointing)]

    async def _handle(self, channel: _Channel, events: Sequence[VadEvent], received_at: float) -> list[StreamOutput]:
        outputs: list[StreamOutput] = []
        for event in events:
            if self.done:
                break
            if isinstance(event, SpeechBegin):
                outputs += self._begin(channel, event)
            elif isinstance(event, SpeechAudio):
                outputs += await self._accept(channel, event, received_at)
            elif isinstance(event, SpeechEnd):
                outputs += await self._end(channel, event, received_at)
        return outputs

    def _begin(self, channel: _Channel, event: SpeechBegin) -> list[StreamOutput]:
        offset_s = event.sample / MODEL_RATE_HZ
        channel.segment = _Segment(self._engine.new_segment(offset_s=offset_s, options=self._options), event.sample)
        channel.heard_speech = True
        if self.config.voice_activity_events:
            return [StreamOutput(event=SpeechEventKind.SPEECH_ACTIVITY_BEGIN, event_time_s=offset_s)]
        return []

    async def _accept(self, channel: _Channel, event: SpeechAudio, received_at: float) -> list[StreamOutput]:
        segment = channel.segment
        started = time.perf_counter()
        hyp = await segment.recognizer.accept(event.samples)
        segment.compute_s += time.perf_counter() - started
        segment.samples += len(event.samples)
        if hyp is None or not self.config.interim_results:
            return []
        output = self._partial(channel, segment, hyp)
        if output is None:
            return []
        metrics.PARTIAL_LATENCY.observe(time.monotonic() - received_at)
        return [output]

    async def _end(self, channel: _Channel, event: SpeechEnd, received_at: float) -> list[StreamOutput]:
        segment, channel.segment = channel.segment, None
        channel.last_end_sample = event.sample
        started = time.perf_counter()
        hyp = await segment.recognizer.finish()
        segment.compute_s += time.perf_counter() - started
        self._record_segment(segment, event)
        outputs: list[StreamOutput] = []
        end_s = event.sample / MODEL_RATE_HZ
        if self.config.voice_activity_events:
            outputs.append(StreamOutput(event=SpeechEventKind.SPEECH_ACTIVITY_END, event_time_s=end_s))
        if self.config.single_utterance:
            outputs.append(StreamOutput(event=SpeechEventKind.END_OF_SINGLE_UTTERANCE, event_time_s=end_s))
            self.done = True
        final = self._final(channel, hyp, end_s)
        if final is not None:
            outputs.append(final)
            metrics.FINAL_LATENCY.observe(time.monotonic() - received_at)
        return outputs

    def _record_segment(self, segment: _Segment, event: SpeechEnd) -> None:
        self.segments += 1
        metrics.SEGMENTS_TOTAL.inc()
        audio_s = segment.samples / MODEL_RATE_HZ
        if audio_s > 0:
            metrics.RTF.observe(segment.compute_s / audio_s)
        log.debug(
            "segment done",
            extra={"stream_id": self.stream_id, "segment": self.segments, "audio_s": round(audio_s, 3),
                   "compute_s": round(segment.compute_s, 4), "reason": event.reason.value},
        )

    def _partial(self, channel: _Channel, segment: _Segment, hyp: Any) -> StreamOutput | None:
        """Split the hypothesis into its stable prefix (0.9) and unstable rest (0.01)."""
        text = hyp.text.strip()
        stable = hyp.stable_text.strip()
        unstable = text[len(stable):].strip() if text.startswith(stable) else text
        if not text.startswith(stable):
            stable = ""
        if (stable, unstable) == segment.last_partial or not (stable or unstable):
            return None
        segment.last_partial = (stable, unstable)
        results = [
            Result((Transcript(part),), is_final=False, stability=stability, end_s=hyp.end_s, channel_tag=channel.tag)
            for part, stability in ((stable, STABLE_STABILITY), (unstable, UNSTABLE_STABILITY))
            if part
        ]
        return StreamOutput(results=tuple(results))

    def _final(self, channel: _Channel, hyp: Any, end_s: float) -> StreamOutput | None:
        if not hyp.text.strip():
            return None  # a segment of noise: Google sends no final either
        alternatives = list(hyp.alternatives) or [hyp]
        limit = max(1, self.config.max_alternatives)
        transcripts = tuple(
            self._transcript(alt, hyp.attention if i == 0 else None) for i, alt in enumerate(alternatives[:limit])
        )
        result = Result(transcripts, is_final=True, stability=0.0, end_s=max(end_s, hyp.end_s), channel_tag=channel.tag)
        return StreamOutput(results=(result,))

    def _transcript(self, alt: Any, attention: Any | None) -> Transcript:
        words: tuple[Word, ...] = ()
        if self.config.word_time_offsets or self.config.word_confidence:
            words = tuple(
                Word(
                    w.word,
                    w.start_s if self.config.word_time_offsets else 0.0,
                    w.end_s if self.config.word_time_offsets else 0.0,
                    w.confidence if self.config.word_confidence else 0.0,
                )
                for w in alt.words
            )
        alignment = None
        if self.config.attention_alignment and attention is not None:
            alignment = Alignment(
                tuple(attention.tokens), np.asarray(attention.weights, np.float32),
                attention.frame_shift_s, attention.offset_s,
            )
        return Transcript(alt.text.strip(), float(alt.confidence), words, alignment)

    def _check_voice_timeouts(self) -> list[StreamOutput]:
        """Google's voice_activity_timeout: end the stream on too long a silence."""
        if self.done or not self._channels or (
                self.config.speech_start_timeout_s is None and self.config.speech_end_timeout_s is None):
            return []
        position_s = min(c.vad.position for c in self._channels) / MODEL_RATE_HZ
        speaking = any(c.segment is not None for c in self._channels)
        heard = any(c.heard_speech for c in self._channels)
        start_limit, end_limit = self.config.speech_start_timeout_s, self.config.speech_end_timeout_s
        timed_out = False
        if not heard and start_limit is not None and position_s >= start_limit:
            timed_out = True
        elif heard and not speaking and end_limit is not None:
            last_end_s = max(c.last_end_sample for c in self._channels) / MODEL_RATE_HZ
            timed_out = position_s - last_end_s >= end_limit
        if not timed_out:
            return []
        self.done = True
        return [StreamOutput(event=SpeechEventKind.SPEECH_ACTIVITY_TIMEOUT, event_time_s=position_s)]
