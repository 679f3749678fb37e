"""service/pipeline/audio.py: every encoding decodes right, under any chunking."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import InvalidAudio, InvalidConfig
from service.pipeline.audio import AudioDecoder, AudioFormat, Encoding
from tests.speech_audio import split_bytes, synthesize, to_container, to_linear16

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # reference G.711 codec (stdlib until Python 3.13)

RATE = 8000


@pytest.fixture(scope="module")
def stereo() -> np.ndarray:
    left = synthesize("one two three", RATE)
    right = 0.5 * left[::-1].copy()
    return np.stack([left, right], axis=1)  # (N, 2)


def decode_all(fmt: AudioFormat, pieces: list[bytes]) -> np.ndarray:
    decoder = AudioDecoder(fmt)
    out = [decoder.process(p) for p in pieces] + [decoder.flush()]
    # Before a header is read the channel count is unknown: empty (0, 1) outputs.
    return np.concatenate([o for o in out if len(o)], axis=0)


def encodings(stereo: np.ndarray) -> dict[str, tuple[AudioFormat, bytes]]:
    pcm = to_linear16(stereo)
    return {
        "linear16": (AudioFormat(Encoding.LINEAR16, RATE, 2), pcm),
        "mulaw": (AudioFormat(Encoding.MULAW, RATE, 2), audioop.lin2ulaw(pcm, 2)),
        "alaw": (AudioFormat(Encoding.ALAW, RATE, 2), audioop.lin2alaw(pcm, 2)),
        "wav": (AudioFormat(Encoding.ENCODING_UNSPECIFIED), to_container(stereo, RATE, "WAV", "PCM_16")),
        "wav_float": (AudioFormat(Encoding.ENCODING_UNSPECIFIED), to_container(stereo, RATE, "WAV", "FLOAT")),
        "wav_24": (AudioFormat(Encoding.ENCODING_UNSPECIFIED), to_container(stereo, RATE, "WAV", "PCM_24")),
        "wav_ulaw": (AudioFormat(Encoding.ENCODING_UNSPECIFIED), to_container(stereo, RATE, "WAV", "ULAW")),
        "flac_sniffed": (AudioFormat(Encoding.ENCODING_UNSPECIFIED), to_container(stereo, RATE, "FLAC")),
        "flac": (AudioFormat(Encoding.FLAC, RATE), to_container(stereo, RATE, "FLAC")),
        "opus": (AudioFormat(Encoding.OGG_OPUS), to_container(stereo, RATE, "OGG", "OPUS")),
    }


@pytest.mark.parametrize(
    "name", ["linear16", "mulaw", "alaw", "wav", "wav_float", "wav_24", "wav_ulaw", "flac_sniffed", "flac"]
)
def test_decodes_close_to_source(stereo, name):
    fmt, data = encodings(stereo)[name]
    out = decode_all(fmt, [data])
    assert out.shape == stereo.shape
    # G.711 is 8-bit logarithmic: a few % error on loud samples; the rest is near exact.
    tolerance = 0.05 if name in ("mulaw", "alaw", "wav_ulaw") else 1e-3
    assert np.abs(out - stereo).max() < tolerance


def test_opus_decodes_to_speech(stereo):
    fmt, data = encodings(stereo)["opus"]
    decoder = AudioDecoder(fmt)
    assert decoder.process(data).shape == (0, 1)  # buffered until the end
    out = decoder.flush()
    assert out.shape[1] == 2 and len(out) > 0.9 * len(stereo) * decoder.sample_rate_hz / RATE
    assert 8000 <= decoder.sample_rate_hz <= 48000


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8), data=st.data())
def test_chunking_invariance(stereo, sizes, data):
    """Any split of the bytes (odd sizes, half frames, half headers) gives the same samples."""
    name = data.draw(st.sampled_from(["linear16", "mulaw", "alaw", "wav", "wav_24", "flac_sniffed"]))
    fmt, payload = encodings(stereo)[name]
    whole = decode_all(fmt, [payload])
    chunked = decode_all(fmt, split_bytes(payload, sizes))
    np.testing.assert_array_equal(whole, chunked)


def test_odd_byte_split_across_messages():
    samples = np.array([[0.5], [-0.25], [0.125]], np.float32)
    data = to_linear16(samples)
    decoder = AudioDecoder(AudioFormat(Encoding.LINEAR16, 16000, 1))
    assert len(decoder.process(data[:1])) == 0  # half a sample
    assert len(decoder.process(data[1:5])) == 2  # completes sample 0, sample 1, half of 2
    rest = decoder.process(data[5:])
    assert len(rest) == 1
    assert abs(rest[0, 0] - 0.125) < 1e-4


def test_wav_header_sets_rate_and_channels(stereo):
    decoder = AudioDecoder(AudioFormat(Encoding.ENCODING_UNSPECIFIED))
    data = to_container(stereo, RATE, "WAV", "PCM_16")
    assert decoder.sample_rate_hz is None
    decoder.process(data[:30])  # header not complete yet
    assert decoder.sample_rate_hz is None
    decoder.process(data[30:])
    assert (decoder.sample_rate_hz, decoder.channels) == (RATE, 2)


def test_wav_trailing_chunk_is_not_audio(stereo):
    data = to_container(stereo[:, 0], RATE, "WAV", "PCM_16") + b"LIST" + (4).to_bytes(4, "little") + b"abcd"
    out = decode_all(AudioFormat(Encoding.ENCODING_UNSPECIFIED), [data])
    assert len(out) == len(stereo)


def test_header_rate_mismatch_is_invalid(stereo):
    data = to_container(stereo, RATE, "WAV", "PCM_16")
    with pytest.raises(InvalidAudio, match="must either be omitted or match"):
        AudioDecoder(AudioFormat(Encoding.ENCODING_UNSPECIFIED, 16000)).process(data)


def test_raw_audio_without_header_is_invalid():
    with pytest.raises(InvalidAudio, match="WAV or FLAC header"):
        AudioDecoder(AudioFormat(Encoding.ENCODING_UNSPECIFIED)).process(b"\x01\x02\x03\x04\x05")


def test_corrupt_flac_is_invalid():
    decoder = AudioDecoder(AudioFormat(Encoding.FLAC))
    decoder.process(b"fLaC" + bytes(range(200)))
    with pytest.raises(InvalidAudio, match="cannot decode FLAC"):
        decoder.flush()


@pytest.mark.parametrize(
    "fmt, message",
    [
        (AudioFormat(Encoding.LINEAR16, 0, 1), "sample_rate_hertz is required"),
        (AudioFormat(Encoding.LINEAR16, 4000, 1), "8000..48000"),
        (AudioFormat(Encoding.MULAW, 96000, 1), "8000..48000"),
        (AudioFormat(Encoding.ALAW, 8000, 9), "1..8"),
    ],
)
def test_bad_format_is_invalid_config(fmt, message):
    with pytest.raises(InvalidConfig, match=message):
        AudioDecoder(fmt)


@pytest.mark.parametrize("channels", [1, 3, 8])
def test_channel_counts(channels):
    rng = np.random.default_rng(channels)
    samples = (rng.uniform(-0.5, 0.5, size=(480, channels))).astype(np.float32)
    out = decode_all(AudioFormat(Encoding.LINEAR16, 48000, channels), [to_linear16(samples)])
    assert out.shape == (480, channels)
    assert np.abs(out - samples).max() < 1e-4
