"""Token language model for shallow fusion: trained on text alone, exported as lm.onnx.

    python -m model_export.lm --out runs/lm --exclude-text data/corpus/dev.jsonl       # train (resumes)
    python -m model_export.lm --out runs/lm --export service/models/default/lm.onnx   # export final.pt

The acoustic model saw ~24k transcripts; text is cheap, so an LSTM over the same BPE
pieces learns from every sentence the text sources give (model_export/text.py, ~400k)
plus any user text (--text, one sentence per line). The decoder adds its weighted
log-prob to each candidate token (service/pipeline/lm.py): it prefers words and word
orders it has seen, where the small acoustic model hesitates between spellings.

Sentences of the dev manifests (--exclude-text) never train the LM: they measure it
(perplexity per token) and keep the dev WER honest.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import torch
from torch import nn

from model_export import text as text_sources
from model_export.bpe import BpeEncoder
from model_export.data import join_utterances
from model_export.train import checkpoints, resume, save_checkpoint

log = logging.getLogger(__name__)

DEFAULT_BPE = Path(__file__).parent / "checkpoints" / "bpe256.model"
SOS_EOS_ID = 1  # model ids: 0 blank, 1 <sos/eos>, then the pieces (model_export/bpe.py)
PAD_ID = 0  # blank never occurs in text: it pads


class TokenLM(nn.Module):
    """Embedding -> one LSTM layer -> vocabulary log-probs. P(y_i | y_<i), y_0 = <sos>."""

    def __init__(self, vocab_size: int, embed: int = 128, hidden: int = 256) -> None:
        super().__init__()
        self.vocab_size, self.hidden = vocab_size, hidden
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (B, L, V) log-probs of the next token."""
        y, _ = self.lstm(self.embed(tokens))
        return torch.log_softmax(self.out(y), dim=-1)


class LmStepGraph(nn.Module):
    """One step of `TokenLM` as the export writes it: an LSTM cell from plain matrix products.

    The embedding and the input weights (and both biases) fold into one (V, 4H) table, so a
    step is a row lookup plus h @ W_hh. ONNX's LSTM operator (what nn.LSTM exports to) wraps a
    one-frame step in transposes and sequence handling: at the beam's 8 rows this graph ran
    in 0.69-0.77x its time (ONNX Runtime, one thread; docs/BENCHMARKS.md, "Language model step").
    """

    def __init__(self, lm: TokenLM) -> None:
        super().__init__()
        cell = lm.lstm
        with torch.no_grad():
            table = lm.embed.weight @ cell.weight_ih_l0.T + cell.bias_ih_l0 + cell.bias_hh_l0  # (V, 4H)
        self.table = nn.Parameter(table.detach().clone(), requires_grad=False)
        self.w_hh = nn.Parameter(cell.weight_hh_l0.detach().T.contiguous(), requires_grad=False)  # (H, 4H)
        self.out = lm.out
        self.hidden = lm.hidden

    def forward(self, token, h, c):
        """token (B,), h, c (B, H) -> (B, V) log-probs, new h, new c; gates in nn.LSTM's order i, f, g, o."""
        i, f, g, o = (self.table[token] + h @ self.w_hh).split(self.hidden, dim=1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h2 = torch.sigmoid(o) * torch.tanh(c2)
        return torch.log_softmax(self.out(h2), dim=-1), h2, c2


def sentences(extra_text: list[Path], exclude: frozenset[str], seeds: tuple[int, ...] = (0, 99)) -> list[str]:
    """Every sentence of the text sources (prose and the conversational set, at the corpus
    seeds) and the user's files, normalized, minus `exclude`, deduplicated, in a fixed order."""
    seen: set[str] = set()
    out: list[str] = []
    pool = [s for seed in seeds for s in text_sources.build_sentences(seed) + text_sources.build_talk_sentences(seed)]
    pool += [text_sources.normalize(line) for f in extra_text for line in f.read_text().splitlines()]
    for s in pool:
        if s and s not in exclude and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def batches(seqs: list[list[int]], max_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices of sequences of similar length, about max_tokens padded tokens per batch, shuffled."""
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), rng.random()))
    out, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, len(seqs[i]))
        if cur and longest * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, longest = [], len(seqs[i])
        cur.append(i)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(seqs: list[list[int]], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs <sos> + y and targets y + <eos>, padded with PAD_ID (ignored by the loss)."""
    n = max(len(seqs[i]) for i in idx) + 1
    x = torch.full((len(idx), n), PAD_ID, dtype=torch.long)
    y = torch.full((len(idx), n), PAD_ID, dtype=torch.long)
    for row, i in enumerate(idx):
        s = seqs[i]
        x[row, : len(s) + 1] = torch.tensor([SOS_EOS_ID, *s])
        y[row, : len(s) + 1] = torch.tensor([*s, SOS_EOS_ID])
    return x, y


def perplexity(lm: TokenLM, seqs: list[list[int]]) -> float:
    """exp(mean negative log-prob per token, <eos> included) over seqs."""
    if not seqs:
        return float("nan")
    lm.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in batches(seqs, 8000, random.Random(0)):
            x, y = collate(seqs, idx)
            nll = nn.functional.nll_loss(lm(x).transpose(1, 2), y, ignore_index=PAD_ID, reduction="sum")
            total, count = total + float(nll), count + int((y != PAD_ID).sum())
    lm.train()
    return math.exp(total / count)


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    bpe = BpeEncoder(args.bpe)
    held_out = sorted({text_sources.normalize(json.loads(line)["text"])
                       for m in args.exclude_text for line in m.read_text().splitlines() if line.strip()})
    texts = sentences(args.text, frozenset(held_out), () if args.no_builtin_text else (0, 99))
    seqs = [s for s in (bpe.encode(t) for t in texts) if s]
    dev = [s for s in (bpe.encode(t) for t in held_out) if s]
    if not seqs:
        raise SystemExit("no training text: every sentence is empty or held out (--text, --exclude-text)")
    lm = TokenLM(len(bpe.vocab), args.embed, args.hidden)
    opt = torch.optim.Adam(lm.parameters(), lr=args.lr)
    step, epoch, pos, _ = resume(args.out, lm, opt, prefix="lm")
    warm_steps = None  # steps the --init-from LM had been trained for (its own summary), for the model card
    if args.init_from:  # warm start: weights only, a fresh optimizer and schedule
        parent = torch.load(args.init_from, map_location="cpu", weights_only=False)
        warm_steps = parent.get("summary", {}).get("steps")
        if not step:
            lm.load_state_dict(parent["model"])
            log.info("warm start from %s", args.init_from)
    n_tokens = sum(len(s) + 1 for s in seqs)
    log.info("LM: %d parameters; %d sentences, %d tokens; %d held-out sentences",
             sum(p.numel() for p in lm.parameters()), len(seqs), n_tokens, len(dev))
    summary = {"sentences": len(seqs), "tokens": n_tokens, "held_out_sentences": len(dev),
               "vocab": bpe.vocab, "embed": args.embed, "hidden": args.hidden}
    if warm_steps is not None:
        summary["warm_start_steps"] = warm_steps
    if args.join_share:
        summary["join_share"] = args.join_share
    t0 = time.time()
    while step < args.steps:
        rng = random.Random(args.seed * 1000 + epoch)
        # continuous speech gives the decoder several sentences without an end between them: with
        # --join-share some examples are 2-3 sentences back to back (without it, exactly the old batches)
        epoch_seqs = seqs if not args.join_share else [
            [t for i in group for t in seqs[i]]
            for group in join_utterances(list(range(len(seqs))), [len(q) for q in seqs], args.join_share,
                                         args.join_max_tokens, rng)]
        plan = batches(epoch_seqs, args.batch_tokens, rng)
        while pos < len(plan) and step < args.steps:
            for g in opt.param_groups:  # linear warm-up, then cosine to 5 % of the peak
                g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
            x, y = collate(epoch_seqs, plan[pos])
            loss = nn.functional.nll_loss(lm(x).transpose(1, 2), y, ignore_index=PAD_ID)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            step, pos = step + 1, pos + 1
            if step % 100 == 0:
                log.info(json.dumps({"step": step, "epoch": epoch, "loss": round(loss.item(), 4),
                                     "steps_per_s": round(step / (time.time() - t0), 2)}))
            if step % args.ckpt_every == 0 or step == args.steps:
                save_checkpoint(args.out / f"lm-{step}.pt", {"model": lm.state_dict(), "opt": opt.state_dict(),
                                                             "step": step, "epoch": epoch, "pos": pos})
                for old in checkpoints(args.out, "lm")[:-1]:
                    old.unlink()
                log.info("step %d: held-out perplexity %.2f", step, perplexity(lm, dev))
        if pos >= len(plan):
            epoch, pos = epoch + 1, 0
    final = args.out / "final.pt"
    summary.update(steps=step, held_out_perplexity=round(perplexity(lm, dev), 3))
    save_checkpoint(final, {"model": lm.state_dict(), "summary": summary})
    log.info("final: %s", json.dumps({k: v for k, v in summary.items() if k != "vocab"}))
    return final


def export(lm: TokenLM, vocab: list[str], out: Path, version: str, training: dict, opset: int = 17) -> Path:
    """lm.onnx: token (B,) int64, h, c (B, H) -> logp (B, V), new_h, new_c; metadata `stt.lm_*`."""
    import onnx

    lm = lm.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    b, hid = 2, lm.hidden
    torch.onnx.export(LmStepGraph(lm).eval(), (torch.ones(b, dtype=torch.long), torch.zeros(b, hid), torch.zeros(b, hid)),
                      str(out), dynamo=False, opset_version=opset, input_names=["token", "h", "c"],
                      output_names=["logp", "new_h", "new_c"],
                      dynamic_axes={n: {0: "batch"} for n in ("token", "h", "c", "logp", "new_h", "new_c")})
    proto = onnx.load(str(out))
    # the trained parameters: the graph's folded table holds more numbers than the model learned
    meta = {"stt.lm_version": version, "stt.lm_vocab": json.dumps(list(vocab)), "stt.lm_hidden": str(hid),
            "stt.lm_parameters": str(sum(p.numel() for p in lm.parameters())), "stt.lm_training": json.dumps(training)}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(out))
    return out


def export_checkpoint(checkpoint: Path, out: Path, version: str) -> Path:
    """Export a final.pt written by `train`."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    summary = payload["summary"]
    lm = TokenLM(len(summary["vocab"]), summary["embed"], summary["hidden"])
    lm.load_state_dict(payload["model"])
    return export(lm, summary["vocab"], out, version, {k: v for k, v in summary.items() if k != "vocab"})


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints lm-STEP.pt, final.pt")
    p.add_argument("--bpe", type=Path, default=DEFAULT_BPE, help="the acoustic model's sentencepiece model")
    p.add_argument("--text", type=Path, action="append", default=[], help="more text, one sentence per line")
    p.add_argument("--no-builtin-text", action="store_true", help="train on --text alone (a domain LM)")
    p.add_argument("--exclude-text", type=Path, action="append", default=[],
                   help="manifest (JSON lines with 'text') whose sentences are held out: never trained on, scored")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-tokens", type=int, default=6000, help="padded tokens per batch")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=200, help="steps of linear learning-rate warm-up")
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--init-from", type=Path, help="warm start: an LM checkpoint (final.pt) of the same shape")
    p.add_argument("--join-share", type=float, default=0.0,
                   help="share of examples made of 2-3 sentences back to back, as continuous speech decodes")
    p.add_argument("--join-max-tokens", type=int, default=150, help="longest joined example, pieces")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", type=Path, help="export OUT/final.pt to this lm.onnx instead of training")
    p.add_argument("--version", default="1.0.0", help="with --export: the LM's version")
    return p.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.export:
        log.info("wrote %s", export_checkpoint(args.out / "final.pt", args.export, args.version))
    else:
        train(args)


if __name__ == "__main__":
    main()
