"""SegmentRecognizer: features -> streaming encoder -> windowed attention decoder for one segment.

All per-segment state lives here; the shared Recognizer (service/recognizer.py)
supplies the read-only graphs and the batched calls.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from service.pipeline.assembly import Hypothesis
from service.pipeline.decoder import DecodeOptions, WindowedDecoder
from service.pipeline.encoder import FeatureChunker, FrameStore
from service.pipeline.features import FeatureExtractor

if TYPE_CHECKING:
    from service.recognizer import Recognizer

__all__ = ["DecodeOptions", "Hypothesis", "SegmentRecognizer"]


class SegmentRecognizer:
    def __init__(self, recognizer: "Recognizer", offset_s: float, options: DecodeOptions) -> None:
        info = recognizer.info
        self._rec = recognizer
        self.offset_s = offset_s  # stream time of the segment's first sample
        self.options = options
        self.features = FeatureExtractor(info.features)
        self.chunker = FeatureChunker(info, recognizer.chunk_frames)
        self.frames = FrameStore(info)
        self.enc_state = recognizer.encoder.zero_state()
        self.decoder = WindowedDecoder(info, options, recognizer.lm.info if recognizer.lm is not None else None)
        self._emitted_tokens = 0
        self.samples = 0  # 16 kHz samples received

    async def accept(self, samples: np.ndarray) -> Hypothesis | None:
        """(N,) float32 [-1, 1] 16 kHz speech -> updated partial, or None if no new token."""
        self.samples += len(samples)
        chunks = self.chunker.push(self.features.process(samples))
        if not chunks:  # no new encoder frames: the decoder already did all it could (small messages)
            return None
        for chunk in chunks:
            await self._encode(chunk)
        await self._decode(ended=False)
        n_tokens = len(self.decoder.partial().tokens) if self.decoder.active or self.decoder.finished else 0
        if n_tokens == self._emitted_tokens:
            return None
        self._emitted_tokens = n_tokens
        return self._rec.assembler.partial(self.decoder, self.frames.length, self.offset_s)

    async def finish(self) -> Hypothesis:
        """End of segment: encode the remainder, decode to the end, return the final result."""
        chunks = self.chunker.push(self.features.flush())
        tail = self.chunker.flush()
        for chunk in chunks + ([tail] if tail is not None else []):
            await self._encode(chunk)
        await self._decode(ended=True)
        return self._rec.assembler.hypothesis(self.decoder, self.frames.length, self.offset_s,
                                              self.options.return_attention,
                                              self.offset_s + self.samples / self.features.config.sample_rate)

    async def _encode(self, chunk: np.ndarray) -> None:
        enc = self._rec.encoder
        outputs = await self._rec.encoder_batcher.submit(enc.inputs(chunk, self.enc_state))
        out, self.enc_state = enc.split(outputs)
        self.frames.append(out)

    async def _decode(self, ended: bool) -> None:
        while (req := self.decoder.next_step(self.frames, ended)) is not None:
            self.decoder.apply(req, await self._rec.decoder_batcher.submit(req.inputs))
