"""Final results as plain data (segments with words), and whole-file recognition over the public API."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from service.client.audio_input import AudioData
from service.proto.stt.v1 import stt_pb2, stt_pb2_grpc

# Above this, Recognize would hit the server's STT_MAX_MESSAGE_BYTES (4 MiB by default):
# send the file as a stream of audio messages instead (same finals, no size limit).
MAX_RECOGNIZE_BYTES = 3 * 1024 * 1024
STREAM_CHUNK_MS = 1000


@dataclass
class Word:
    word: str
    start: float  # seconds of stream time
    end: float
    confidence: float


@dataclass
class Segment:
    """One final result: a speech segment (VAD) with its best transcript."""

    transcript: str
    start: float  # seconds: first word's start, else the previous segment's end
    end: float  # seconds: result_end_time
    confidence: float
    words: list[Word] = field(default_factory=list)
    channel: int = 0
    alternatives: list[str] = field(default_factory=list)  # further alternatives, best first

    def to_dict(self) -> dict:
        d = asdict(self)
        d["start"], d["end"] = round(self.start, 3), round(self.end, 3)
        d["confidence"] = round(self.confidence, 4)
        d["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                       "confidence": round(w.confidence, 4)} for w in self.words]
        if not self.alternatives:
            del d["alternatives"]
        return d


def seconds(duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def segment_from(result, previous_end: float) -> Segment:
    """SpeechRecognitionResult or final StreamingRecognitionResult -> Segment."""
    best = result.alternatives[0] if result.alternatives else stt_pb2.SpeechRecognitionAlternative()
    words = [Word(w.word, seconds(w.start_time), seconds(w.end_time), w.confidence) for w in best.words]
    end = seconds(result.result_end_time) if result.HasField("result_end_time") else (words[-1].end if words else previous_end)
    start = words[0].start if words else previous_end
    return Segment(best.transcript, start, max(end, start), best.confidence, words, result.channel_tag,
                   [a.transcript for a in result.alternatives[1:]])


def segments_from(results: Sequence) -> list[Segment]:
    out: list[Segment] = []
    for result in results:
        out.append(segment_from(result, out[-1].end if out else 0.0))
    return out


def _stream_requests(audio: AudioData, config) -> Iterator[stt_pb2.StreamingRecognizeRequest]:
    yield stt_pb2.StreamingRecognizeRequest(streaming_config=stt_pb2.StreamingRecognitionConfig(config=config))
    step = audio.chunk_bytes(STREAM_CHUNK_MS)
    for pos in range(0, len(audio.content), step):
        yield stt_pb2.StreamingRecognizeRequest(audio_content=audio.content[pos : pos + step])


def recognize_results(stub: stt_pb2_grpc.SpeechStub, audio: AudioData, config, *, metadata=None,
                      timeout: float | None = None) -> list:
    """Every final result for the whole audio: one Recognize call, or a stream for big files."""
    if len(audio.content) <= MAX_RECOGNIZE_BYTES:
        request = stt_pb2.RecognizeRequest(config=config, audio=stt_pb2.RecognitionAudio(content=audio.content))
        return list(stub.Recognize(request, metadata=metadata, timeout=timeout).results)
    finals = []
    for response in stub.StreamingRecognize(_stream_requests(audio, config), metadata=metadata, timeout=timeout):
        finals.extend(r for r in response.results if r.is_final)
    return finals


def transcript_text(segments: Sequence[Segment]) -> str:
    return " ".join(s.transcript.strip() for s in segments if s.transcript.strip())
