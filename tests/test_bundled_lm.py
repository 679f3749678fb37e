"""The bundled language model (service/models/default/lm.onnx): it pairs with the bundled
acoustic model, the service loads it by default, and it has learned English word order."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.config import BUNDLED_MODEL_DIR
from service.pipeline.lm import DEFAULT_LM_WEIGHT, LM_FILE, LmGraph
from service.pipeline.tokenizer import SOS_EOS

pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / LM_FILE).is_file(),
                                reason="the bundled model folder has no lm.onnx")

# Written for this test, so not in the LM's training text (which is generated, fortunes and WordNet).
SENTENCES = [
    "please send the report to my manager before noon",
    "the weather was cold so we stayed inside all day",
    "can you tell me where the nearest train station is",
    "she forgot her keys at the office again",
    "we need two more chairs for the meeting tomorrow",
]
BPE = Path(__file__).resolve().parent.parent / "model_export" / "checkpoints" / "bpe256.model"


def sentence_logprob(lm: LmGraph, ids: list[int], eos: int) -> float:
    """log P(ids + <eos> | <sos>), one ONNX step per token with carried state (as the decoder feeds it)."""
    h, c = lm.zero_state()[None], lm.zero_state()[None]
    total, prev = 0.0, eos  # <sos> and <eos> share one id
    for token in [*ids, eos]:
        out = lm.run({"token": np.array([prev], np.int64), "h": h, "c": c})
        total += float(out["lm_logp"][0, token])
        h, c, prev = out["lm_h"], out["lm_c"], token
    return total


def test_the_service_loads_the_bundled_lm_with_the_bundled_model():
    from service.recognizer import Recognizer

    rec = Recognizer.load(BUNDLED_MODEL_DIR, inference_threads=1)
    assert rec.lm is not None and rec.lm_weight == DEFAULT_LM_WEIGHT > 0
    off = Recognizer.load(BUNDLED_MODEL_DIR, inference_threads=1, lm_weight=0.0)
    assert off.lm is None and off.lm_weight == 0.0


def test_the_bundled_lm_prefers_english_word_order():
    """Each unseen sentence scores above the same words in reverse order: a random or broken LM
    gets about half of these wrong. Also per piece it is far better than guessing (~256 pieces)."""
    pytest.importorskip("sentencepiece")  # the [train] extra; the service itself never encodes text
    from model_export.bpe import BpeEncoder
    from service.pipeline.model_info import ModelInfo, create_session

    info = ModelInfo.from_session(create_session(BUNDLED_MODEL_DIR / "encoder.onnx"))
    lm = LmGraph.load(BUNDLED_MODEL_DIR, info.vocab)
    bpe = BpeEncoder(BPE)
    assert bpe.vocab == list(info.vocab), "the checkpoint BPE is the bundled model's"
    eos, encode = info.vocab.index(SOS_EOS), bpe.encode
    forward = [sentence_logprob(lm, encode(s), eos) for s in SENTENCES]
    backward = [sentence_logprob(lm, encode(" ".join(reversed(s.split()))), eos) for s in SENTENCES]
    assert all(f > b for f, b in zip(forward, backward)), list(zip(forward, backward))
    pieces = sum(len(encode(s)) + 1 for s in SENTENCES)
    assert np.exp(-sum(forward) / pieces) < 30, "per-piece perplexity on plain English"
