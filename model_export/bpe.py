"""Sentencepiece BPE for training: learn pieces from transcripts, encode text to model ids.

Model ids = [<blank>, <sos/eos>] + sentencepiece pieces without <unk> (the corpus
alphabet is closed, so <unk> never occurs). The serving side only needs the list.
"""
from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from service.pipeline.tokenizer import BLANK, SOS_EOS, Tokenizer


class BpeEncoder:
    def __init__(self, model_file: Path) -> None:
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.vocab = [BLANK, SOS_EOS] + [self.sp.id_to_piece(i) for i in range(1, self.sp.get_piece_size())]
        self.tokenizer = Tokenizer(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(text) if i > 0]


def train_bpe(texts: list[str], prefix: Path, vocab_size: int) -> BpeEncoder:
    """Learn `vocab_size` pieces (incl. <unk>) from `texts`; writes prefix.model / prefix.vocab."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    if not prefix.with_suffix(".model").exists():
        spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(prefix), vocab_size=vocab_size,
                                       model_type="bpe", character_coverage=1.0, unk_id=0, bos_id=-1, eos_id=-1,
                                       pad_id=-1, minloglevel=2)
    return BpeEncoder(prefix.with_suffix(".model"))


class CharEncoder:
    def __init__(self) -> None:
        self.tokenizer = Tokenizer()
        self.vocab = list(self.tokenizer.vocab)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode_chars(text)
