"""Tiny end-to-end recipe: synthesize a corpus, train, stop, resume, export, decode with the service."""
from __future__ import annotations

import asyncio
import json
import random
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model_export import corpus, voices  # noqa: E402
from model_export.data import FeatureSet, read_manifest  # noqa: E402
from model_export.export import export, load_checkpoint  # noqa: E402
from model_export.train import main as train_main  # noqa: E402
from service.pipeline.decoder import DecodeOptions  # noqa: E402
from service.recognizer import Recognizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    corpus.build(out, n_train=16, n_dev=4, workers=1, seed=7)
    return out


def test_corpus_is_split_by_voice_and_never_uses_reserved_voices(tiny_corpus):
    rows = {s: [json.loads(line) for line in (tiny_corpus / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "dev")}
    assert len(rows["train"]) == 16 and len(rows["dev"]) == 4
    train_voices, dev_voices = {r["voice"] for r in rows["train"]}, {r["voice"] for r in rows["dev"]}
    assert not train_voices & dev_voices
    for v in train_voices | dev_voices:
        assert not any(r in v for r in voices.RESERVED)
    assert not {r["text"] for r in rows["train"]} & {r["text"] for r in rows["dev"]}
    for r in rows["train"]:
        assert r["duration"] > 0.3 and set(r["text"]) <= set("abcdefghijklmnopqrstuvwxyz' ")


def test_corpus_build_resumes(tiny_corpus):
    before = (tiny_corpus / "train.jsonl").read_text()
    corpus.build(tiny_corpus, n_train=16, n_dev=4, workers=1, seed=7)  # nothing left to do
    assert (tiny_corpus / "train.jsonl").read_text() == before
    with pytest.raises(ValueError, match="reserved"):
        voices.check_not_reserved("mb-us2")


def test_a_second_corpus_can_exclude_the_first_corpus_dev_sentences(tiny_corpus):
    dev_texts = frozenset(json.loads(line)["text"] for line in (tiny_corpus / "dev.jsonl").read_text().splitlines())
    plain = corpus.plan_jobs(200, 0, seed=8)
    excluded = corpus.plan_jobs(200, 0, seed=8, exclude=dev_texts)
    assert not {j.text for j in excluded} & dev_texts
    assert len(excluded) == len(plain) == 200


@pytest.mark.parametrize("glob, prefix, names", [("mbrola:mb-*-en", "mb", voices.ACCENTED_MBROLA),
                                                  ("mbrola:mbx-*", "mbx", voices.EXTRA_MBROLA)])
def test_accented_mbrola_voices_are_drawn_only_when_selected_and_all_speak(glob, prefix, names):
    core = corpus.plan_jobs(2000, 100, seed=8)
    assert not any(j.voice.name.endswith("-en") and j.voice.engine == "mbrola" for j in core)
    accented = corpus.plan_jobs(600, 0, seed=8, voice_glob=glob)
    assert {j.voice.name for j in accented} == {f"{prefix}-{v}-en" for v in names}
    assert all(j.split == "train" for j in accented)
    with pytest.raises(ValueError, match="--dev-utts 0"):
        corpus.plan_jobs(10, 5, seed=8, voice_glob=glob)
    rng = random.Random(0)
    for name in names:  # each voice's package is installed and speaks the whole sentence
        audio, sr = voices.synthesize(voices.Voice("mbrola", f"{prefix}-{name}-en", "train", 0.0),
                                      "good morning, open the door", rng)
        assert len(audio) / sr > 0.8 and np.abs(audio).max() > 0.05, name


def test_rhvoice_voices_are_split_by_voice_drawn_only_when_selected_and_all_speak():
    assert not any(j.voice.engine == "rhvoice" for j in corpus.plan_jobs(2000, 100, seed=8))
    jobs = corpus.plan_jobs(400, 40, seed=8, voice_glob=voices.RHVOICE_ENGLISH)
    by_split = {s: {j.voice.name for j in jobs if j.split == s} for s in ("train", "dev")}
    assert by_split == {"train": set(voices.RHVOICE_TRAIN), "dev": set(voices.RHVOICE_DEV)}
    jobs = corpus.plan_jobs(800, 40, seed=8, voice_glob="rhvoice:*")
    by_split = {s: {j.voice.name for j in jobs if j.split == s} for s in ("train", "dev")}
    assert by_split == {"train": set(voices.RHVOICE_TRAIN + voices.RHVOICE_ACCENTED), "dev": set(voices.RHVOICE_DEV)}
    everyone = voices.RHVOICE_TRAIN + voices.RHVOICE_DEV + voices.RHVOICE_ACCENTED
    assert "slt" not in everyone  # the reserved flite speaker
    assert "evgeniy-rus" not in everyone  # the dev speaker's Russian voice
    rng = random.Random(0)
    for name in everyone:  # installed, and speaks the whole sentence
        audio, sr = voices.synthesize(voices.Voice("rhvoice", name, "train", 0.0), "good morning, open the door", rng)
        assert len(audio) / sr > 0.8 and np.abs(audio).max() > 0.05, name


def test_several_comma_separated_voice_globs_select_the_union():
    jobs = corpus.plan_jobs(300, 0, seed=8, voice_glob="mbrola:mbx-id1-en,mbrola:mb-de*-en")
    assert {j.voice.name for j in jobs} == {"mbx-id1-en"} | {f"mb-de{i}-en" for i in range(1, 7)}


def test_the_dev_split_built_alone_matches_the_full_build(tiny_corpus, tmp_path):
    corpus.build(tmp_path, n_train=16, n_dev=4, workers=1, seed=7, only="dev")
    assert not (tmp_path / "train.jsonl").read_text()

    def rows(folder):
        keep = ("uid", "text", "voice", "augment", "duration")
        return sorted(tuple(json.loads(line)[k] for k in keep)
                      for line in (folder / "dev.jsonl").read_text().splitlines())

    assert rows(tmp_path) == rows(tiny_corpus)


def test_feature_cache_is_recomputed_for_another_manifest(tiny_corpus, tmp_path):
    class Chars:
        def encode(self, text):
            return [ord(c) for c in text]

    train, dev = read_manifest(tiny_corpus / "train.jsonl"), read_manifest(tiny_corpus / "dev.jsonl")
    cache = tmp_path / "feats.npz"
    first = FeatureSet(train[:3], Chars(), cache, workers=1)
    again = FeatureSet(train[:3], Chars(), cache, workers=1)
    assert all(np.array_equal(a, b) for a, b in zip(first.feats, again.feats))
    other = FeatureSet(dev[:2], Chars(), cache, workers=1)  # same cache file, other utterances
    assert [len(f) for f in other.feats] == [len(f) for f in FeatureSet(dev[:2], Chars(), None, workers=1).feats]


def test_kaldi_data_dir_is_accepted(tiny_corpus, tmp_path):
    rows = [json.loads(line) for line in (tiny_corpus / "dev.jsonl").read_text().splitlines()]
    (tmp_path / "wav.scp").write_text("".join(f"u{i} {r['audio_filepath']}\n" for i, r in enumerate(rows)))
    (tmp_path / "text").write_text("".join(f"u{i} {r['text'].upper()} 42\n" for i, r in enumerate(rows)))
    utts = read_manifest(tmp_path)
    assert [u.text for u in utts] == [f"{r['text']} forty two" for r in rows]
    assert all(u.duration > 0 for u in utts)


@pytest.mark.parametrize("frontend", ["conv1d", "conv2d"])
def test_train_resume_export_decode(tiny_corpus, tmp_path, frontend):
    out = tmp_path / "run"
    common = ["--train", str(tiny_corpus / "train.jsonl"), "--dev", str(tiny_corpus / "dev.jsonl"),
              "--out", str(out), "--size", "tiny", "--ckpt-every", "5", "--eval-every", "1000",
              "--window-from", "8", "--warmup", "2", "--threads", "1", "--workers", "1", "--dev-utts", "4",
              "--max-frames", "3000", "--frontend", frontend]
    train_main(common + ["--steps", "15", "--max-steps-this-run", "10"])  # stopped part-way, as a kill would
    assert sorted(p.name for p in out.glob("ckpt-*.pt")) == ["ckpt-10.pt", "ckpt-5.pt"]
    assert not (out / "final.pt").exists()
    first = torch.load(out / "ckpt-10.pt", weights_only=False)
    train_main(common + ["--steps", "15"])  # resumes from step 10, does 5 more
    resumed = torch.load(out / "ckpt-15.pt", weights_only=False)
    assert resumed["step"] == 15
    assert not torch.equal(first["model"]["decoder.output.weight"], resumed["model"]["decoder.output.weight"])
    model = load_checkpoint(out / "final.pt")
    export(model, tmp_path / "onnx", {"training_data": "tiny test corpus"})
    rec = Recognizer(tmp_path / "onnx", inference_threads=1)

    async def decode():
        seg = rec.new_segment(0.0, DecodeOptions(return_attention=True))
        await seg.accept(np.zeros(8000, np.float32))
        return await seg.finish()

    hyp = asyncio.run(decode())
    assert hyp.attention is not None and hyp.attention.weights.shape[0] == len(hyp.attention.tokens)
    assert hyp.end_s == pytest.approx(0.5, abs=0.05)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_asking_for_a_gpu_without_one_is_a_clear_error():
    from model_export.train import pick_device

    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        pick_device("cuda")


def test_clean_first_curriculum_then_everything_and_resumes_at_the_switch(tiny_corpus, tmp_path, monkeypatch):
    import model_export.train as train_mod

    rows = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["augment"] = "clean" if i < 5 else "noise"
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list[list[int]] = []
    real_collate = train_mod.collate

    def spy(fs, idx, subsampling, starts=None):  # records which utterances each training step used
        if fs.utts[0].path == rows[0]["audio_filepath"]:
            seen.append([i for e in idx for i in e])  # examples: tuples of utterances
        return real_collate(fs, idx, subsampling, starts)

    monkeypatch.setattr(train_mod, "collate", spy)
    out = tmp_path / "run"
    common = ["--train", str(manifest), "--dev", str(tiny_corpus / "dev.jsonl"), "--out", str(out), "--size", "tiny",
              "--ckpt-every", "1", "--eval-every", "1000", "--window-from", "100", "--warmup", "2", "--threads", "1",
              "--workers", "1", "--dev-utts", "2", "--max-frames", "1000", "--clean-first", "4", "--steps", "12"]
    train_main(common + ["--max-steps-this-run", "4"])  # stops right at the switch
    assert len(seen) == 4 and all(i < 5 for batch in seen for i in batch), seen
    switch = torch.load(out / "ckpt-4.pt", weights_only=False)
    assert switch["pos"] == 0 and switch["epoch"] >= 1  # the resumed run starts the full corpus afresh
    train_main(common)
    assert any(i >= 5 for batch in seen[4:] for i in batch), seen
    assert (out / "final.pt").exists()


def test_vtlp_is_identity_at_zero_and_moves_a_formant_by_the_warp():
    import random as _random

    from model_export.train import vtlp

    feats = torch.zeros(3, 4, 80)
    feats[:, :, 40] = 1.0  # one "formant" at bin 40
    assert torch.equal(vtlp(feats, 0.0, _random.Random(0)), feats)
    warped = vtlp(feats, 0.2, _random.Random(1))
    alphas = [_random.Random(1).uniform(0.8, 1.2) for _ in range(1)]  # the first utterance's warp
    peak = int(warped[0, 0].argmax())
    assert abs(peak - 40 / alphas[0]) <= 1  # output bin k reads input bin k * alpha
    assert torch.allclose(warped[0, 0], warped[0, 3])  # one warp per utterance, every frame alike


def _outputs(model, feats, tokens):
    """CTC log-probs, attention log-probs and weights of `model` (eval mode) on (B, T, 80) feats."""
    model.eval()
    with torch.no_grad():
        enc = model.encoder(feats)
        ctc, keys = model.encoder.heads(enc)
        lens = torch.full((feats.shape[0],), enc.shape[1])
        att_logp, att = model.teacher_forced(enc, keys, lens, tokens, windowed=True)
    return ctc, att_logp, att


def test_a_wider_warm_start_begins_as_exactly_the_narrow_model(tiny_corpus, tmp_path):
    common = ["--train", str(tiny_corpus / "train.jsonl"), "--dev", str(tiny_corpus / "dev.jsonl"), "--size", "tiny",
              "--enc-layers", "2", "--enc-skip", "--ckpt-every", "1", "--average", "1", "--eval-every", "1000",
              "--window-from", "100", "--warmup", "1", "--threads", "1", "--workers", "1", "--dev-utts", "2",
              "--max-frames", "1000", "--steps", "2"]
    train_main(common + ["--out", str(tmp_path / "narrow")])
    narrow = load_checkpoint(tmp_path / "narrow" / "final.pt")
    (tmp_path / "wide").mkdir()
    shutil.copy(tmp_path / "narrow" / "bpe256.model", tmp_path / "wide" / "bpe256.model")  # the same token ids
    # lr 0: the two steps leave the grown weights as they were loaded
    train_main(common + ["--out", str(tmp_path / "wide"), "--init-from", str(tmp_path / "narrow" / "final.pt"),
                         "--enc-hidden", "64", "--lr", "0"])
    wide = load_checkpoint(tmp_path / "wide" / "final.pt")
    assert (narrow.cfg.enc_hidden, wide.cfg.enc_hidden) == (48, 64)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    feats = torch.randn(2, 200, 80, generator=torch.Generator().manual_seed(0)) * 3 + narrow.encoder.feat_mean
    tokens = torch.randint(2, narrow.cfg.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    for a, b in zip(_outputs(narrow, feats, tokens), _outputs(wide, feats, tokens)):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    new_units = wide.encoder.lstm.weight_hh_l0[48:64]  # input-gate rows of the 16 new units: fresh, to be trained
    assert new_units.abs().sum() > 0


@pytest.mark.parametrize("sorted_epochs", [1, 0])
def test_first_epoch_runs_short_to_long_unless_sorted_epochs_is_zero(tiny_corpus, tmp_path, monkeypatch,
                                                                      sorted_epochs):
    import model_export.train as train_mod

    longest: list[int] = []  # frames of the longest utterance of each training batch, in step order
    real_collate = train_mod.collate

    def spy(fs, idx, subsampling, starts=None):
        if len(fs.utts) == 16:  # the training set (the dev set has 4)
            longest.append(max(len(fs.feats[i]) for (i,) in idx))  # one utterance per example
        return real_collate(fs, idx, subsampling, starts)

    monkeypatch.setattr(train_mod, "collate", spy)
    train_main(["--train", str(tiny_corpus / "train.jsonl"), "--dev", str(tiny_corpus / "dev.jsonl"),
                "--out", str(tmp_path / "run"), "--size", "tiny", "--eval-every", "1000", "--window-from", "100",
                "--warmup", "2", "--threads", "1", "--workers", "1", "--dev-utts", "2", "--max-frames", "600",
                "--steps", "40", "--max-steps-this-run", "6", "--sorted-epochs", str(sorted_epochs)])
    assert len(longest) == 6
    if sorted_epochs:
        assert longest == sorted(longest), longest
    else:  # seed 1 shuffles these batches out of order; sorted order would mean the flag was ignored
        assert longest != sorted(longest), longest


def test_an_epoch_in_progress_keeps_its_order_when_resumed_with_another_sorted_epochs(tiny_corpus, tmp_path,
                                                                                   monkeypatch):
    """Three steps of a sorted epoch 0, then a resume with --sorted-epochs 0: the epoch goes on in the
    order it began with (a new order at the old position would skip and repeat utterances)."""
    import model_export.train as train_mod

    longest: list[int] = []
    real_collate = train_mod.collate

    def spy(fs, idx, subsampling, starts=None):
        if len(fs.utts) == 16:
            longest.append(max(len(fs.feats[i]) for (i,) in idx))
        return real_collate(fs, idx, subsampling, starts)

    monkeypatch.setattr(train_mod, "collate", spy)
    common = ["--train", str(tiny_corpus / "train.jsonl"), "--dev", str(tiny_corpus / "dev.jsonl"),
              "--out", str(tmp_path / "run"), "--size", "tiny", "--eval-every", "1000", "--window-from", "100",
              "--warmup", "2", "--threads", "1", "--workers", "1", "--dev-utts", "2", "--max-frames", "600",
              "--steps", "40", "--ckpt-every", "1"]
    train_main(common + ["--max-steps-this-run", "3", "--sorted-epochs", "1"])
    train_main(common + ["--max-steps-this-run", "3", "--sorted-epochs", "0"])
    assert len(longest) == 6 and longest == sorted(longest), longest


def test_talk_source_is_conversational_normalized_and_split_by_sentence():
    from model_export import text

    sentences = text.build_talk_sentences(seed=3)
    assert sentences == text.build_talk_sentences(seed=3)  # deterministic: the recipe can rebuild it
    assert len(sentences) > 8000 and len(set(sentences)) == len(sentences)
    assert all("{" not in s and set(s) <= set("abcdefghijklmnopqrstuvwxyz' ") for s in sentences)
    words = {w for s in sentences for w in s.split()}
    assert {"hello", "goodbye", "thanks", "please", "sorry", "tomorrow"} <= words
    assert len(text.chatbot_corpus()) > 1000  # chatterbot-corpus is a [train] dependency
    jobs = corpus.plan_jobs(300, 30, seed=3, source="talk")
    train, dev = ({j.text for j in jobs if j.split == s} for s in ("train", "dev"))
    assert train <= set(sentences) and dev <= set(sentences) and not train & dev
    assert {j.voice.split for j in jobs if j.split == "dev"} == {"dev"}
    # the prose source is untouched by the new one: the recipe's earlier corpora rebuild as before
    assert [j.text for j in corpus.plan_jobs(50, 5, seed=3)] == [j.text for j in corpus.plan_jobs(50, 5, seed=3, source="prose")]


def test_card_summary_reads_text_sources_and_takes_dev_from_the_first_corpus(tmp_path):
    from model_export import card

    def manifest(folder, split, n, **extra):
        (tmp_path / folder).mkdir(exist_ok=True)
        rows = [dict(text="hi", duration=1.0, voice="espeak:en-us", augment="clean", **extra) for _ in range(n)]
        (tmp_path / folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    manifest("prose", "train", 3)  # written before the field existed: prose
    manifest("prose", "dev", 2)
    manifest("talk", "train", 4, text_source="talk")
    manifest("talk", "dev", 5, text_source="talk")
    summary = card.corpus_summary([tmp_path / "prose", tmp_path / "talk"])
    assert summary["train"]["text_sources"] == ["prose", "talk"] and summary["train"]["utterances"] == 7
    assert summary["dev"]["utterances"] == 2  # the main table's dev set; the talk dev set has its own table
    table = card._eval_table({"windowed_offline": {"wer": 0.25, "cer": 0.1, "rtf_1thread": 0.01}})
    assert "| windowed joint, offline (ONNX fp32) | 25.00 % | 10.00 % | 0.01 |" in table
    assert "| windowed joint, streaming (ONNX fp32, 100 ms pieces) | not measured | | |" in table


def test_card_names_the_lm_rows_and_describes_the_lm(tmp_path):
    from model_export import card
    from model_export import lm as lm_train

    row = {"wer": 0.2, "cer": 0.1}
    table = card._eval_table({"lm_weight": 0.15, "windowed_offline": row, "windowed_offline_no_lm": row,
                              "windowed_offline_int8": {**row, "lm_weight": 0.0}})
    assert "| windowed joint, offline (ONNX fp32, LM 0.15) | 20.00 % | 10.00 % |  |" in table
    assert "| windowed joint, offline (ONNX fp32, no LM) | 20.00 % | 10.00 % |  |" in table
    assert "| windowed joint, offline (ONNX int8) | 20.00 % | 10.00 % |  |" in table  # its folder had no LM
    vocab = ["<blank>", "<sos/eos>", "a", "b"]
    path = lm_train.export(lm_train.TokenLM(len(vocab), 8, 16), vocab, tmp_path / "lm.onnx", "2.0.0",
                           {"sentences": 10, "tokens": 50, "held_out_sentences": 3, "embed": 8, "steps": 7,
                            "held_out_perplexity": 3.25})
    summary = card.lm_summary(path)
    embed, lstm, out = 4 * 8, 4 * 16 * (8 + 16) + 2 * 4 * 16, 16 * 4 + 4
    assert summary["version"] == "2.0.0" and summary["hidden"] == 16 and summary["parameters"] == embed + lstm + out
    text = "\n".join(card._lm_section(summary))
    assert "v2.0.0" in text and "perplexity on them is 3.25" in text and "10 sentences" in text


def test_card_says_how_a_joined_evaluation_made_its_segments():
    from model_export import card

    single = {"manifest": "talk.jsonl", "utterances": 8, "hours": 0.01, "windowed_offline": {"wer": 0.3, "cer": 0.2}}
    joined = "\n".join(card._also_section("continuous speech", {**single, "join": 4, "join_gap_s": 0.3}))
    assert joined.startswith("### Continuous speech")
    assert "8 utterances (0.01 h), 4 utterances back to back per segment with 0.3 s of silence after each" in joined
    assert "| 30.00 % | 20.00 % |" in joined  # its table
    assert "back to back" not in "\n".join(card._also_section("one per utterance", single))


@pytest.mark.parametrize("lead_s", [0.0, 0.3])
@pytest.mark.parametrize("snr_db", [None, 20])
def test_speech_onset_is_found_at_the_first_sound(lead_s, snr_db):
    """Lead-silence trimming (--trim-lead, evaluate --cut-lead) relies on this onset: found late it
    would cut the start of a word. Espeak speech after `lead_s` of zeros, clean or in white noise.
    In noise a soft first sound ("th", "f") can sit under the noise and go unfound: the bound is
    looser there (measured over 20 noise seeds and 4 sentences: 222 ms early to 68 ms late)."""
    from model_export.data import cut_lead_silence, speech_onset
    from service.pipeline.features import compute_features
    from tests.speech_audio import silence, synthesize

    speech = synthesize("five fat friends")
    audio = np.concatenate([silence(lead_s), speech])
    if snr_db is not None:
        power = np.mean(np.square(speech[np.abs(speech) > 1e-3]))
        noise = np.random.default_rng(0).standard_normal(len(audio)) * np.sqrt(power / 10 ** (snr_db / 10))
        audio = (audio + noise).astype(np.float32)
    first_sound = (len(silence(lead_s)) + int(np.flatnonzero(np.abs(speech) > 1e-3)[0])) / 16000
    found = speech_onset(compute_features(audio)) * 0.01
    early, late = (0.03, 0.01) if snr_db is None else (0.25, 0.05)
    assert first_sound - early <= found <= first_sound + late, (found, first_sound)
    cut = cut_lead_silence(audio)
    assert np.array_equal(cut, audio[len(audio) - len(cut):])  # a suffix: nothing but the lead is removed
    assert (len(audio) - len(cut)) / 16000 == (pytest.approx(found + 0.01) if found else 0.0)


def test_trim_lead_cuts_a_share_of_training_utterances_to_just_before_their_onset(tiny_corpus, tmp_path,
                                                                                 monkeypatch):
    import model_export.train as train_mod
    from model_export.data import speech_onset
    from model_export.train import trim_start

    rng = random.Random(0)
    assert all(trim_start(50, 300, 0.0, rng) == 0 for _ in range(100))
    cuts = [trim_start(50, 300, 1.0, rng) for _ in range(300)]
    assert set(cuts) == set(range(44, 53))  # from 6 frames before the onset to 2 after, every value drawn
    assert trim_start(0, 300, 1.0, rng) in (0, 1, 2)  # never before the audio's start
    assert all(trim_start(280, 300, 1.0, rng) == 150 for _ in range(20))  # never more than half
    assert 0.2 < sum(trim_start(50, 300, 0.3, rng) > 0 for _ in range(1000)) / 1000 < 0.4

    seen: list[tuple[int, int, int]] = []  # (utterance, frames cut, its onset)
    real_collate = train_mod.collate

    def spy(fs, idx, subsampling, starts=None):
        if len(fs.utts) == 16:  # the training set (the dev set has 4)
            seen.extend((i, s, speech_onset(fs.feats[i])) for (i,), s in zip(idx, starts))
        batch = real_collate(fs, idx, subsampling, starts)
        assert int(batch.feat_lens.max()) == max(len(fs.feats[i]) - s for (i,), s in zip(idx, starts))
        return batch

    monkeypatch.setattr(train_mod, "collate", spy)
    train_main(["--train", str(tiny_corpus / "train.jsonl"), "--dev", str(tiny_corpus / "dev.jsonl"),
                "--out", str(tmp_path / "run"), "--size", "tiny", "--eval-every", "1000", "--window-from", "100",
                "--warmup", "2", "--threads", "1", "--workers", "1", "--dev-utts", "2", "--max-frames", "1000",
                "--steps", "40", "--max-steps-this-run", "4", "--trim-lead", "1.0"])
    assert seen and all(max(0, onset - 6) <= cut <= onset + 2 for _, cut, onset in seen), seen
    assert sum(cut > 0 for _, cut, _ in seen) >= len(seen) // 2  # corpus utterances open on 50-600 ms of silence


def test_joined_examples_hold_each_utterance_once_in_order_with_their_tokens(tiny_corpus, tmp_path, monkeypatch):
    """--join-share: some examples are 2-3 utterances back to back (continuous speech in one VAD
    segment); every utterance is still used once per epoch, and an example's features and tokens are
    its utterances' in the same order."""
    import model_export.train as train_mod
    from model_export.data import join_utterances

    lengths = [100] * 30 + [700] * 10
    rng = random.Random(3)
    examples = join_utterances(list(range(40)), lengths, 0.5, 1500, rng)
    assert sorted(i for e in examples for i in e) == list(range(40))
    assert all(1 <= len(e) <= 3 and sum(lengths[i] for i in e) <= 1500 for e in examples)
    assert any(len(e) == 3 for e in examples) and any(len(e) == 2 for e in examples)
    assert [len(e) for e in join_utterances(list(range(40)), lengths, 0.0, 1500, rng)] == [1] * 40

    seen: list[tuple[tuple[int, ...], int, int]] = []  # (example, frames, tokens)
    real_collate = train_mod.collate

    def spy(fs, idx, subsampling, starts=None):
        batch = real_collate(fs, idx, subsampling, starts)
        if len(fs.utts) == 16:  # the training set (the dev set has 4)
            for b, e in enumerate(idx):
                frames = int(batch.feat_lens[b])
                assert frames == sum(len(fs.feats[i]) for i in e)
                assert np.array_equal(batch.feats[b, :frames].numpy(),
                                      np.concatenate([fs.feats[i] for i in e]).astype(np.float32))
                assert batch.targets[b, :int(batch.target_lens[b])].tolist() == [t for i in e for t in fs.tokens[i]]
                seen.append((e, frames, int(batch.target_lens[b])))
        return batch

    monkeypatch.setattr(train_mod, "collate", spy)
    train_main(["--train", str(tiny_corpus / "train.jsonl"), "--dev", str(tiny_corpus / "dev.jsonl"),
                "--out", str(tmp_path / "run"), "--size", "tiny", "--eval-every", "1000", "--window-from", "100",
                "--warmup", "2", "--threads", "1", "--workers", "1", "--dev-utts", "2", "--max-frames", "4000",
                "--steps", "40", "--max-steps-this-run", "3", "--join-share", "1.0", "--join-max-frames", "4000"])
    assert seen and any(len(e) > 1 for e, _, _ in seen), seen


def test_join_segments_puts_clips_back_to_back_with_a_gap_after_each():
    from model_export.data import join_segments

    clips = [np.full(n, float(n), np.float32) for n in (3, 5, 2, 4, 1)]
    segments = join_segments(clips, 2, gap_s=0.125, sample_rate=16)  # 2 samples of silence
    assert [len(s) for s in segments] == [3 + 2 + 5 + 2, 2 + 2 + 4 + 2, 1 + 2]
    np.testing.assert_array_equal(segments[0], [3, 3, 3, 0, 0, 5, 5, 5, 5, 5, 0, 0])
