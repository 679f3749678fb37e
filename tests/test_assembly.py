"""Result assembly: word times from the attention alignment."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from service.pipeline.assembly import Assembler
from service.pipeline.tokenizer import Tokenizer


@pytest.fixture()
def assembler() -> Assembler:
    return Assembler(SimpleNamespace(frame_shift_s=0.04), Tokenizer())  # character vocabulary


def test_words_sharing_a_frame_neither_overlap_nor_nest(assembler):
    """'left at to': the last token of 'left', all of 'at' and the first of 'to' were aligned to
    frame 12 (the running maximum of attention peaks often repeats a frame). Before: 'at' lay
    inside 'left' (4.61-4.93 s / 4.89-4.93 s in a real stream)."""
    tok = assembler.tok
    tokens = tok.encode_chars("left at to")
    frames = [9, 10, 11, 12, 12, 12, 12, 12, 12, 14]
    words = assembler._words(tokens, [-0.1] * len(tokens), frames, offset_s=1.0)
    assert [w.word for w in words] == ["left", "at", "to"]
    spans = [(round(w.start_s, 3), round(w.end_s, 3)) for w in words]
    assert spans == [(1.36, 1.52), (1.52, 1.56), (1.56, 1.6)]
    for before, after in zip(words, words[1:]):
        assert before.end_s <= after.start_s
    assert all(w.end_s - w.start_s >= 0.04 - 1e-9 for w in words)


def test_separate_words_keep_their_own_frames(assembler):
    tokens = assembler.tok.encode_chars("go on")
    words = assembler._words(tokens, [-0.1] * len(tokens), [2, 3, 5, 8, 9], offset_s=0.0)
    assert [(w.word, round(w.start_s, 2), round(w.end_s, 2)) for w in words] == [("go", 0.08, 0.16), ("on", 0.32, 0.4)]


def test_no_time_goes_past_the_segment_audio(assembler):
    """The last encoder frame may reach past the last sample (features padded to whole 40 ms
    frames): 'go on' aligned to frames up to 14 (0.60 s) in a segment of 0.57 s of audio."""
    tokens = assembler.tok.encode_chars("go on")
    words = assembler._words(tokens, [-0.1] * len(tokens), [2, 3, 5, 13, 14], offset_s=1.0, audio_end_s=1.57)
    assert [(w.word, round(w.start_s, 2), round(w.end_s, 2)) for w in words] == [("go", 1.08, 1.16), ("on", 1.52, 1.57)]
