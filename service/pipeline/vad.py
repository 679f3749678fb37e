"""Voice activity segmentation with webrtcvad: 16 kHz samples -> speech segments.

Rules (all times in ms of audio, per stream, from ``EndpointSettings``):

- The audio is cut into ``frame_ms`` frames (10/20/30 ms) and each is classified
  voiced or not by webrtcvad at ``aggressiveness`` 0..3.
- Onset: a segment begins after ``onset_ms`` of consecutive voiced frames. It
  starts ``padding_ms`` before the first of them (pre-roll), never earlier than
  the end of the previous segment: each sample belongs to at most one segment.
- Hangover: inside speech, the first ``padding_ms`` of a run of unvoiced frames
  go to the recognizer at once (they belong to the segment either way: as trailing
  padding or as a pause), so the decoder's look-ahead window fills without waiting
  for the pause to end. Unvoiced frames beyond that are held back: a voiced frame
  releases them into the segment (a pause inside speech); ``end_silence_ms`` of
  unvoiced frames in a row end the segment and the held ones are dropped.
- Max length: a segment that reaches ``max_segment_s`` is cut at exactly that
  sample and, while speech goes on, the next segment begins at the very next
  sample (no audio lost or repeated).
- ``force_end`` ends the current segment now (client control); ``flush`` ends
  the stream.

Events are returned in stream order: ``SpeechBegin``, ``SpeechAudio`` (the
segment's samples, possibly several), ``SpeechEnd``. Sample positions count
16 kHz samples from the stream start. Any chunking of the input gives the same
events once consecutive ``SpeechAudio`` are joined (tests/test_vad.py).
"""
from __future__ import annotations

import collections
import enum
from dataclasses import dataclass

import numpy as np
import webrtcvad

from service.errors import InvalidConfig

SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True)
class EndpointSettings:
    """Per-request endpointing; defaults suit conversational speech."""

    aggressiveness: int = 2  # webrtcvad mode: 0 keeps most audio as speech, 3 the least
    frame_ms: int = 30
    onset_ms: int = 90  # voiced audio in a row that starts a segment
    padding_ms: int = 300  # kept before the onset and after the last voiced frame
    end_silence_ms: int = 800  # unvoiced audio in a row that ends a segment
    max_segment_s: float = 30.0

    def validate(self) -> None:
        """Raise InvalidConfig with the field's proto name when a value is out of range."""
        if not 0 <= self.aggressiveness <= 3:
            raise InvalidConfig(f"endpointing.vad_aggressiveness must be 0..3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise InvalidConfig(f"VAD frame must be 10, 20 or 30 ms, got {self.frame_ms}")
        if not 0 <= self.padding_ms <= 1000:
            raise InvalidConfig(f"endpointing.speech_padding_ms must be 0..1000, got {self.padding_ms}")
        if not 100 <= self.end_silence_ms <= 10000:
            raise InvalidConfig(f"endpointing.end_silence_ms must be 100..10000, got {self.end_silence_ms}")
        if self.end_silence_ms < self.padding_ms:
            raise InvalidConfig(
                f"endpointing.end_silence_ms ({self.end_silence_ms}) must be at least "
                f"speech_padding_ms ({self.padding_ms})"
            )
        if not 1.0 <= self.max_segment_s <= 120.0:
            raise InvalidConfig(f"endpointing.max_segment_seconds must be 1..120, got {self.max_segment_s:g}")


class EndReason(enum.Enum):
    SILENCE = "silence"
    MAX_LENGTH = "max_length"
    FORCED = "forced"
    STREAM_END = "stream_end"


@dataclass(frozen=True)
class SpeechBegin:
    sample: int  # first sample of the segment


@dataclass(frozen=True)
class SpeechAudio:
    start: int  # stream position of samples[0]
    samples: np.ndarray  # (N,) float32, 16 kHz


@dataclass(frozen=True)
class SpeechEnd:
    sample: int  # one past the last sample of the segment
    reason: EndReason


VadEvent = SpeechBegin | SpeechAudio | SpeechEnd


@dataclass
class _Frame:
    start: int
    samples: np.ndarray
    voiced: bool


class VadSegmenter:
    """Per-stream segmenter; ``process`` takes (N,) float32 16 kHz samples in any chunking."""

    def __init__(self, settings: EndpointSettings = EndpointSettings()) -> None:
        settings.validate()
        self.settings = settings
        self._vad = webrtcvad.Vad(settings.aggressiveness)
        self._frame_len = SAMPLE_RATE_HZ * settings.frame_ms // 1000
        self._onset_frames = max(1, -(-settings.onset_ms // settings.frame_ms))
        self._padding = SAMPLE_RATE_HZ * settings.padding_ms // 1000  # samples
        self._end_frames = max(1, -(-settings.end_silence_ms // settings.frame_ms))
        self._max_len = int(round(settings.max_segment_s * SAMPLE_RATE_HZ))
        self._pending = np.zeros(0, np.float32)  # samples not yet forming a whole frame
        self._position = 0  # stream position of _pending[0]
        # Silence state: recent frames (pre-roll + onset candidates), oldest first.
        pre_roll_frames = -(-self._padding // self._frame_len) + self._onset_frames
        self._recent: collections.deque[_Frame] = collections.deque(maxlen=pre_roll_frames)
        self._floor = 0  # no segment may start before this (end of the previous one)
        # Speech state.
        self.in_speech = False
        self._held: list[_Frame] = []  # unvoiced frames held back inside speech (beyond the padding)
        self._silence_frames = 0  # length of the current unvoiced run inside speech, in frames
        self._silence_released = 0  # samples of that run already emitted (at most the padding)
        self._segment_len = 0  # samples emitted into the current segment
        self._segment_end = 0  # stream position one past the last emitted sample
        self.last_voiced_end = 0  # stream position one past the latest voiced frame

    @property
    def position(self) -> int:
        """Samples consumed and classified so far."""
        return self._position

    def process(self, samples: np.ndarray) -> list[VadEvent]:
        """(N,) float32 16 kHz -> events for every whole frame now available."""
        data = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        n_frames = len(data) // self._frame_len
        if not n_frames:  # messages shorter than a frame: nothing to classify yet
            self._pending = data
            return []
        events: list[VadEvent] = []
        # one int16 conversion per call, not per frame: this runs for every message of every stream
        pcm = _to_pcm16(data[: n_frames * self._frame_len])
        frame_bytes = 2 * self._frame_len
        for i in range(n_frames):
            chunk = data[i * self._frame_len : (i + 1) * self._frame_len]
            voiced = self._vad.is_speech(pcm[i * frame_bytes : (i + 1) * frame_bytes], SAMPLE_RATE_HZ)
            self._step(_Frame(self._position, chunk, voiced), events)
            self._position += self._frame_len
        self._pending = data[n_frames * self._frame_len :].copy()
        return _merge_audio(events)

    def force_end(self) -> list[VadEvent]:
        """End the current segment now (trailing padding kept); no-op outside speech."""
        events: list[VadEvent] = []
        if self.in_speech:
            self._end(EndReason.FORCED, events)
        return _merge_audio(events)

    def flush(self) -> list[VadEvent]:
        """End of stream: classify the last partial frame, then end any open segment."""
        events: list[VadEvent] = []
        if len(self._pending):
            padded = np.zeros(self._frame_len, np.float32)
            padded[: len(self._pending)] = self._pending
            self._step(_Frame(self._position, self._pending, self._is_voiced(padded)), events)
            self._position += len(self._pending)
            self._pending = np.zeros(0, np.float32)
        if self.in_speech:
            self._end(EndReason.STREAM_END, events)
        return _merge_audio(events)

    def _is_voiced(self, frame: np.ndarray) -> bool:
        return self._vad.is_speech(_to_pcm16(frame), SAMPLE_RATE_HZ)

    def _step(self, frame: _Frame, events: list[VadEvent]) -> None:
        if self.in_speech:
            self._step_speech(frame, events)
        else:
            self._step_silence(frame, events)
        if frame.voiced:
            self.last_voiced_end = frame.start + len(frame.samples)

    def _step_silence(self, frame: _Frame, events: list[VadEvent]) -> None:
        self._recent.append(frame)
        k = self._onset_frames
        # the common case (silence) returns at the first test
        if not frame.voiced or len(self._recent) < k or not all(self._recent[-j].voiced for j in range(2, k + 1)):
            return
        start = max(self._floor, self._recent[-k].start - self._padding, self._recent[0].start)
        audio = np.concatenate([f.samples for f in self._recent])
        audio = audio[start - self._recent[0].start :]
        self._recent.clear()
        self._begin(start, events)
        self._emit(audio, events, continues=True)

    def _step_speech(self, frame: _Frame, events: list[VadEvent]) -> None:
        if not frame.voiced:
            self._silence_frames += 1
            room = self._padding - self._silence_released
            if room > 0:  # within the padding: part of the segment whatever comes next
                now = frame.samples[:room]
                self._silence_released += len(now)
                # not continues: a max-length cut here must not open a segment on silence
                self._emit(now, events, continues=False)
                if not self.in_speech:  # cut: what follows is silence before any next segment
                    self._silence_frames = self._silence_released = 0
                    self._held = []
                    rest = frame.samples[self._floor - frame.start:]
                    if len(rest):  # pre-roll, should speech resume
                        self._recent.append(_Frame(self._floor, rest, False))
                    return
                if len(now) < len(frame.samples):
                    self._held.append(_Frame(frame.start + len(now), frame.samples[len(now):], False))
            else:
                self._held.append(frame)
            if self._silence_frames >= self._end_frames and self.in_speech:
                self._end(EndReason.SILENCE, events)
            return
        held, self._held = self._held, []
        self._silence_frames = self._silence_released = 0
        self._emit(np.concatenate([f.samples for f in [*held, frame]]), events, continues=True)

    def _begin(self, start: int, events: list[VadEvent]) -> None:
        self.in_speech = True
        self._segment_len = 0
        self._segment_end = start
        events.append(SpeechBegin(start))

    def _emit(self, audio: np.ndarray, events: list[VadEvent], continues: bool) -> None:
        """Add audio to the segment, cutting it at the max length.

        continues=True: speech goes on, so a cut opens the next segment at the next
        sample; False (trailing padding): audio past a cut belongs to no segment.
        """
        while len(audio):
            room = self._max_len - self._segment_len
            part, audio = audio[:room], audio[room:]
            events.append(SpeechAudio(self._segment_end, part))
            self._segment_len += len(part)
            self._segment_end += len(part)
            if self._segment_len < self._max_len:
                continue
            self._close(EndReason.MAX_LENGTH, events)
            if not continues:
                return
            self._begin(self._segment_end, events)

    def _end(self, reason: EndReason, events: list[VadEvent]) -> None:
        """End the segment: keep up to padding_ms of trailing silence, recycle the rest."""
        held, self._held = self._held, []
        room = self._padding - self._silence_released
        self._silence_frames = self._silence_released = 0
        if held and room > 0:
            audio = np.concatenate([f.samples for f in held])[:room]
            self._emit(audio, events, continues=False)
        if self.in_speech:
            self._close(reason, events)
        # Held frames after the padding may serve as pre-roll of the next segment.
        self._recent.clear()
        for f in held:
            if f.start + len(f.samples) > self._floor:
                self._recent.append(f)

    def _close(self, reason: EndReason, events: list[VadEvent]) -> None:
        events.append(SpeechEnd(self._segment_end, reason))
        self.in_speech = False
        self._floor = self._segment_end


def _to_pcm16(samples: np.ndarray) -> bytes:
    """(N,) float32 [-1, 1] -> little-endian int16 bytes, what webrtcvad reads."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


def _merge_audio(events: list[VadEvent]) -> list[VadEvent]:
    """Join consecutive SpeechAudio events into one (one concatenation per run)."""
    merged: list[VadEvent] = []
    run: list[SpeechAudio] = []
    for event in [*events, None]:
        if isinstance(event, SpeechAudio):
            run.append(event)
            continue
        if run:
            merged.append(run[0] if len(run) == 1 else
                          SpeechAudio(run[0].start, np.concatenate([r.samples for r in run])))
            run = []
        if event is not None:
            merged.append(event)
    return merged
