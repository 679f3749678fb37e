"""Character vocabulary shared by training and serving.

Ids: 0 = CTC blank, 1 = <sos/eos>, then space, apostrophe and a..z. The model file's
metadata carries the list, so a model trained on another alphabet loads unchanged.
"""
from __future__ import annotations

import string
from collections.abc import Sequence

BLANK = "<blank>"
SOS_EOS = "<sos/eos>"
DEFAULT_VOCAB: tuple[str, ...] = (BLANK, SOS_EOS, " ", "'", *string.ascii_lowercase)


class CharTokenizer:
    def __init__(self, vocab: Sequence[str] = DEFAULT_VOCAB) -> None:
        self.vocab = tuple(vocab)
        self.blank_id = self.vocab.index(BLANK)
        self.eos_id = self.vocab.index(SOS_EOS)
        self.sos_id = self.eos_id
        self._ids = {s: i for i, s in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Characters outside the vocabulary are dropped (text is normalized upstream)."""
        return [self._ids[ch] for ch in text if ch in self._ids and self._ids[ch] > self.eos_id]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids if i > self.eos_id)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.vocab[i] for i in ids]
