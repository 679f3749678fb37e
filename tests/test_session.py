"""service/session.py against the engine test double (tests/engine_double.py)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.engine_double import CountingRecognizer
from service.errors import InvalidConfig, StreamTooLong
from service.pipeline.audio import AudioFormat, Encoding
from service.pipeline.vad import EndpointSettings
from service.session import SpeechEventKind, StreamConfig, StreamSession
from tests.speech_audio import silence, split_bytes, to_container, to_linear16, utterances

RATE = 8000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return utterances(["open the pod bay doors", "turn left at the next corner"], pause_s=1.5, rate_hz=RATE, lead_s=1.0)


def config(**kwargs) -> StreamConfig:
    kwargs.setdefault("audio", AudioFormat(Encoding.LINEAR16, RATE, 1))
    return StreamConfig(**kwargs)


def run(cfg: StreamConfig, pieces: list[bytes], engine: CountingRecognizer | None = None, **session_kwargs):
    engine = engine or CountingRecognizer()

    async def go():
        session = StreamSession(engine, cfg, "test", **session_kwargs)
        outputs = []
        try:
            for piece in pieces:
                outputs += await session.accept_audio(piece)
                if session.done:
                    break
            outputs += await session.finish()
        finally:
            session.close()
        return outputs

    return asyncio.run(go()), engine


def finals(outputs):
    return [r for o in outputs for r in o.results if r.is_final]


def events(outputs):
    return [o.event for o in outputs if o.event is not None]


def test_one_final_per_utterance(speech):
    outputs, engine = run(config(), [to_linear16(speech)])
    texts = [f.alternatives[0].text for f in finals(outputs)]
    assert len(texts) == 2
    assert [s.samples for s in engine.segments] == [int(t.split()[-1][1:]) for t in texts]
    assert all(s.finished for s in engine.segments)
    assert finals(outputs)[0].end_s < engine.segments[1].offset_s


@pytest.mark.parametrize("sizes", [[1], [7, 333], [160], [4001, 3]])
def test_chunking_invariance(speech, sizes):
    data = to_linear16(speech)
    whole, _ = run(config(interim_results=True), [data])
    parts, _ = run(config(interim_results=True), split_bytes(data, sizes * 50))
    assert finals(whole) == finals(parts)


def test_partials_split_into_stable_and_unstable(speech):
    outputs, _ = run(config(interim_results=True), split_bytes(to_linear16(speech), [1600]))
    partial_outputs = [o for o in outputs if o.results and not o.results[0].is_final]
    assert partial_outputs
    for output in partial_outputs:
        stabilities = [r.stability for r in output.results]
        assert stabilities in ([0.9, 0.01], [0.01], [0.9])
    two_part = [o for o in partial_outputs if len(o.results) == 2]
    assert two_part, "some partial should have a committed prefix"
    # No partials without interim_results.
    quiet, _ = run(config(), [to_linear16(speech)])
    assert all(r.is_final for o in quiet for r in o.results)


def test_voice_activity_events(speech):
    outputs, engine = run(config(voice_activity_events=True), [to_linear16(speech)])
    kinds = events(outputs)
    assert kinds == [SpeechEventKind.SPEECH_ACTIVITY_BEGIN, SpeechEventKind.SPEECH_ACTIVITY_END] * 2
    begin = next(o for o in outputs if o.event is SpeechEventKind.SPEECH_ACTIVITY_BEGIN)
    assert begin.event_time_s == pytest.approx(engine.segments[0].offset_s)
    quiet, _ = run(config(), [to_linear16(speech)])
    assert events(quiet) == []


def test_single_utterance_stops_after_first_segment(speech):
    outputs, engine = run(config(single_utterance=True), split_bytes(to_linear16(speech), [800]))
    assert events(outputs) == [SpeechEventKind.END_OF_SINGLE_UTTERANCE]
    assert len(finals(outputs)) == 1 and len(engine.segments) == 1
    assert outputs.index(next(o for o in outputs if o.event)) < outputs.index(next(o for o in outputs if o.results))


def test_end_segment_control_forces_a_final(speech):
    async def go():
        engine = CountingRecognizer()
        session = StreamSession(engine, config(), "t")
        half = to_linear16(speech[: int(2.0 * RATE)])  # 1 s lead + 1 s of the first utterance
        await session.accept_audio(half)
        forced = await session.end_segment()
        session.close()
        return forced, engine

    forced, engine = asyncio.run(go())
    assert len(finals(forced)) == 1 and engine.segments[0].finished


def test_separate_channels_get_tags(speech):
    stereo = np.stack([speech, np.zeros_like(speech)], axis=1)
    fmt = AudioFormat(Encoding.LINEAR16, RATE, 2)
    outputs, _ = run(config(audio=fmt, separate_channels=True), [to_linear16(stereo)])
    assert {f.channel_tag for f in finals(outputs)} == {1}
    mixed, _ = run(config(audio=fmt), [to_linear16(stereo)])
    assert {f.channel_tag for f in finals(mixed)} == {0}


def test_word_times_confidence_and_attention(speech):
    outputs, _ = run(
        config(word_time_offsets=True, word_confidence=True, attention_alignment=True, max_alternatives=2),
        [to_linear16(speech)],
    )
    final = finals(outputs)[0]
    assert len(final.alternatives) == 2
    best = final.alternatives[0]
    assert best.words and best.words[0].end_s > best.words[0].start_s and best.words[0].confidence > 0
    assert best.alignment is not None and best.alignment.weights.shape[0] == len(best.alignment.tokens)
    assert final.alternatives[1].alignment is None
    plain, engine = run(config(), [to_linear16(speech)])
    assert finals(plain)[0].alternatives[0].words == () and len(finals(plain)[0].alternatives) == 1
    assert engine.segments[0].options.return_attention is False


def test_flac_is_recognized_at_stream_end(speech):
    data = to_container(speech, RATE, "FLAC")
    fmt = AudioFormat(Encoding.ENCODING_UNSPECIFIED)
    outputs, _ = run(config(audio=fmt), split_bytes(data, [1000]))
    wav_outputs, _ = run(config(audio=AudioFormat(Encoding.LINEAR16, RATE, 1)), [to_linear16(speech)])
    assert [f.alternatives[0].text for f in finals(outputs)] == [f.alternatives[0].text for f in finals(wav_outputs)]


def test_max_audio_seconds(speech):
    with pytest.raises(StreamTooLong, match="maximum stream duration of 2 seconds"):
        run(config(), split_bytes(to_linear16(speech), [1600]), max_audio_seconds=2.0)


def test_speech_start_timeout():
    outputs, engine = run(config(speech_start_timeout_s=1.0), split_bytes(to_linear16(silence(5.0, RATE)), [1600]))
    assert events(outputs) == [SpeechEventKind.SPEECH_ACTIVITY_TIMEOUT]
    assert outputs[-1].event_time_s == pytest.approx(1.0, abs=0.1)


def test_speech_end_timeout(speech):
    audio = np.concatenate([speech, silence(5.0, RATE)])
    outputs, engine = run(config(speech_end_timeout_s=2.0), split_bytes(to_linear16(audio), [1600]))
    assert events(outputs)[-1] is SpeechEventKind.SPEECH_ACTIVITY_TIMEOUT
    assert len(finals(outputs)) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_alternatives": 11}, "max_alternatives"),
        ({"beam_size": 2, "max_alternatives": 3}, "beam_size"),
        ({"audio": AudioFormat(Encoding.LINEAR16, 0, 1)}, "sample_rate_hertz"),
        ({"endpointing": EndpointSettings(aggressiveness=9)}, "vad_aggressiveness"),
        ({"speech_end_timeout_s": -1.0}, "voice_activity_timeout"),
    ],
)
def test_invalid_config(kwargs, message):
    with pytest.raises(InvalidConfig, match=message):
        StreamSession(CountingRecognizer(), config(**kwargs))


def test_close_is_idempotent_and_stops_work(speech):
    async def go():
        session = StreamSession(CountingRecognizer(), config(), "t")
        await session.accept_audio(to_linear16(speech[:RATE]))
        session.close()
        session.close()
        return await session.accept_audio(to_linear16(speech))

    assert asyncio.run(go()) == []

