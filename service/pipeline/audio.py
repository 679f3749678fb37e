"""Audio decoding: request bytes -> (N, C) float32 samples in [-1, 1].

Raw codecs (LINEAR16, MULAW, ALAW) and WAV files are decoded as they stream
(a WAV file sent as LINEAR16/MULAW/ALAW is read as WAV: its header must agree with the config):
each message may hold any number of bytes, including half a sample or half a
multi-channel frame; the remainder is carried to the next message, so any
chunking of the bytes gives the same samples.

FLAC and OGG_OPUS (and FLAC found by ENCODING_UNSPECIFIED) are compressed
containers whose decoder (libsndfile) needs the whole stream: their bytes are
buffered and decoded at the end of the stream (``flush``). Streaming them frame
by frame would need a push-style FLAC/Opus decoder we do not have; clients that
want partial results while speaking should send LINEAR16, MULAW, ALAW or WAV.
The buffer is bounded (``max_buffer_bytes``).
"""
from __future__ import annotations

import enum
import io
import struct
from dataclasses import dataclass

import numpy as np
import soundfile

from service.errors import InvalidAudio, InvalidConfig, StreamTooLong

MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 48000
MAX_CHANNELS = 8
# About an hour of 16 kHz mono FLAC, or 9 minutes of 48 kHz stereo 16-bit WAV-in-FLAC.
DEFAULT_MAX_BUFFER_BYTES = 128 * 1024 * 1024
# Real WAV files put at most a few metadata chunks (LIST, bext, iXML, JUNK) before the samples;
# bytes that never reach a data chunk would otherwise be buffered and re-parsed without end.
MAX_WAV_HEADER_BYTES = 1024 * 1024
MAX_WAV_CHUNKS = 64


class Encoding(enum.Enum):
    """Audio encodings the decoder understands (names as in the proto's AudioEncoding)."""

    ENCODING_UNSPECIFIED = "ENCODING_UNSPECIFIED"  # read the header: WAV (RIFF) or FLAC
    LINEAR16 = "LINEAR16"
    MULAW = "MULAW"
    ALAW = "ALAW"
    FLAC = "FLAC"
    OGG_OPUS = "OGG_OPUS"


@dataclass(frozen=True)
class AudioFormat:
    """What the client declared. ``sample_rate_hz``/``channels`` of 0 mean "from the header"."""

    encoding: Encoding
    sample_rate_hz: int = 0
    channels: int = 0

    @property
    def has_header(self) -> bool:
        return self.encoding in (Encoding.ENCODING_UNSPECIFIED, Encoding.FLAC, Encoding.OGG_OPUS)

    def validate(self) -> None:
        """Raise InvalidConfig when the declared format cannot be decoded."""
        if not self.has_header and not self.sample_rate_hz:
            raise InvalidConfig(f"sample_rate_hertz is required for {self.encoding.value} audio")
        if self.sample_rate_hz:
            check_sample_rate(self.sample_rate_hz, InvalidConfig)
        if not 0 <= self.channels <= MAX_CHANNELS:
            raise InvalidConfig(f"audio_channel_count must be 1..{MAX_CHANNELS}, got {self.channels}")


def check_sample_rate(rate: int, error: type[Exception]) -> None:
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise error(f"sample rate must be {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz, got {rate}")


def _mulaw_table() -> np.ndarray:
    """G.711 mu-law byte -> float32 (the standard 14-bit expansion, scaled to [-1, 1])."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(u & 0x80, -magnitude, magnitude) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    """G.711 A-law byte -> float32 (the standard 13-bit expansion, scaled to [-1, 1])."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return (np.where(a & 0x80, magnitude, -magnitude) / 32768.0).astype(np.float32)


_MULAW = _mulaw_table()
_ALAW = _alaw_table()


class SampleCodec(enum.Enum):
    """Fixed-size sample formats that decode sample by sample."""

    S16 = "s16"  # 16-bit signed little-endian
    U8 = "u8"  # 8-bit unsigned (WAV)
    S24 = "s24"
    S32 = "s32"
    F32 = "f32"  # IEEE float (WAV)
    MULAW = "mulaw"  # G.711
    ALAW = "alaw"  # G.711

    @property
    def width(self) -> int:
        """Bytes per sample."""
        return _SAMPLE_WIDTH[self]

    def decode(self, data: bytes) -> np.ndarray:
        """Whole samples only: len(data) % width == 0 -> (len/width,) float32."""
        if self is SampleCodec.S16:
            return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self is SampleCodec.MULAW:
            return _MULAW[np.frombuffer(data, dtype=np.uint8)]
        if self is SampleCodec.ALAW:
            return _ALAW[np.frombuffer(data, dtype=np.uint8)]
        if self is SampleCodec.U8:
            return (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        if self is SampleCodec.S32:
            return (np.frombuffer(data, dtype="<i4") / 2147483648.0).astype(np.float32)
        if self is SampleCodec.F32:
            samples = np.frombuffer(data, dtype="<f4")
            if not np.isfinite(samples).all():
                raise InvalidAudio("float WAV samples include NaN or infinity; send finite samples in [-1, 1]")
            return np.clip(samples, -1.0, 1.0).astype(np.float32)
        # S24: sign-extend three little-endian bytes into int32.
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value & 0x800000, value - (1 << 24), value)
        return (value / 8388608.0).astype(np.float32)


_SAMPLE_WIDTH = {
    SampleCodec.S16: 2,
    SampleCodec.U8: 1,
    SampleCodec.S24: 3,
    SampleCodec.S32: 4,
    SampleCodec.F32: 4,
    SampleCodec.MULAW: 1,
    SampleCodec.ALAW: 1,
}


class PcmStream:
    """Interleaved fixed-size samples -> (N, C) float32, carrying partial frames between calls."""

    def __init__(self, codec: SampleCodec, channels: int) -> None:
        self.codec = codec
        self.channels = channels
        self._frame_bytes = codec.width * channels
        self._carry = b""

    def process(self, data: bytes) -> np.ndarray:
        data = self._carry + data
        usable = len(data) - len(data) % self._frame_bytes
        self._carry = data[usable:]
        return self.codec.decode(data[:usable]).reshape(-1, self.channels)

    @property
    def pending_bytes(self) -> int:
        return len(self._carry)


@dataclass(frozen=True)
class WavHeader:
    codec: SampleCodec
    sample_rate_hz: int
    channels: int
    data_bytes: int | None  # None: unknown (streaming writers), read to the end


_WAV_FORMATS = {1: "pcm", 3: "float", 6: "alaw", 7: "mulaw"}


def _wav_codec(format_tag: int, bits: int) -> SampleCodec:
    kind = _WAV_FORMATS.get(format_tag)
    table = {
        ("pcm", 8): SampleCodec.U8,
        ("pcm", 16): SampleCodec.S16,
        ("pcm", 24): SampleCodec.S24,
        ("pcm", 32): SampleCodec.S32,
        ("float", 32): SampleCodec.F32,
        ("alaw", 8): SampleCodec.ALAW,
        ("mulaw", 8): SampleCodec.MULAW,
    }
    codec = table.get((kind, bits))
    if codec is None:
        raise InvalidAudio(
            f"unsupported WAV sample format (format tag {format_tag}, {bits} bits); "
            "use 8/16/24/32-bit PCM, 32-bit float, A-law or mu-law"
        )
    return codec


def parse_wav_header(data: bytes) -> tuple[WavHeader, int] | None:
    """Parse RIFF/WAVE up to the start of the data chunk.

    Returns (header, offset of the first sample byte), or None when more bytes are needed.
    """
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InvalidAudio("not a RIFF/WAVE file")
    pos, fmt = 12, None
    for _ in range(MAX_WAV_CHUNKS):
        if len(data) < pos + 8:
            return None
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"data":
            if fmt is None:
                raise InvalidAudio("WAV data chunk before the fmt chunk")
            unknown = size in (0, 0xFFFFFFFF)  # written before the length was known
            return WavHeader(fmt[0], fmt[1], fmt[2], None if unknown else size), body
        if body + size > MAX_WAV_HEADER_BYTES:  # by the file's layout, not by how its bytes arrive
            raise InvalidAudio(f"no WAV data chunk in the first {MAX_WAV_HEADER_BYTES} bytes; is this a WAV file?")
        if len(data) < body + size:
            return None
        if chunk_id == b"fmt ":
            fmt = _parse_fmt_chunk(data[body : body + size])
        pos = body + size + (size & 1)  # chunks are padded to even sizes
    raise InvalidAudio(f"no WAV data chunk among the first {MAX_WAV_CHUNKS} chunks; is this a WAV file?")


def _parse_fmt_chunk(body: bytes) -> tuple[SampleCodec, int, int]:
    if len(body) < 16:
        raise InvalidAudio("truncated WAV fmt chunk")
    format_tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if format_tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag in the GUID
        format_tag = struct.unpack_from("<H", body, 24)[0]
    if not 1 <= channels <= MAX_CHANNELS:  # checked here: 0 channels would divide by zero in PcmStream
        raise InvalidAudio(f"WAV header says {channels} channels; 1..{MAX_CHANNELS} are supported")
    return _wav_codec(format_tag, bits), rate, channels


class WavStream:
    """Streaming WAV: buffer until the data chunk starts, then decode like raw PCM."""

    def __init__(self) -> None:
        self._head = b""
        self._pcm: PcmStream | None = None
        self._remaining: int | None = None  # data bytes still expected (None: until the end)
        self.header: WavHeader | None = None

    def process(self, data: bytes) -> np.ndarray | None:
        """Returns (N, C) float32, or None while the header is incomplete."""
        if self._pcm is None:
            self._head += data
            parsed = parse_wav_header(self._head)  # raises past MAX_WAV_HEADER_BYTES: the buffer stays bounded
            if parsed is None:
                return None
            self.header, offset = parsed
            self._pcm = PcmStream(self.header.codec, self.header.channels)
            self._remaining = self.header.data_bytes
            data, self._head = self._head[offset:], b""
        if self._remaining is not None:
            # Trailing chunks after the samples (LIST, id3) are not audio.
            data, self._remaining = data[: self._remaining], max(0, self._remaining - len(data))
        return self._pcm.process(data)


class ContainerBuffer:
    """FLAC / Ogg Opus: collect the bytes, decode everything at the end (see module doc)."""

    def __init__(self, kind: str, max_bytes: int) -> None:
        self.kind = kind
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0

    def process(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_bytes:
            raise StreamTooLong(
                f"{self.kind} audio is decoded at the end of the stream and is limited to "
                f"{self._max_bytes} bytes; send LINEAR16 for longer streams"
            )
        self._chunks.append(data)

    def decode(self, max_seconds: float = float("inf")) -> tuple[np.ndarray, int]:
        """Returns ((N, C) float32, sample rate). Raises InvalidAudio on corrupt data and
        StreamTooLong, before decoding, when the header's length is over max_seconds (silence in
        FLAC compresses about 4000:1: decoding first would expand it all into memory)."""
        data = b"".join(self._chunks)
        self._chunks = []
        if not data:
            return np.zeros((0, 1), np.float32), 0
        try:
            with soundfile.SoundFile(io.BytesIO(data)) as f:
                if not 0 <= f.frames < 2**40:
                    # libsndfile reports 2**63 - 1 and cannot read such a file from memory
                    raise InvalidAudio(f"the {self.kind} header does not give the audio's length (written to a "
                                       "pipe?); send a complete file, or LINEAR16")
                if f.frames > max_seconds * f.samplerate:  # refused before anything is expanded
                    raise StreamTooLong(f"exceeded the maximum stream duration of {max_seconds:g} seconds of "
                                        "audio; send shorter audio")
                return f.read(dtype="float32", always_2d=True), int(f.samplerate)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
            raise InvalidAudio(f"cannot decode {self.kind} audio: {err}") from None


def sniff_container(head: bytes) -> str | None:
    """'wav', 'flac', 'ogg', or None when more bytes are needed. Raises on unknown headers."""
    if len(head) < 4:
        return None
    if head[:4] == b"RIFF":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    raise InvalidAudio(
        "encoding ENCODING_UNSPECIFIED needs a WAV or FLAC header, and the audio has neither; "
        "set encoding (e.g. LINEAR16) and sample_rate_hertz for raw audio"
    )


class AudioDecoder:
    """Per-stream decoder: bytes in any chunking -> (N, C) float32 in [-1, 1].

    ``sample_rate_hz`` and ``channels`` are known from the config for raw codecs
    and from the header for containers (None until then). Output is always
    2-D with ``channels`` columns; an empty (0, C) array when nothing is ready.
    """

    def __init__(self, fmt: AudioFormat, max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
                 max_seconds: float = float("inf")) -> None:
        fmt.validate()
        self.format = fmt
        self._max_buffer_bytes = max_buffer_bytes
        self._max_seconds = max_seconds  # of buffered containers: checked while decoding
        self._head = b""  # bytes seen before the container kind is known
        self._stream: PcmStream | WavStream | ContainerBuffer | None = None
        self.sample_rate_hz: int | None = None
        self.channels: int | None = None
        raw = {Encoding.LINEAR16: SampleCodec.S16, Encoding.MULAW: SampleCodec.MULAW, Encoding.ALAW: SampleCodec.ALAW}
        self._raw_codec = raw.get(fmt.encoding)  # decided at the first 4 bytes: a WAV file may come with them
        if self._raw_codec is not None:
            self._set_format(fmt.sample_rate_hz, fmt.channels or 1)
        elif fmt.encoding is Encoding.FLAC:
            self._stream = ContainerBuffer("FLAC", max_buffer_bytes)
        elif fmt.encoding is Encoding.OGG_OPUS:
            self._stream = ContainerBuffer("OGG_OPUS", max_buffer_bytes)

    @property
    def buffers_until_end(self) -> bool:
        """True for containers decoded only at flush (no partial results while streaming)."""
        return isinstance(self._stream, ContainerBuffer)

    def process(self, data: bytes) -> np.ndarray:
        """Bytes (any length) -> (N, C) float32 decoded so far."""
        if self._stream is None and self._raw_codec is not None:
            # Google's own samples send whole .wav files as LINEAR16: read the header (its rate
            # must match the config) instead of decoding it as 22 samples of noise.
            self._head += data
            if len(self._head) < 4:
                return self._empty()
            data, self._head = self._head, b""
            self._stream = WavStream() if data[:4] == b"RIFF" else PcmStream(self._raw_codec, self.channels)
            self._raw_codec = None
        if self._stream is None:
            self._head += data
            kind = sniff_container(self._head)
            if kind is None:
                return self._empty()
            self._stream = WavStream() if kind == "wav" else ContainerBuffer(kind.upper(), self._max_buffer_bytes)
            data, self._head = self._head, b""
        if isinstance(self._stream, ContainerBuffer):
            self._stream.process(data)
            return self._empty()
        if isinstance(self._stream, WavStream):
            fresh = self._stream.header is None
            samples = self._stream.process(data)
            if samples is None:
                return self._empty()
            if fresh:
                header = self._stream.header
                self._set_format(header.sample_rate_hz, header.channels)
            return samples
        return self._stream.process(data)

    def flush(self) -> np.ndarray:
        """End of stream: decode buffered containers; a trailing partial frame is dropped."""
        if self._stream is None:
            if self._head and self._raw_codec is not None:  # fewer than 4 bytes of raw audio
                self._stream = PcmStream(self._raw_codec, self.channels)
                samples, self._head = self._stream.process(self._head), b""
                return samples  # a trailing partial frame is dropped, as below
            if self._head:
                raise InvalidAudio(f"audio too short to hold a header ({len(self._head)} bytes)")
            return self._empty()
        if isinstance(self._stream, WavStream) and self._stream.header is None:
            raise InvalidAudio("WAV header incomplete at the end of the stream")
        if not isinstance(self._stream, ContainerBuffer):
            return self._empty()
        samples, rate = self._stream.decode(self._max_seconds)
        if not len(samples):
            return self._empty()
        self._set_format(rate, samples.shape[1])
        return samples

    def _set_format(self, rate: int, channels: int) -> None:
        """Check a header's (or the config's) rate and channel count against the config."""
        check_sample_rate(rate, InvalidAudio)
        if not 1 <= channels <= MAX_CHANNELS:
            raise InvalidAudio(f"audio has {channels} channels; 1..{MAX_CHANNELS} are supported")
        declared = self.format.sample_rate_hz
        if declared and declared != rate:
            raise InvalidAudio(
                f"sample_rate_hertz ({declared}) must either be omitted or match the audio header ({rate})"
            )
        if self.format.channels and self.format.channels != channels:
            raise InvalidAudio(
                f"audio_channel_count ({self.format.channels}) must either be omitted or match the audio header ({channels})"
            )
        self.sample_rate_hz, self.channels = rate, channels

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.channels or 1), np.float32)
