"""Streaming encoder: log-mel frames in fixed-size chunks through encoder.onnx with carried state.

The ONNX graph needs a multiple of `subsampling` (4) feature frames per call. Every
stream feeds it the same chunk size (`chunk_frames`, default 16 = 160 ms), so the
graph sees the same blocks whatever the network chunking was: streaming output is
bit-identical to an offline run, and equal-shaped chunks from many streams stack
into one batched call.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from service.pipeline.model_info import ModelInfo

ENCODER_OUTPUTS = ("frames", "ctc_logp", "keys")


@dataclass
class EncoderOutput:
    frames: np.ndarray  # (T', enc_dim) float32, one per 40 ms
    keys: np.ndarray  # (T', att_dim) attention keys
    ctc_logp: np.ndarray  # (T', V) CTC log-probs

    @classmethod
    def empty(cls, info: ModelInfo) -> "EncoderOutput":
        return cls(np.zeros((0, info.enc_dim), np.float32), np.zeros((0, info.att_dim), np.float32),
                   np.zeros((0, len(info.vocab)), np.float32))


class EncoderGraph:
    """Shared, stateless wrapper around the encoder session (thread-safe: ORT run is)."""

    def __init__(self, session: ort.InferenceSession, info: ModelInfo) -> None:
        self.session = session
        self.info = info
        self.state_names = tuple(info.encoder_states)
        self.output_names = [o.name for o in session.get_outputs()]

    def zero_state(self) -> dict[str, np.ndarray]:
        """Initial state of one stream, batch axis of size 1 included."""
        state = {}
        for name, spec in self.info.encoder_states.items():
            shape = list(spec.shape)
            shape.insert(spec.batch_axis, 1)
            state[name] = np.zeros(shape, np.float32)
        return state

    def inputs(self, feats: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(T, n_mels) chunk + state -> the graph's named inputs (batch of one)."""
        return {"feats": feats[None].astype(np.float32), **state}

    def batch_axes(self) -> dict[str, int]:
        axes = {"feats": 0, "frames": 0, "ctc_logp": 0, "keys": 0}
        for name, spec in self.info.encoder_states.items():
            axes[name] = axes[f"new_{name}"] = spec.batch_axis
        return axes

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))

    def split(self, outputs: dict[str, np.ndarray]) -> tuple[EncoderOutput, dict[str, np.ndarray]]:
        """Named outputs (batch of one) -> frames for the decoder and the next state."""
        out = EncoderOutput(outputs["frames"][0], outputs["keys"][0], outputs["ctc_logp"][0])
        return out, {n: outputs[f"new_{n}"] for n in self.state_names}


class FeatureChunker:
    """Per-segment buffer that cuts feature frames into fixed encoder chunks."""

    def __init__(self, info: ModelInfo, chunk_frames: int = 16) -> None:
        if chunk_frames % info.subsampling:
            raise ValueError(f"chunk_frames must be a multiple of {info.subsampling}")
        self.chunk_frames = chunk_frames
        self.subsampling = info.subsampling
        self._pending = np.zeros((0, info.features.num_mel_bins), np.float32)

    def push(self, feats: np.ndarray) -> list[np.ndarray]:
        """(T, n_mels) new frames -> zero or more (chunk_frames, n_mels) chunks ready to encode."""
        self._pending = np.concatenate([self._pending, feats]) if len(feats) else self._pending
        n_full = len(self._pending) // self.chunk_frames
        chunks = [self._pending[i * self.chunk_frames:(i + 1) * self.chunk_frames] for i in range(n_full)]
        self._pending = self._pending[n_full * self.chunk_frames:]
        return chunks

    def flush(self) -> np.ndarray | None:
        """End of segment: the remainder zero-padded to a multiple of `subsampling` (as in training)."""
        if not len(self._pending):
            return None
        padded_len = -(-len(self._pending) // self.subsampling) * self.subsampling
        out = np.zeros((padded_len, self._pending.shape[1]), np.float32)
        out[: len(self._pending)] = self._pending
        self._pending = self._pending[:0]
        return out


class FrameStore:
    """Encoder frames and keys of one segment, growing as chunks are encoded."""

    def __init__(self, info: ModelInfo) -> None:
        self._frames = np.zeros((64, info.enc_dim), np.float32)
        self._keys = np.zeros((64, info.att_dim), np.float32)
        self._ctc = np.zeros((64, len(info.vocab)), np.float32)
        self.length = 0  # encoder frames available (40 ms each)

    def append(self, out: EncoderOutput) -> None:
        n = len(out.frames)
        while self.length + n >= len(self._frames):  # amortized doubling; the last row stays zero
            self._frames = np.concatenate([self._frames, np.zeros_like(self._frames)])
            self._keys = np.concatenate([self._keys, np.zeros_like(self._keys)])
            self._ctc = np.concatenate([self._ctc, np.zeros_like(self._ctc)])
        self._frames[self.length:self.length + n] = out.frames
        self._keys[self.length:self.length + n] = out.keys
        self._ctc[self.length:self.length + n] = out.ctc_logp
        self.length += n

    def windows(self, starts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames [s, s + size) for each start s (K,), zero outside [0, length):
        (K, W, D) frames, (K, W, A) keys, (K, W) valid bool."""
        idx = starts[:, None] + np.arange(size)
        valid = (idx >= 0) & (idx < self.length)
        idx = np.where(valid, idx, len(self._frames) - 1)  # the last buffer row is never filled: zeros
        return self._frames[idx], self._keys[idx], valid

    def ctc_logp(self) -> np.ndarray:
        """(T', V) CTC log-probs of the whole segment so far (a view: valid until the next append)."""
        return self._ctc[: self.length]


def encode_offline(graph: EncoderGraph, audio: np.ndarray, chunk_frames: int = 16) -> FrameStore:
    """A whole segment through features and the encoder in the same fixed chunks as streaming.

    (N,) float32 16 kHz -> FrameStore with every encoder frame; bit-identical to a streamed run.
    """
    from service.pipeline.features import FeatureExtractor  # features -> encoder is the pipeline order

    info = graph.info
    fe, chunker = FeatureExtractor(info.features), FeatureChunker(info, chunk_frames)
    store, state = FrameStore(info), graph.zero_state()
    chunks = chunker.push(np.concatenate([fe.process(audio), fe.flush()]))
    tail = chunker.flush()
    for chunk in chunks + ([tail] if tail is not None else []):
        out, state = graph.split(graph.run(graph.inputs(chunk, state)))
        store.append(out)
    return store
