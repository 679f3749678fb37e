"""Language model for shallow fusion: training, ONNX parity, and fused decoding that still streams."""
from __future__ import annotations

import asyncio
import json
import math
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model_export import lm as lm_train  # noqa: E402
from service.pipeline.decoder import DecodeOptions, decode_offline  # noqa: E402
from service.pipeline.encoder import encode_offline  # noqa: E402
from service.pipeline.lm import LmGraph  # noqa: E402
from service.pipeline.model_info import ModelFileError, create_session  # noqa: E402
from service.pipeline.tokenizer import Tokenizer  # noqa: E402
from service.recognizer import Recognizer  # noqa: E402
from tests.speech_audio import synthesize  # noqa: E402

VOCAB = list(Tokenizer().vocab)  # the tiny test model's character vocabulary


def _random_lm(seed: int = 0, **kwargs) -> "lm_train.TokenLM":
    torch.manual_seed(seed)
    return lm_train.TokenLM(len(VOCAB), embed=16, hidden=24, **kwargs).eval()


@pytest.fixture(scope="module")
def lm_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny acoustic model plus an lm.onnx over its vocabulary (random weights)."""
    out = tmp_path_factory.mktemp("tiny_with_lm")
    for f in ("encoder.onnx", "decoder.onnx"):
        shutil.copy(tiny_model_dir / f, out / f)
    lm_train.export(_random_lm(), VOCAB, out / "lm.onnx", "0.0.1", {"training": "none (random weights)"})
    return out


def test_onnx_steps_match_the_pytorch_sequence_model(tmp_path):
    """One ONNX step at a time with carried state == the LSTM over the whole sequence, any batch size."""
    lm = _random_lm(1)
    graph = LmGraph(create_session(lm_train.export(lm, VOCAB, tmp_path / "lm.onnx", "0.0.1", {})), tuple(VOCAB))
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        tokens = rng.integers(1, len(VOCAB), size=(batch, 7))
        with torch.no_grad():
            ref = lm(torch.from_numpy(tokens)).numpy()  # (B, L, V)
        h = np.zeros((batch, lm.hidden), np.float32)
        c = h.copy()
        for i in range(tokens.shape[1]):
            out = graph.run({"token": tokens[:, i].astype(np.int64), "h": h, "c": c})
            np.testing.assert_allclose(out["lm_logp"], ref[:, i], atol=1e-4)
            h, c = out["lm_h"], out["lm_c"]


def test_an_lm_of_another_vocabulary_is_refused(tmp_path):
    path = lm_train.export(_random_lm(), VOCAB, tmp_path / "lm.onnx", "0.0.1", {})
    with pytest.raises(ModelFileError, match="another vocabulary"):
        LmGraph(create_session(path), tuple(VOCAB[:-1]) + ("x",))


def test_training_learns_the_text_and_resumes(tmp_path, caplog):
    """A domain LM from --text alone: held-out perplexity falls far below the vocabulary size;
    a rerun with more steps resumes from the last checkpoint."""
    rng = np.random.default_rng(0)
    grammar = [["turn on", "turn off", "dim", "check"], ["red", "green", "blue", "small", "big"],
               ["lamp", "light", "fan", "heater", "speaker"], ["kitchen", "bedroom", "hall", "garage", "office"]]
    combos = [f"{v} the {a} {o} in the {r}" for v in grammar[0] for a in grammar[1] for o in grammar[2]
              for r in grammar[3]]
    rng.shuffle(combos)
    lines = combos[:300] + combos[300:350]  # the last 50 are never trained on
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(lines[:300]) + "\n")
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines[300:]))
    base = ["--out", str(tmp_path / "run"), "--text", str(text), "--no-builtin-text", "--exclude-text", str(held),
            "--batch-tokens", "400", "--ckpt-every", "20", "--lr", "1e-2", "--warmup", "5", "--embed", "32", "--hidden", "48"]
    lm_train.train(lm_train.parse_args(base + ["--steps", "20"]))
    assert (tmp_path / "run" / "lm-20.pt").is_file()
    caplog.set_level("INFO", logger="train")
    final = lm_train.train(lm_train.parse_args(base + ["--steps", "60"]))
    assert any("resumed from" in r.getMessage() and "lm-20.pt" in r.getMessage() for r in caplog.records)
    summary = torch.load(final, weights_only=False)["summary"]
    assert summary["steps"] == 60 and summary["sentences"] == 300
    assert summary["held_out_perplexity"] < 8.0  # unseen sentences of the same grammar; guessing: ~256 pieces
    onnx_path = lm_train.export_checkpoint(final, tmp_path / "lm.onnx", "0.0.2")
    assert LmGraph(create_session(onnx_path), tuple(summary["vocab"])).info.version == "0.0.2"


def test_a_warm_started_lm_trains_on_sentences_back_to_back(tmp_path, monkeypatch, caplog):
    """--init-from starts from a trained LM's weights; --join-share makes examples of 2-3 sentences
    back to back (the decoder gives the LM a segment's sentences without an end between them)."""
    lines = [f"turn {w} the {o}" for w in ("on", "off") for o in ("lamp", "fan", "light", "heater", "radio")]
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(lines) + "\n")
    base = ["--text", str(text), "--no-builtin-text", "--batch-tokens", "200", "--embed", "16", "--hidden", "24",
            "--warmup", "2"]
    first = lm_train.train(lm_train.parse_args(base + ["--out", str(tmp_path / "a"), "--steps", "5"]))
    bpe = lm_train.BpeEncoder(lm_train.DEFAULT_BPE)
    longest = max(len(bpe.encode(t)) for t in lines)
    seen: list[int] = []
    real_collate = lm_train.collate

    def spy(seqs, idx):
        seen.extend(len(seqs[i]) for i in idx)
        return real_collate(seqs, idx)

    monkeypatch.setattr(lm_train, "collate", spy)
    caplog.set_level("INFO", logger=lm_train.log.name)
    lm_train.train(lm_train.parse_args(base + ["--out", str(tmp_path / "b"), "--steps", "3", "--init-from", str(first),
                                               "--join-share", "1.0", "--join-max-tokens", str(3 * longest)]))
    assert any("warm start from" in r.getMessage() for r in caplog.records)
    assert max(seen) > longest, (seen, longest)
    summary = torch.load(tmp_path / "b" / "final.pt", weights_only=False)["summary"]
    assert summary["warm_start_steps"] == 5 and summary["join_share"] == 1.0 and summary["steps"] == 3
    from model_export import card  # the card tells both legs apart

    path = lm_train.export_checkpoint(tmp_path / "b" / "final.pt", tmp_path / "lm.onnx", "0.0.3")
    assert "5 steps, then 3 more from those weights with 100% of the examples" in "\n".join(
        card._lm_section(card.lm_summary(path)))


def _offline(rec: Recognizer, audio: np.ndarray, options: DecodeOptions):
    store = encode_offline(rec.encoder, audio, rec.chunk_frames)
    return decode_offline(rec.decoder, rec.info, store, options, rec.lm)


@pytest.mark.parametrize("beam", [1, 3])
def test_a_uniform_lm_adds_its_log_prob_to_every_token_and_changes_nothing_else(tiny_model_dir, tmp_path, beam):
    """Zero output weights: log P = -log V for every token and the end. The fused decode keeps
    the same tokens and each hypothesis's score falls by exactly weight * log V per token."""
    uniform = _random_lm()
    with torch.no_grad():
        uniform.out.weight.zero_()
        uniform.out.bias.zero_()
    for f in ("encoder.onnx", "decoder.onnx"):
        shutil.copy(tiny_model_dir / f, tmp_path / f)
    lm_train.export(uniform, VOCAB, tmp_path / "lm.onnx", "0.0.1", {})
    rec = Recognizer(tmp_path, inference_threads=1, lm_weight=0.5)
    audio = synthesize("open the door please")
    plain = _offline(rec, audio, DecodeOptions(beam_size=beam, ctc_weight=0.3, lm_weight=0.0)).nbest()
    fused = _offline(rec, audio, DecodeOptions(beam_size=beam, ctc_weight=0.3, lm_weight=0.5)).nbest()
    assert plain[0].tokens, "nothing decoded: the test would prove nothing"
    assert [h.tokens for h in fused] == [h.tokens for h in plain]
    for f, p in zip(fused, plain):
        assert f.score == pytest.approx(p.score - 0.5 * math.log(len(VOCAB)) * len(p.tokens), abs=1e-3)


def test_lm_weight_steers_the_decoder(lm_model_dir, tmp_path):
    """An LM that only ever says one letter, weighted heavily, drags the output toward it."""
    biased = _random_lm()
    with torch.no_grad():
        biased.out.weight.zero_()
        biased.out.bias.fill_(-20.0)
        biased.out.bias[VOCAB.index("e")] = 0.0
    for f in ("encoder.onnx", "decoder.onnx"):
        shutil.copy(lm_model_dir / f, tmp_path / f)
    lm_train.export(biased, VOCAB, tmp_path / "lm.onnx", "0.0.1", {})
    rec = Recognizer(tmp_path, inference_threads=1, lm_weight=1.0)
    audio = synthesize("open the door please")
    e = VOCAB.index("e")

    def share_of_e(weight: float) -> float:
        tokens = _offline(rec, audio, DecodeOptions(beam_size=3, ctc_weight=0.3, lm_weight=weight)).nbest()[0].tokens
        content = [t for t in tokens if t > 1]
        return sum(t == e for t in content) / max(1, len(content))

    assert share_of_e(2.0) > share_of_e(0.0) + 0.3


def test_no_lm_file_or_weight_zero_means_no_lm(tiny_model_dir, lm_model_dir):
    assert Recognizer(tiny_model_dir, inference_threads=1, lm_weight=0.5).lm is None
    off = Recognizer(lm_model_dir, inference_threads=1, lm_weight=0.0)
    assert off.lm is None and off.lm_weight == 0.0
    assert Recognizer(lm_model_dir, inference_threads=1, lm_weight=0.5).lm.info.version == "0.0.1"


def test_fused_streaming_through_the_recognizer_equals_offline(lm_model_dir):
    """The service path (micro-batched decoder and LM steps, random audio pieces) == offline decoding."""
    rec = Recognizer(lm_model_dir, inference_threads=1, batch_max_wait_ms=1.0, lm_weight=0.7)
    audio = synthesize("the quick brown fox jumps over the lazy dog")
    options = DecodeOptions(beam_size=3, ctc_weight=0.3, lm_weight=0.7)
    ref = _offline(rec, audio, options).nbest()
    assert ref[0].tokens

    async def stream(seed: int):
        await rec.start()
        try:
            seg = rec.new_segment(0.0, options)
            rng, pos = np.random.default_rng(seed), 0
            while pos < len(audio):
                n = int(rng.integers(1, 4000))
                await seg.accept(audio[pos:pos + n])
                pos += n
            await seg.finish()
            return seg.decoder.nbest()
        finally:
            await rec.close()

    for seed in range(2):
        rec = Recognizer(lm_model_dir, inference_threads=1, batch_max_wait_ms=1.0, lm_weight=0.7)
        got = asyncio.run(stream(seed))
        assert [h.tokens for h in got] == [h.tokens for h in ref]
