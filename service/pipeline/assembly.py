"""Result assembly: decoder hypotheses -> text, stable prefix, word times, confidences, alignment.

Word times come from the attention alignment: each character token's frame is the
argmax of its attention row; a word spans its first to its last token's frame
(40 ms per frame, plus the segment's offset in the stream).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from service.pipeline.decoder import Hyp, WindowedDecoder, alignment_matrix
from service.pipeline.model_info import ModelInfo
from service.pipeline.tokenizer import Tokenizer


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float  # stream time
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Alternative:
    text: str
    confidence: float
    words: list[WordTiming]


@dataclass(frozen=True)
class AttentionMatrix:
    tokens: list[str]
    weights: np.ndarray  # (n_tokens, n_frames) float32
    frame_shift_s: float
    offset_s: float


@dataclass(frozen=True)
class Hypothesis:
    text: str
    stable_text: str  # committed prefix: never changes later in this segment
    stability: float
    confidence: float
    words: list[WordTiming]
    alternatives: list[Alternative] = field(default_factory=list)
    attention: AttentionMatrix | None = None
    end_s: float = 0.0


class Assembler:
    """Shared and stateless: turns one segment's decoder state into a Hypothesis."""

    def __init__(self, info: ModelInfo, tokenizer: Tokenizer) -> None:
        self.info = info
        self.tok = tokenizer

    def alternative(self, hyp: Hyp, offset_s: float, audio_end_s: float = math.inf) -> Alternative:
        tokens, logps, frames = self._content(hyp)
        text = self.tok.decode(tokens)
        confidence = math.exp(float(np.mean(hyp.logps))) if hyp.logps else 0.0
        return Alternative(text, confidence, self._words(tokens, logps, frames, offset_s, audio_end_s))

    def partial(self, dec: WindowedDecoder, n_frames: int, offset_s: float) -> Hypothesis:
        """Mid-segment: the best active hypothesis's text and its committed prefix only.

        Partial results carry no words, confidences or alternatives (the finals do), and this
        runs for nearly every message of every stream, so nothing else is computed.
        """
        best = dec.partial()
        eos = self.tok.eos_id
        text = self.tok.decode([t for t in best.tokens if t != eos])
        stable = self.tok.decode([t for t in best.tokens[: dec.stable_length()] if t != eos])
        # A word is committed once its trailing space is: "hel" may still become "help".
        stable = stable[: stable.rfind(" ") + 1] if " " in stable else ""
        return Hypothesis(text, stable, 0.0, 0.0, [], end_s=offset_s + n_frames * self.info.frame_shift_s)

    def hypothesis(self, dec: WindowedDecoder, n_frames: int, offset_s: float, return_attention: bool,
                   audio_end_s: float = math.inf) -> Hypothesis:
        """The segment's final result: finished hypotheses ranked, with words, confidences, alternatives.

        audio_end_s: stream time of the segment's last sample. The last encoder frame may reach
        past it (features are padded to whole frames): no time given out goes beyond it.
        """
        ranked = dec.nbest()
        best = self.alternative(ranked[0], offset_s, audio_end_s)
        attention = None
        if return_attention:
            content = [t for t in ranked[0].tokens if t != self.tok.eos_id]
            attention = AttentionMatrix(self.tok.pieces(content), alignment_matrix(ranked[0], n_frames, self.tok.eos_id),
                                        self.info.frame_shift_s, offset_s)
        return Hypothesis(best.text, best.text, 0.9, best.confidence, best.words,
                          [best] + [self.alternative(h, offset_s, audio_end_s) for h in ranked[1:]], attention,
                          min(offset_s + n_frames * self.info.frame_shift_s, audio_end_s))

    def _content(self, hyp: Hyp) -> tuple[list[int], list[float], list[int]]:
        """Tokens without eos, their log-probs and their alignment frames.

        A token's frame is the running maximum of the attention argmax, the same position the
        decoder's window follows: a peak that falls back inside the window would otherwise give
        a word that starts before the previous one.
        """
        out_t, out_l, out_f = [], [], []
        frame = 0
        for t, lp, (start, weights) in zip(hyp.tokens, hyp.logps, hyp.align):
            if t != self.tok.eos_id:
                frame = max(frame, start + int(np.argmax(weights)))
                out_t.append(t)
                out_l.append(lp)
                out_f.append(frame)
        return out_t, out_l, out_f

    def _words(self, tokens: list[int], logps: list[float], frames: list[int], offset_s: float,
               audio_end_s: float = math.inf) -> list[WordTiming]:
        """Word times in order and without overlap: a word ends after its last token's frame, the next
        starts no earlier (tokens of two words may share a frame), and each lasts at least one frame
        where the audio leaves room: nothing goes past audio_end_s."""
        fs = self.info.frame_shift_s
        words, previous_end = [], 0  # frames
        for word, span in self.tok.word_spans(tokens):
            first = max(previous_end, frames[span[0]])  # frames never decrease (see _content)
            end = max(frames[span[-1]] + 1, first + 1)
            words.append(WordTiming(word, min(offset_s + first * fs, audio_end_s), min(offset_s + end * fs, audio_end_s),
                                    math.exp(float(np.mean([logps[j] for j in span])))))
            previous_end = end
        return words
