"""service/pipeline/vad.py: segments, padding, max length, force end, chunking invariance."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import InvalidConfig
from service.pipeline.vad import (
    EndpointSettings,
    EndReason,
    SpeechAudio,
    SpeechBegin,
    SpeechEnd,
    VadSegmenter,
)
from tests.speech_audio import silence, synthesize, utterances


@pytest.fixture(scope="module")
def two_utterances() -> np.ndarray:
    return utterances(["the quick brown fox", "jumps over the lazy dog"], pause_s=1.5, lead_s=1.0)


def run(segmenter: VadSegmenter, chunks: list[np.ndarray]) -> list:
    events = []
    for chunk in chunks:
        events += segmenter.process(chunk)
    return events + segmenter.flush()


def segments(events: list) -> list[tuple[int, int, EndReason, np.ndarray]]:
    """(begin, end, reason, audio) per segment; checks the events are well formed."""
    out, begin, audio = [], None, []
    for event in events:
        if isinstance(event, SpeechBegin):
            assert begin is None
            begin, audio = event.sample, []
        elif isinstance(event, SpeechAudio):
            assert begin is not None
            assert event.start == begin + sum(len(a) for a in audio)  # contiguous
            audio.append(event.samples)
        else:
            assert isinstance(event, SpeechEnd) and begin is not None
            joined = np.concatenate(audio) if audio else np.zeros(0, np.float32)
            assert event.sample == begin + len(joined)
            out.append((begin, event.sample, event.reason, joined))
            begin = None
    assert begin is None
    return out


def split(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, pos, i = [], 0, 0
    while pos < len(x):
        out.append(x[pos : pos + sizes[i % len(sizes)]])
        pos, i = pos + sizes[i % len(sizes)], i + 1
    return out


def test_two_utterances_give_two_segments(two_utterances):
    segs = segments(run(VadSegmenter(), [two_utterances]))
    assert [s[2] for s in segs] == [EndReason.SILENCE, EndReason.SILENCE]
    first_speech = synthesize("the quick brown fox")
    # Segment 1 starts within the lead silence (pre-roll) and covers the words.
    assert 0 < segs[0][0] < 16000
    assert segs[0][1] >= 16000 + len(first_speech) - 1600
    assert segs[1][0] > segs[0][1]
    # Segments never overlap and each holds exactly its samples of the input.
    for begin, end, _, audio in segs:
        np.testing.assert_array_equal(audio, two_utterances[begin:end])


def test_padding_bounds_segment_edges(two_utterances):
    tight = segments(run(VadSegmenter(EndpointSettings(padding_ms=0)), [two_utterances]))
    padded = segments(run(VadSegmenter(EndpointSettings(padding_ms=300)), [two_utterances]))
    for (b0, e0, *_), (b1, e1, *_) in zip(tight, padded):
        assert b1 == max(0, b0 - 4800)
        assert e1 - e0 == 4800


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=6))
def test_chunking_invariance(two_utterances, sizes):
    config = EndpointSettings(max_segment_s=1.0)  # exercise max-length cuts too
    whole = segments(run(VadSegmenter(config), [two_utterances]))
    parts = segments(run(VadSegmenter(config), split(two_utterances, sizes)))
    assert [(b, e, r) for b, e, r, _ in whole] == [(b, e, r) for b, e, r, _ in parts]
    for (*_, a), (*_, b) in zip(whole, parts):
        np.testing.assert_array_equal(a, b)


def test_max_length_cuts_cleanly():
    speech = np.concatenate([synthesize("a rather long sentence that goes on and on without a pause")] * 2)
    audio = np.concatenate([silence(0.3), speech, silence(1.5)])
    segs = segments(run(VadSegmenter(EndpointSettings(max_segment_s=1.0)), [audio]))
    assert len(segs) >= 4
    assert all(e - b <= 16000 for b, e, *_ in segs)
    cuts = [(segs[i][1], segs[i + 1][0]) for i in range(len(segs) - 1) if segs[i][2] is EndReason.MAX_LENGTH]
    assert cuts and all(end == nxt for end, nxt in cuts)  # the next segment starts at the next sample


@pytest.mark.parametrize("max_s", [1.2, 1.3])
def test_a_cut_in_the_trailing_padding_opens_no_segment_on_silence(max_s):
    """"hello there" (0.5-1.5 s) then 2 s of silence: the cut falls in the padding after the speech,
    where nothing more is said. Before: a second segment of pure silence (an extra pair of
    speech events and a decode of nothing)."""
    audio = np.concatenate([silence(0.5), synthesize("hello there"), silence(2.0)])
    segs = segments(run(VadSegmenter(EndpointSettings(max_segment_s=max_s)), [audio]))
    assert [reason for *_, reason, _ in segs] == [EndReason.MAX_LENGTH], segs
    # speech that resumes after such a cut still gets its own segment, pre-roll included
    again = np.concatenate([audio[: int(2.0 * 16000)], synthesize("good morning"), silence(1.0)])
    segs = segments(run(VadSegmenter(EndpointSettings(max_segment_s=max_s)), [again]))
    assert len(segs) >= 2 and segs[0][2] is EndReason.MAX_LENGTH, segs
    assert segs[1][0] < 2.0 * 16000 < segs[1][1]


def test_force_end_then_new_segment():
    vad = VadSegmenter()
    speech = synthesize("hello there")
    events = vad.process(np.concatenate([silence(0.3), speech[: len(speech) // 2]]))
    assert isinstance(events[0], SpeechBegin)
    forced = vad.force_end()
    assert isinstance(forced[-1], SpeechEnd) and forced[-1].reason is EndReason.FORCED
    assert not vad.in_speech
    later = vad.process(np.concatenate([speech[len(speech) // 2 :], silence(1.0), speech]))
    assert any(isinstance(e, SpeechBegin) for e in later)
    assert vad.force_end() != [] or not vad.in_speech


def test_force_end_outside_speech_is_noop():
    vad = VadSegmenter()
    vad.process(silence(1.0))
    assert vad.force_end() == []


def test_stream_end_closes_open_segment():
    vad = VadSegmenter()
    events = vad.process(np.concatenate([silence(0.3), synthesize("cut off mid sentence")]))
    assert vad.in_speech or any(isinstance(e, SpeechEnd) for e in events)
    tail = vad.flush()
    assert isinstance(tail[-1], SpeechEnd) and tail[-1].reason is EndReason.STREAM_END


def test_silence_gives_no_segments():
    assert run(VadSegmenter(), [silence(3.0)]) == []
    noise = (np.random.default_rng(0).standard_normal(48000) * 1e-4).astype(np.float32)
    assert run(VadSegmenter(EndpointSettings(aggressiveness=3)), [noise]) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"aggressiveness": 4}, "vad_aggressiveness"),
        ({"padding_ms": -1}, "speech_padding_ms"),
        ({"end_silence_ms": 50}, "end_silence_ms"),
        ({"end_silence_ms": 200, "padding_ms": 300}, "at least"),
        ({"max_segment_s": 0.5}, "max_segment_seconds"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(InvalidConfig, match=message):
        VadSegmenter(EndpointSettings(**kwargs))
