"""Train the attention encoder-decoder; resumable at any point.

    python -m model_export.train --train data/corpus/train.jsonl --dev data/corpus/dev.jsonl \
        --out runs/default --steps 6000 --window-from 5000

Phase 1 (steps < --window-from): full attention, with a guided-attention (diagonal)
loss and a higher CTC weight early so attention locks onto the audio. Phase 2: the
decoder is fine-tuned with the inference window of DESIGN §3, so training and
decoding agree. A checkpoint is written every --ckpt-every steps (atomically) and a
rerun of the same command resumes from the newest one. At the end the last
--average checkpoints are averaged into `final.pt`. Runs on a CUDA GPU when PyTorch sees
one (--device auto), else on the CPU with --threads threads; checkpoints resume on either.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import jiwer
import torch
import torch.nn.functional as F

from model_export.data import Batch, FeatureSet, collate, join_utterances, make_batches, read_manifest, speech_onset
from model_export.grow import grow_state_dict
from model_export.model import MASK_VALUE, AttentionModel, ModelConfig
from model_export.bpe import CharEncoder, train_bpe
from service.pipeline.tokenizer import Tokenizer

log = logging.getLogger("train")

SIZES = {
    "default": {},
    "tiny": dict(conv_channels=32, enc_layers=1, enc_hidden=48, att_dim=32, dec_hidden=48, emb_dim=16,
                 loc_channels=4, loc_kernel=5),
}


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def ctc_weight_at(step: int, args: argparse.Namespace) -> float:
    # CTC carries the encoder while attention has not aligned yet (DATA.md lessons).
    return 0.5 if step < args.ctc_high_until else 0.3


def guided_weight_at(step: int, args: argparse.Namespace) -> float:
    return args.guided_weight * max(0.0, 1.0 - step / max(1, args.guided_until))


def guided_attention_loss(att: torch.Tensor, enc_lens: torch.Tensor, out_lens: torch.Tensor,
                          sigma: float = 0.25) -> torch.Tensor:
    """Penalty for attention far from the diagonal (Tachibana et al. 2017).

    att (B, U, T); enc_lens (B,) valid frames; out_lens (B,) valid decoder steps.
    """
    _, u_max, t_max = att.shape
    u = torch.arange(u_max, device=att.device).view(1, -1, 1) / out_lens.view(-1, 1, 1)
    t = torch.arange(t_max, device=att.device).view(1, 1, -1) / enc_lens.view(-1, 1, 1)
    weight = 1.0 - torch.exp(-((t - u) ** 2) / (2 * sigma**2))
    valid = (torch.arange(u_max, device=att.device).view(1, -1) < out_lens.view(-1, 1)).float()
    return ((att * weight).sum(-1) * valid).sum() / valid.sum()


def spec_augment(feats: torch.Tensor, lens: torch.Tensor, mean: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Two frequency masks (<= 15 bins) and up to two time masks (<= 5% of length each)."""
    feats = feats.clone()
    lens = lens.tolist()  # one device -> host copy
    for b in range(feats.shape[0]):
        for _ in range(2):
            width = rng.randint(0, 15)
            f0 = rng.randint(0, feats.shape[2] - width)
            feats[b, :, f0:f0 + width] = mean[f0:f0 + width]
        n = int(lens[b])
        for _ in range(2):
            width = rng.randint(0, max(1, n // 20))
            t0 = rng.randint(0, max(0, n - width))
            feats[b, t0:t0 + width] = mean
    return feats


def vtlp(feats: torch.Tensor, max_warp: float, rng: random.Random) -> torch.Tensor:
    """Vocal-tract-length perturbation on log-mel features (Jaitly & Hinton 2013), one warp per utterance.

    feats (B, T, n_mels) log-mel. Each utterance's mel axis is scaled by a factor in
    [1 - max_warp, 1 + max_warp] (linear interpolation between bins; bins past the top repeat
    the top one): formants move as they do between speakers with longer or shorter vocal
    tracts. Measured reason (MODEL_NOTES.md, session 10): the model does 37-40 % WER on its five
    non-espeak training voices and 80-85 % on unseen ones; each synthetic voice is one speaker.
    Scaling the mel index approximates scaling Hz (the warp of the paper) above ~1 kHz only.
    """
    bsz, _, n_mels = feats.shape
    alphas = torch.tensor([rng.uniform(1 - max_warp, 1 + max_warp) for _ in range(bsz)], device=feats.device)
    src = torch.clamp(torch.arange(n_mels, device=feats.device).unsqueeze(0) * alphas.unsqueeze(1), 0, n_mels - 1)
    lo = src.floor().long()  # (B, n_mels)
    hi = torch.clamp(lo + 1, max=n_mels - 1)
    frac = (src - lo).unsqueeze(1)  # (B, 1, n_mels)
    pick = lambda idx: torch.gather(feats, 2, idx.unsqueeze(1).expand(-1, feats.shape[1], -1))  # noqa: E731
    return pick(lo) * (1 - frac) + pick(hi) * frac


def trim_start(onset: int, frames: int, share: float, rng: random.Random) -> int:
    """Feature frames to drop so that, with probability `share`, 0-80 ms of silence precede speech.

    `onset` from `speech_onset`, `frames` the utterance's length. Measured on 1,197 clean
    training utterances, the first sample above 1e-3 lies 12-22 ms (1st-75th percentile)
    after the start of the onset frame's window: a cut 2 frames after the onset leaves none
    (or takes a few ms of the softest start), one 6 frames before it leaves 70-80 ms. Never
    more than half the utterance (an onset found late in a noisy one).
    """
    if rng.random() >= share:
        return 0
    return max(0, min(onset + 2 - rng.randint(0, 8), frames // 2))


def compute_loss(model: AttentionModel, batch: Batch, tok: Tokenizer, step: int, args, windowed: bool,
                 rng: random.Random) -> tuple[torch.Tensor, dict]:
    sub = model.cfg.subsampling
    feats = batch.feats
    if args.vtlp > 0:
        feats = vtlp(feats, args.vtlp, rng)
    if args.spec_augment:
        feats = spec_augment(feats, batch.feat_lens, model.encoder.feat_mean, rng)
    enc = model.encoder(feats)
    ctc_logp, keys = model.encoder.heads(enc)
    enc_lens = torch.clamp(-(-batch.feat_lens // sub), max=enc.shape[1])
    targets = batch.targets
    ctc = F.ctc_loss(ctc_logp.transpose(0, 1), torch.clamp(targets, min=0), enc_lens, batch.target_lens,
                     blank=tok.blank_id, reduction="sum", zero_infinity=True) / targets.shape[0]
    bsz, dev = targets.shape[0], targets.device
    sos = torch.full((bsz, 1), tok.sos_id, dtype=torch.long, device=dev)
    tokens_in = torch.cat([sos, torch.clamp(targets, min=0)], dim=1)
    tokens_out = torch.cat([targets, torch.full((bsz, 1), -1, dtype=torch.long, device=dev)], dim=1)
    tokens_out[torch.arange(bsz, device=dev), batch.target_lens] = tok.eos_id
    logp, att = model.teacher_forced(enc, keys, enc_lens, tokens_in, windowed)
    att_ce = F.nll_loss(logp.reshape(-1, logp.shape[-1]), tokens_out.reshape(-1), ignore_index=-1,
                        reduction="sum") / bsz
    smooth = -(logp.mean(-1) * (tokens_out >= 0)).sum() / bsz  # label smoothing toward uniform
    att_loss = (1 - args.label_smoothing) * att_ce + args.label_smoothing * smooth
    cw, gw = ctc_weight_at(step, args), guided_weight_at(step, args)
    loss = cw * ctc + (1 - cw) * att_loss
    guided = torch.zeros((), device=dev)
    if gw > 0:
        guided = guided_attention_loss(att, enc_lens.float(), (batch.target_lens + 1).float())
        loss = loss + gw * guided * batch.target_lens.float().mean()
    n_tok = float(batch.target_lens.sum() + bsz)
    stats = {"ctc": float(ctc.detach()) * bsz / n_tok, "att_ce": float(att_ce.detach()) * bsz / n_tok, "guided": float(guided.detach())}
    return loss / (n_tok / bsz), stats


@torch.no_grad()
def greedy_decode(model: AttentionModel, feats: torch.Tensor, lens: torch.Tensor, tok: Tokenizer,
                  max_tokens_per_frame: float = 1.5) -> list[list[int]]:
    """Full-attention greedy decoding in PyTorch (training-time dev check only)."""
    enc = model.encoder(feats)
    _, keys = model.encoder.heads(enc)
    enc_lens = torch.clamp(-(-lens // model.cfg.subsampling), max=enc.shape[1])
    bsz, t_max, _ = enc.shape
    dev = enc.device
    mask = torch.where(torch.arange(t_max, device=dev).unsqueeze(0) < enc_lens.unsqueeze(1), 0.0, MASK_VALUE)
    state = model.decoder.init_state(bsz)
    att = F.one_hot(torch.zeros(bsz, dtype=torch.long, device=dev), t_max).float()
    token = torch.full((bsz,), tok.sos_id, dtype=torch.long, device=dev)
    out: list[list[int]] = [[] for _ in range(bsz)]
    done = [False] * bsz
    for _ in range(int(t_max * max_tokens_per_frame) + 1):
        logp, state, att = model.decoder.step(token, state, att, enc, keys, mask)
        token = logp.argmax(-1)
        for b, t in enumerate(token.tolist()):  # one device -> host copy per step
            if not done[b] and t != tok.eos_id:
                out[b].append(t)
            done[b] = done[b] or t == tok.eos_id
        if all(done):
            break
    return out


@torch.no_grad()
def ctc_greedy(model: AttentionModel, feats: torch.Tensor, lens: torch.Tensor, tok: Tokenizer) -> list[list[int]]:
    enc = model.encoder(feats)
    logp, _ = model.encoder.heads(enc)
    enc_lens = (-(-lens // model.cfg.subsampling)).tolist()
    out = []
    for b, best in enumerate(logp.argmax(-1).cpu()):
        ids, prev = [], -1
        for t in best[: int(enc_lens[b])].tolist():
            if t != prev and t != tok.blank_id:
                ids.append(t)
            prev = t
        out.append(ids)
    return out


def evaluate(model: AttentionModel, dev: FeatureSet, tok: Tokenizer, n: int) -> dict:
    model.eval()
    device = next(model.parameters()).device
    refs, att_hyps, ctc_hyps = [], [], []
    idx = list(range(min(n, len(dev))))
    for start in range(0, len(idx), 16):
        batch = collate(dev, idx[start:start + 16], model.cfg.subsampling).to(device)
        att_hyps += [tok.decode(h) for h in greedy_decode(model, batch.feats, batch.feat_lens, tok)]
        ctc_hyps += [tok.decode(h) for h in ctc_greedy(model, batch.feats, batch.feat_lens, tok)]
        refs += [dev.utts[i].text for i in idx[start:start + 16]]
    model.train()
    # CER too: early in training WER sits near or above 100 % and hides progress.
    return {"dev_wer_att_full_greedy": jiwer.wer(refs, att_hyps), "dev_wer_ctc_greedy": jiwer.wer(refs, ctc_hyps),
            "dev_cer_att_full_greedy": jiwer.cer(refs, att_hyps), "dev_cer_ctc_greedy": jiwer.cer(refs, ctc_hyps),
            "example_ref": refs[0], "example_hyp": att_hyps[0]}


def pick_device(name: str) -> torch.device:
    """'auto' -> the first CUDA GPU when PyTorch sees one, else the CPU; others as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: PyTorch sees no CUDA GPU here (torch {torch.__version__}); use --device cpu")
    return device


def save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill during save never leaves a torn checkpoint


def checkpoints(out: Path, prefix: str = "ckpt") -> list[Path]:
    """`prefix`-STEP.pt files in `out`, oldest first."""
    return sorted(out.glob(f"{prefix}-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def resume(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
           prefix: str = "ckpt") -> tuple[int, int, int, dict]:
    """Load the newest checkpoint of `out` into model and optimizer: (step, epoch, batch) to go on
    from and the checkpoint itself, (0, 0, 0, {}) when there is none."""
    ckpts = checkpoints(out, prefix)
    if not ckpts:
        return 0, 0, 0, {}
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpts[-1], state["step"], state["epoch"], state["pos"])
    return state["step"], state["epoch"], state["pos"], state


def average_checkpoints(paths: list[Path]) -> dict:
    states = [torch.load(p, map_location="cpu", weights_only=False)["model"] for p in paths]
    avg = {}
    for k, v in states[0].items():
        avg[k] = sum(s[k] for s in states) / len(states) if v.is_floating_point() else v
    return avg


def build_encoder(args, train_utts):
    """Text -> ids for training: characters or a sentencepiece BPE learned from the train transcripts."""
    if args.tokens == "char":
        return CharEncoder()
    size = int(args.tokens.removeprefix("bpe"))
    return train_bpe([u.text for u in train_utts], args.out / f"bpe{size}", size)


def build_model(args, tok: Tokenizer) -> AttentionModel:
    size = dict(SIZES[args.size])
    if args.enc_layers:
        size["enc_layers"] = args.enc_layers
    size["enc_skip"] = args.enc_skip
    size["frontend"] = args.frontend
    if args.enc_hidden:
        size["enc_hidden"] = args.enc_hidden
    cfg = ModelConfig(vocab=list(tok.vocab), window_back=args.window_back, window_size=args.window_size, **size)
    return AttentionModel(cfg)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, required=True, help="JSON-lines manifest or Kaldi data dir")
    p.add_argument("--dev", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("runs/default"))
    p.add_argument("--size", choices=sorted(SIZES), default="default")
    p.add_argument("--enc-layers", type=int, default=0,
                   help="override the size preset (default preset: 2; measured here: 2 layers leave the CTC plateau far sooner than 3)")
    p.add_argument("--enc-hidden", type=int, default=0,
                   help="override the size preset's LSTM width; with --init-from a wider width grows the warm "
                        "model (model_export/grow.py: the same function, new units to train)")
    p.add_argument("--frontend", choices=("conv1d", "conv2d"), default="conv1d",
                   help="x4 subsampling front-end (model.py); conv2d shares filters across frequency")
    p.add_argument("--enc-skip", action="store_true", help="residual projection from the conv front-end to the encoder output")
    p.add_argument("--init-from", type=Path, help="warm start: load matching weights from this checkpoint (fresh optimizer)")
    p.add_argument("--tokens", default="bpe256", help="'char' or 'bpeN' (sentencepiece BPE with N pieces)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--window-from", type=int, default=5000, help="step where windowed fine-tuning starts")
    p.add_argument("--window-back", type=int, default=4)
    p.add_argument("--window-size", type=int, default=16)
    p.add_argument("--max-frames", type=int, default=6000, help="padded feature frames per batch (10 ms each)")
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ctc-high-until", type=int, default=2000)
    p.add_argument("--guided-weight", type=float, default=1.0)
    p.add_argument("--guided-until", type=int, default=3000)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--no-spec-augment", dest="spec_augment", action="store_false")
    p.add_argument("--vtlp", type=float, default=0.0,
                   help="vocal-tract-length perturbation: warp each utterance's mel axis by up to this fraction "
                        "(e.g. 0.15; 0 off): more pseudo-speakers from few synthetic voices")
    p.add_argument("--clean-first", type=int, default=0,
                   help="curriculum: train on the manifest's clean utterances (augment 'clean' or none) for this "
                        "many steps, then on all (measured: noisy speech from the start holds CTC on its plateau)")
    p.add_argument("--sorted-epochs", type=int, default=1,
                   help="this many first epochs run their batches short-to-long (a curriculum for a fresh model), "
                        "later ones shuffled; 0 shuffles from the start, which suits a warm start (--init-from): "
                        "sorted, its first epoch ends on the longest utterances only")
    p.add_argument("--trim-lead", type=float, default=0.0,
                   help="share of training utterances whose lead silence is cut to 0-80 ms (trim_start): every corpus "
                        "utterance opens on silence, a live stream may open on speech")
    p.add_argument("--join-share", type=float, default=0.0,
                   help="share of training examples made of 2-3 utterances back to back (continuous speech)")
    p.add_argument("--join-max-frames", type=int, default=1500,
                   help="longest joined example, feature frames (10 ms each)")
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--average", type=int, default=5)
    p.add_argument("--dev-utts", type=int, default=120)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    p.add_argument("--device", default="auto", help="'auto' (a CUDA GPU when there is one, else CPU), 'cpu', 'cuda', 'cuda:N'")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-steps-this-run", type=int, default=0,
                   help="stop (with a checkpoint) after this many steps of this invocation; 0: run to --steps")
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    train_utts = read_manifest(args.train)
    encoder = build_encoder(args, train_utts)
    tok = encoder.tokenizer
    train_set = FeatureSet(train_utts, encoder, args.out / "cache" / "train_feats.npz", args.workers)
    dev_set = FeatureSet(read_manifest(args.dev), encoder, args.out / "cache" / "dev_feats.npz", args.workers)
    device = pick_device(args.device)
    model = build_model(args, tok).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-6)
    step, epoch, pos, resumed = resume(args.out, model, opt)
    # an epoch in progress keeps the batch order it began with, whatever --sorted-epochs a resume gives
    epoch_sorted = resumed.get("epoch_sorted")
    if step:  # resumed: weights, statistics and optimizer come from the checkpoint
        log.info("continuing at step %d", step)
    elif args.init_from:
        warm = torch.load(args.init_from, map_location="cpu", weights_only=False)
        warm_sd, h_old = warm["model"], ModelConfig.from_json(warm["config"]).enc_hidden
        if h_old != model.cfg.enc_hidden:  # --enc-hidden wider than the warm model's: same function, more units
            warm_sd = grow_state_dict(warm_sd, model.state_dict(), h_old, model.cfg.enc_hidden)
            log.info("encoder widened %d -> %d units (function preserved)", h_old, model.cfg.enc_hidden)
        missing, unexpected = model.load_state_dict(warm_sd, strict=False)
        log.info("warm start from %s; new parameters: %s; dropped: %s", args.init_from, missing, unexpected)
        if model.encoder.skip is not None and "encoder.skip.weight" in missing:
            with torch.no_grad():  # a new residual branch starts silent: the warm model is unchanged
                model.encoder.skip.weight.zero_()
                model.encoder.skip.bias.zero_()
    else:
        mean, inv_std = train_set.stats()
        model.encoder.feat_mean.copy_(torch.from_numpy(mean).float())
        model.encoder.feat_inv_std.copy_(torch.from_numpy(inv_std).float())
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %d parameters on %s; train %d utts (%.1f h); dev %d utts", n_params, device, len(train_set),
             sum(u.duration for u in train_set.utts) / 3600, len(dev_set))
    lengths = [len(f) for f in train_set.feats]
    model.train()
    t0, audio_s = time.time(), 0.0
    stop_at = min(args.steps, step + args.max_steps_this_run) if args.max_steps_this_run else args.steps
    clean = [i for i, u in enumerate(train_set.utts) if u.augment in ("", "clean")]
    if args.clean_first and not clean:
        raise SystemExit(f"--clean-first {args.clean_first}: {args.train} has no clean utterances (augment 'clean')")
    if args.clean_first:
        log.info("curriculum: %d clean utterances of %d until step %d", len(clean), len(train_set), args.clean_first)
    onsets = [speech_onset(f) for f in train_set.feats] if args.trim_lead else []
    while step < stop_at:
        rng = random.Random(args.seed * 1000 + epoch)
        pool = clean if step < args.clean_first else range(len(lengths))
        sort = epoch < args.sorted_epochs if epoch_sorted is None else epoch_sorted
        epoch_sorted = None
        # (without --join-share the examples, and so the batches, are exactly those of earlier phases)
        examples = (join_utterances(list(pool), lengths, args.join_share, args.join_max_frames, rng)
                    if args.join_share else [(i,) for i in pool])
        batches = [[examples[i] for i in b] for b in make_batches([sum(lengths[i] for i in e) for e in examples],
                                                                  args.max_frames, rng, sort=sort)]
        while pos < len(batches) and step < stop_at:
            starts = ([trim_start(onsets[e[0]], lengths[e[0]], args.trim_lead, rng) for e in batches[pos]]
                      if onsets else None)
            batch = collate(train_set, batches[pos], model.cfg.subsampling, starts).to(device)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args)
            loss, stats = compute_loss(model, batch, tok, step, args, step >= args.window_from, rng)
            opt.zero_grad()
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step, pos = step + 1, pos + 1
            switch = step == args.clean_first  # curriculum: the whole corpus from a new epoch on
            if switch:
                epoch, pos = epoch + 1, 0
            audio_s += float(batch.feat_lens.sum()) / 100
            if step % 25 == 0:
                el = time.time() - t0
                log.info(json.dumps({"step": step, "epoch": epoch, "loss": round(float(loss.detach()), 4),
                                     **{k: round(v, 4) for k, v in stats.items()}, "gnorm": round(float(gnorm), 2),
                                     "lr": round(lr_at(step, args), 6), "audio_per_s": round(audio_s / el, 1),
                                     "windowed": step > args.window_from}))
            if step % args.ckpt_every == 0 or step == stop_at:
                save_checkpoint(args.out / f"ckpt-{step}.pt", {"model": model.state_dict(), "opt": opt.state_dict(),
                                "step": step, "epoch": epoch, "pos": pos, "epoch_sorted": sort if pos else None,
                                "config": model.cfg.to_json()})
                for old in checkpoints(args.out)[:-args.average]:
                    old.unlink()
            if step % args.eval_every == 0:
                log.info("eval step %d: %s", step, json.dumps(evaluate(model, dev_set, tok, args.dev_utts)))
            if switch:
                log.info("curriculum: clean speech done at step %d; all %d utterances from epoch %d", step,
                         len(train_set), epoch)
                break
        if pos >= len(batches):
            epoch, pos = epoch + 1, 0
            log.info("epoch %d done: %s", epoch, json.dumps(evaluate(model, dev_set, tok, args.dev_utts)))
    if step < args.steps:
        log.info("stopped at step %d of %d (--max-steps-this-run); rerun to continue", step, args.steps)
        return args.out / f"ckpt-{step}.pt"
    ckpts = checkpoints(args.out)[-args.average:]
    model.load_state_dict(average_checkpoints(ckpts))
    final = args.out / "final.pt"
    save_checkpoint(final, {"model": model.state_dict(), "config": model.cfg.to_json(), "step": step,
                            "averaged": [p.name for p in ckpts]})
    log.info("averaged %s -> %s: %s", [p.name for p in ckpts], final,
             json.dumps(evaluate(model, dev_set, tok, args.dev_utts)))
    return final


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train(parse_args(argv))


if __name__ == "__main__":
    main()
