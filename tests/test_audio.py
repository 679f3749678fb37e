"""service/pipeline/audio.py: every encoding decodes right, under any chunking."""
from __future__ import annotations

import io
import struct
import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import InvalidAudio, InvalidConfig, StreamTooLong
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


@pytest.mark.parametrize("sizes", [[1], [3, 5], [100000]])
def test_wav_file_sent_as_linear16_is_read_by_its_header(stereo, sizes):
    """What Google's samples do with a .wav: the header is not decoded as samples."""
    mono = stereo[:, 0]
    wav = to_container(mono, RATE, "WAV", "PCM_16")
    got = decode_all(AudioFormat(Encoding.LINEAR16, RATE, 1), split_bytes(wav, sizes))
    want = decode_all(AudioFormat(Encoding.ENCODING_UNSPECIFIED), [wav])
    assert len(want) == len(mono)
    np.testing.assert_array_equal(got, want)


def test_wav_file_sent_as_linear16_with_another_rate_is_invalid(stereo):
    wav = to_container(stereo[:, 0], RATE, "WAV", "PCM_16")
    with pytest.raises(InvalidAudio, match=r"sample_rate_hertz \(16000\) must either be omitted or match"):
        AudioDecoder(AudioFormat(Encoding.LINEAR16, 16000, 1)).process(wav)


def test_fewer_than_four_bytes_of_linear16_still_decode():
    decoder = AudioDecoder(AudioFormat(Encoding.LINEAR16, 16000, 1))
    assert len(decoder.process(b"\x00\x40\x00")) == 0
    assert decoder.flush()[:, 0].tolist() == [0.5]


def test_raw_audio_without_header_is_invalid():
    with pytest.raises(InvalidAudio, match="WAV or FLAC header"):
        AudioDecoder(AudioFormat(Encoding.ENCODING_UNSPECIFIED)).process(b"\x01\x02\x03\x04\x05")


def test_corrupt_flac_is_invalid():
    decoder = AudioDecoder(AudioFormat(Encoding.FLAC))
    decoder.process(b"fLaC" + bytes(range(200)))
    with pytest.raises(InvalidAudio, match="cannot decode FLAC"):
        decoder.flush()


def _wav_start(format_tag: int = 1, bits: int = 16) -> bytes:
    """RIFF/WAVE and a mono 16 kHz fmt chunk, no data chunk yet."""
    fmt = struct.pack("<HHIIHH", format_tag, 1, 16000, 16000 * bits // 8, bits // 8, bits)
    return b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt


@pytest.mark.parametrize("filler, message", [
    (b"\x00" * 4096, "among the first 64 chunks"),  # zeros read as empty 8-byte chunks
    (b"JUNK" + struct.pack("<I", 8 * 1024 * 1024), "in the first 1048576 bytes"),  # one huge metadata chunk
])
def test_wav_that_never_reaches_its_data_chunk_is_refused_early(filler, message):
    """Without a cap every message would be buffered and the whole buffer parsed again."""
    decoder = AudioDecoder(AudioFormat(Encoding.ENCODING_UNSPECIFIED))
    with pytest.raises(InvalidAudio, match=message):
        decoder.process(_wav_start() + filler)
        for _ in range(40):  # 40 x 64 KiB: more than the 1 MiB cap
            decoder.process(b"\x00" * 65536)


@pytest.mark.parametrize("junk_bytes, valid", [(900_000, True), (1_200_000, False)])
@pytest.mark.parametrize("piece", [65536, 10**7])
def test_the_wav_header_limit_depends_on_the_file_not_on_the_chunking(junk_bytes, valid, piece):
    samples = np.array([1000, -1000] * 800, "<i2").tobytes()
    data = (_wav_start() + b"JUNK" + struct.pack("<I", junk_bytes) + bytes(junk_bytes)
            + b"data" + struct.pack("<I", len(samples)) + samples)
    pieces = split_bytes(data, [piece])
    if valid:
        assert len(decode_all(AudioFormat(Encoding.ENCODING_UNSPECIFIED), pieces)) == 1600
    else:
        with pytest.raises(InvalidAudio, match="no WAV data chunk in the first 1048576 bytes"):
            decode_all(AudioFormat(Encoding.ENCODING_UNSPECIFIED), pieces)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_float_wav_with_non_finite_samples_is_invalid(bad):
    samples = np.array([0.0, 0.5, bad, -0.5], "<f4").tobytes()
    data = _wav_start(format_tag=3, bits=32) + b"data" + struct.pack("<I", len(samples)) + samples
    with pytest.raises(InvalidAudio, match="NaN or infinity"):
        decode_all(AudioFormat(Encoding.ENCODING_UNSPECIFIED), [data])


def test_flac_longer_than_the_limit_stops_decoding_at_the_limit():
    """Silence in FLAC compresses ~4000:1: the decoder must stop at the stream limit, not first
    expand the whole file (here 120 s of 8-channel 48 kHz audio, 184 MB as float32)."""
    buf = io.BytesIO()
    with soundfile.SoundFile(buf, "w", 48000, 8, format="FLAC") as f:
        for _ in range(120):
            f.write(np.zeros((48000, 8), np.float32))
    data = buf.getvalue()
    assert len(data) < 1_000_000
    decoder = AudioDecoder(AudioFormat(Encoding.FLAC), max_seconds=10.0)
    decoder.process(data)
    tracemalloc.start()
    try:
        with pytest.raises(StreamTooLong, match="maximum stream duration of 10 seconds"):
            decoder.flush()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40_000_000, peak  # the 10 s allowed are 15 MB as float32
    within = AudioDecoder(AudioFormat(Encoding.FLAC), max_seconds=121.0)
    within.process(data)
    assert within.flush().shape == (120 * 48000, 8)


def _flac_of_unknown_length(samples: np.ndarray) -> bytes:
    """FLAC as a streaming encoder writes it: total samples 0 in STREAMINFO (libsndfile then
    reports a length of 2**63 - 1, which a one-shot read tries to allocate)."""
    buf = io.BytesIO()
    soundfile.write(buf, samples, 16000, format="FLAC")
    data = bytearray(buf.getvalue())
    data[21] &= 0xF0  # STREAMINFO starts at byte 8; its last 36 bits before the MD5 are the length
    data[22:26] = bytes(4)
    return bytes(data)


def test_flac_of_unknown_length_is_a_clear_invalid_argument():
    """Before: libsndfile's length 2**63 - 1 went to numpy, whose ValueError became INTERNAL."""
    samples = (np.random.default_rng(0).random(16000 * 3) * 0.2 - 0.1).astype(np.float32)
    data = _flac_of_unknown_length(samples)
    with soundfile.SoundFile(io.BytesIO(data)) as f:
        assert f.frames > 2**40  # the case this test is about
    decoder = AudioDecoder(AudioFormat(Encoding.FLAC))
    decoder.process(data)
    with pytest.raises(InvalidAudio, match="header does not give the audio's length"):
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
