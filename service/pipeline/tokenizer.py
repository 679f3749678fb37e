"""Output vocabulary shared by training and serving: characters or sentencepiece BPE pieces.

Ids: 0 = CTC blank, 1 = <sos/eos>, then the pieces. A BPE piece starting with "▁"
begins a word (sentencepiece convention); in a character vocabulary the space is a
token of its own. The serving side only maps ids back to text and words, so it needs
the piece list alone (from the model's metadata), not the sentencepiece library.
"""
from __future__ import annotations

import string
from collections.abc import Sequence

BLANK = "<blank>"
SOS_EOS = "<sos/eos>"
WORD_START = "▁"  # sentencepiece's word-boundary mark
CHAR_VOCAB: tuple[str, ...] = (BLANK, SOS_EOS, " ", "'", *string.ascii_lowercase)


class Tokenizer:
    def __init__(self, vocab: Sequence[str] = CHAR_VOCAB) -> None:
        self.vocab = tuple(vocab)
        self.blank_id = self.vocab.index(BLANK)
        self.eos_id = self.vocab.index(SOS_EOS)
        self.sos_id = self.eos_id
        self.is_bpe = any(p.startswith(WORD_START) for p in self.vocab)
        self._ids = {s: i for i, s in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def encode_chars(self, text: str) -> list[int]:
        """Character vocabularies only (BPE encoding needs sentencepiece: model_export/bpe.py)."""
        return [self._ids[ch] for ch in text if ch in self._ids and self._ids[ch] > self.eos_id]

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.vocab[i] for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        text = "".join(self.vocab[i] for i in ids if i > self.eos_id)
        return " ".join(text.replace(WORD_START, " ").split()) if self.is_bpe else text

    def word_spans(self, ids: Sequence[int]) -> list[tuple[str, list[int]]]:
        """Words of a token sequence with the positions (into `ids`) of their tokens."""
        words: list[tuple[str, list[int]]] = []
        current: list[int] = []
        for pos, i in enumerate(ids):
            if i <= self.eos_id:
                continue
            piece = self.vocab[i]
            starts_word = piece.startswith(WORD_START) if self.is_bpe else False
            if (starts_word or piece == " ") and current:
                words.append((self.decode([ids[p] for p in current]), current))
                current = []
            if piece != " " and piece != WORD_START:
                current.append(pos)
            elif piece == WORD_START:
                current.append(pos)
        if current:
            words.append((self.decode([ids[p] for p in current]), current))
        return [(w, span) for w, span in words if w]


