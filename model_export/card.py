"""Training-data summary (for ONNX metadata) and the model card, from the corpus, run and evaluation.

    python -m model_export.card --summary-json --corpus data/corpus --run runs/bpe2
    python -m model_export.card --corpus data/corpus --run runs/bpe2 --eval runs/bpe2/dev_eval.json \
        --out service/models/default/MODEL_CARD.md
"""
from __future__ import annotations

import argparse
import collections
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np


def corpus_summary(corpora: list[Path]) -> dict:
    """Per split: train over every corpus folder's `train.jsonl`, dev from the first folder's `dev.jsonl`
    only (the dev set of the card's main table; other folders' dev sets get their own tables).
    Missing files count as empty."""
    out = {}
    for split in ("train", "dev"):
        folders = corpora if split == "train" else corpora[:1]
        files = [c / f"{split}.jsonl" for c in folders if (c / f"{split}.jsonl").exists()]
        rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
        engines = collections.Counter(r["voice"].split(":")[0] for r in rows)
        augment = collections.Counter(r["augment"] for r in rows)
        out[split] = {"utterances": len(rows), "hours": round(sum(r["duration"] for r in rows) / 3600, 2),
                      "voices": len({r["voice"] for r in rows}), "by_engine": dict(engines),
                      "augment": {k: round(v / len(rows), 3) for k, v in augment.items()},
                      "voice_names": sorted({r["voice"].split("+")[0] for r in rows}),
                      "text_sources": sorted({r.get("text_source", "prose") for r in rows})}
    return out


def run_summary(run: Path) -> dict:
    """Steps, and training wall time summed over the log's sessions (restarts excluded)."""
    log = run / "train.log" if (run / "train.log").exists() else run.with_suffix(".log")
    stamps, last_step = [], 0
    wall, prev = 0.0, None
    for line in log.read_text().splitlines() if log.exists() else []:
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ INFO (.*)", line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        if prev is not None and (t - prev).total_seconds() < 600:
            wall += (t - prev).total_seconds()
        prev = t
        stamps.append(t)
        step = re.search(r'"step": (\d+)', m.group(2))
        last_step = int(step.group(1)) if step else last_step
    return {"steps": last_step, "train_wall_minutes": round(wall / 60, 1)}


def model_lineage(model_dir: Path) -> tuple[str, dict]:
    """(name, {steps, train_wall_minutes}) of an exported model, from its encoder.onnx metadata."""
    import onnxruntime

    meta = onnxruntime.InferenceSession(str(model_dir / "encoder.onnx"), providers=["CPUExecutionProvider"]
                                        ).get_modelmeta().custom_metadata_map
    return (f"model v{meta['stt.model_version']}", {"steps": int(meta["stt.training_steps"]),
                                                    "train_wall_minutes": float(meta["stt.training_wall_minutes"])})


def lm_summary(lm_file: Path) -> dict:
    """Version, size and training summary of an lm.onnx (model_export.lm writes them into its metadata)."""
    import onnx

    proto = onnx.load(str(lm_file))
    meta = {p.key: p.value for p in proto.metadata_props}
    return {"version": meta["stt.lm_version"], "hidden": int(meta["stt.lm_hidden"]),
            # files exported before session 21 held the parameters themselves as initializers
            "parameters": int(meta.get("stt.lm_parameters", sum(int(np.prod(t.dims)) for t in proto.graph.initializer))),
            "training": json.loads(meta.get("stt.lm_training", "{}"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, action="append", required=True,
                   help="corpus folder (repeat when training used several, e.g. data/corpus and data/corpus2)")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--lineage", type=Path, action="append", default=[],
                   help="earlier run this one was warm-started from (repeat, oldest first): its steps and time count too")
    p.add_argument("--lineage-model", type=Path, action="append", default=[],
                   help="exported model folder this run was warm-started from, when its runs' logs are gone: "
                        "the steps and time in its metadata count too (oldest first, before --lineage)")
    p.add_argument("--summary-json", action="store_true", help="print the metadata summary and exit")
    p.add_argument("--eval", type=Path)
    p.add_argument("--eval-also", action="append", default=[], metavar="TITLE=JSON",
                   help="another evaluation (model_export.evaluate --json-out) shown in its own table, e.g. "
                        "'conversational dev set=runs/talk/talk_eval.json' (repeatable)")
    p.add_argument("--lm", type=Path, help="the lm.onnx shipped beside the model: described in the card")
    p.add_argument("--notes", type=Path, help="hand-written Markdown appended to the card (status, what limited it)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    corpus = corpus_summary(args.corpus)
    run = run_summary(args.run)
    legs = ([model_lineage(m) for m in args.lineage_model] + [(str(r), run_summary(r)) for r in args.lineage]
            + [(str(args.run), dict(run))])
    run = {"steps": sum(leg["steps"] for _, leg in legs),
           "train_wall_minutes": round(sum(leg["train_wall_minutes"] for _, leg in legs), 1), "legs": legs}
    summary = {"training_data": json.dumps({"train": {k: corpus["train"][k] for k in ("utterances", "hours", "voices")},
                                            "synthesizers": corpus["train"]["voice_names"]}),
               "training_steps": str(run["steps"]), "training_wall_minutes": str(run["train_wall_minutes"])}
    if args.summary_json:
        print(json.dumps(summary))
        return
    if args.out is None:
        print(json.dumps({"corpus": corpus, "run": run}, indent=2))
        return
    evaluation = json.loads(args.eval.read_text()) if args.eval else {}
    notes = "\n" + args.notes.read_text() if args.notes else ""
    also = [(title, json.loads(Path(path).read_text()))
            for title, _, path in (item.partition("=") for item in args.eval_also)]
    lm = lm_summary(args.lm) if args.lm else None
    int8 = (args.out.parent / "int8" / "encoder.onnx").is_file()  # the card's folder bundles int8 twins
    args.out.write_text(render_card(corpus, run, evaluation, args.run, also, lm, int8) + notes)


def _joined(ev: dict) -> str:
    """How an evaluation made its segments, when not one per utterance (evaluate --join)."""
    if ev.get("join", 1) <= 1:
        return ""
    return (f", {ev['join']} utterances back to back per segment with {ev.get('join_gap_s', 0):g} s of "
            "silence after each (continuous speech)")


def _also_section(title: str, ev: dict) -> list[str]:
    """Another evaluation (--eval-also) under its own heading."""
    return [f"### {title[:1].upper()}{title[1:]}", "",
            f"`{ev.get('manifest', '?')}`: {ev.get('utterances', '?')} utterances ({ev.get('hours', '?')} h)"
            f"{_joined(ev)}, beam {ev.get('beam', 1)}, CTC weight {ev.get('ctc_weight', 0)}.",
            "", *_eval_table(ev), ""]


def _wer_row(name: str, result: dict | None) -> str:
    if not result:
        return f"| {name} | not measured | | |"
    rtf = result.get("rtf_1thread", "")
    return f"| {name} | {100 * result['wer']:.2f} % | {100 * result['cer']:.2f} % | {rtf} |"


def _eval_table(ev: dict) -> list[str]:
    lm = f", LM {ev['lm_weight']:g}" if ev.get("lm_weight") else ""
    int8 = ev.get("windowed_offline_int8") or {}
    lm8 = f", LM {int8['lm_weight']:g}" if int8.get("lm_weight") else ""
    rows = [
        "| decoding | WER | CER | RTF (1 thread) |",
        "|---|---|---|---|",
        _wer_row("full attention, offline (PyTorch, greedy, attention only)", ev.get("full_attention_offline")),
        _wer_row("windowed attention, offline (ONNX fp32, attention only)", ev.get("windowed_offline_attention_only")),
        _wer_row(f"windowed joint, offline (ONNX fp32, greedy{lm})", ev.get("windowed_offline_greedy")),
    ]
    if lm:
        rows.append(_wer_row("windowed joint, offline (ONNX fp32, no LM)", ev.get("windowed_offline_no_lm")))
    return rows + [
        _wer_row(f"windowed joint, offline (ONNX fp32{lm})", ev.get("windowed_offline")),
        _wer_row(f"windowed joint, streaming (ONNX fp32{lm}, 100 ms pieces)", ev.get("windowed_streaming")),
        _wer_row(f"windowed joint, offline (ONNX int8{lm8})", ev.get("windowed_offline_int8")),
    ]


def _lm_section(lm: dict | None) -> list[str]:
    if lm is None:
        return []
    tr = lm["training"]
    steps = f"{tr.get('steps', '?')} steps"
    if tr.get("warm_start_steps"):  # model_export.lm --init-from: the steps before count too
        steps = f"{tr['warm_start_steps']} steps, then {tr.get('steps', '?')} more from those weights"
    if tr.get("join_share"):
        steps += f" with {tr['join_share']:.0%} of the examples 2-3 sentences back to back (`--join-share`)"
    return [
        "## Language model (`lm.onnx`)",
        f"- v{lm['version']}: embedding {tr.get('embed', '?')} -> one LSTM layer of {lm['hidden']} -> log-probs over "
        f"the same pieces; {lm['parameters'] / 1e6:.2f} M parameters. Trained on text alone (`python -m model_export.lm`): "
        f"{tr.get('sentences', '?')} sentences ({tr.get('tokens', '?')} pieces) of the corpus text sources, prose and "
        f"conversational, {steps}; the {tr.get('held_out_sentences', '?')} sentences of the dev sets "
        f"are held out, and its perplexity on them is {tr.get('held_out_perplexity', '?')} per piece.",
        "- The service adds `STT_LM_WEIGHT` times its log-prob to every candidate token (shallow fusion; 0 turns it "
        "off). Rows below marked \"LM\" use it; the \"no LM\" row is the same decoding without it.",
        "",
    ]


def render_card(corpus: dict, run: dict, ev: dict, run_dir: Path, also: list[tuple[str, dict]] = (),
                lm: dict | None = None, int8: bool = False) -> str:
    """MODEL_CARD.md: data, voices, hours, size, training time, measured dev WER."""
    import torch

    cfg = json.loads(torch.load(run_dir / "final.pt", map_location="cpu", weights_only=False)["config"])
    state = torch.load(run_dir / "final.pt", map_location="cpu", weights_only=False)["model"]
    n_params = sum(v.numel() for k, v in state.items() if "feat_" not in k)
    tr, dv = corpus["train"], corpus["dev"]
    lines = [
        "# Model card: default English recognizer",
        "",
        "Attention encoder-decoder with a CTC head, trained here from scratch on synthetic speech only.",
        "",
        "## Architecture",
        f"- {n_params / 1e6:.2f} M parameters; 80-dim log-mel (25 ms / 10 ms) with global mean/variance normalization "
        "baked into `encoder.onnx`.",
        f"- Encoder: two causal Conv1d (stride 2 each: one frame per 40 ms), {cfg['enc_layers']}-layer unidirectional "
        f"LSTM {cfg['enc_hidden']}, CTC head, attention keys. Streams chunk by chunk with carried state.",
        f"- Decoder: LSTMCell {cfg['dec_hidden']} with additive location-aware attention, one step per token; served with "
        f"monotonic windowed attention, B = {cfg['window_back']}, W = {cfg['window_size']} frames "
        f"({40 * cfg['window_size']} ms).",
        f"- Output units: {len(cfg['vocab'])} ids = CTC blank, <sos/eos> and {len(cfg['vocab']) - 2} sentencepiece BPE "
        "pieces learned from the training transcripts.",
        *(["- Graphs: `encoder.onnx` and `decoder.onnx` in fp32 (served by default); `int8/` holds the same graphs with "
           "int8 dynamic quantization (7-bit weights), served with `STT_PRECISION=int8`: the int8 rows below, about "
           "0.6-0.7x the model CPU per stream at light load, no more streams per core at capacity (docs/BENCHMARKS.md, "
           "sections 1 and 2). The LM stays fp32."] if int8 else []),
        "",
        "## Training data (synthetic, generated here by `python -m model_export.corpus`)",
        f"- Train: {tr['utterances']} utterances, {tr['hours']} h, {tr['voices']} voices "
        f"({', '.join(f'{k}: {v}' for k, v in tr['by_engine'].items())} utterances) from "
        f"{', '.join(tr['voice_names'])} (espeak-ng languages with many variants).",
        f"- Dev (voices held out of training, other sentences): {dv['utterances']} utterances, {dv['hours']} h, "
        f"{', '.join(dv['voice_names'])}.",
        f"- Augmentation shares (train): {', '.join(f'{k} {100 * v:.0f} %' for k, v in tr['augment'].items())}; "
        "noise = white/pink/babble at 5-30 dB SNR; tel = 8 kHz band, mostly with a mu-law round trip; every "
        "utterance has 0.05-0.6 s of silence before and after, 30 % a pause inside; rate 0.8-1.3x, random pitch, "
        "level 0.05-0.95 of full scale.",
        "- Text: Debian fortunes, WordNet glosses and examples, templated everyday speech (times, dates, money, "
        "numbers, addresses, commands); numbers spelled out"
        + ("; conversation (`corpus --text talk`: templated greetings, replies, requests and phone calls, "
           "chatterbot-corpus small talk)." if "talk" in tr["text_sources"] else "."),
        "- Never used: the voices reserved for evaluation (pico2wave, festival, flite slt, MBROLA us2).",
        "",
        "## Training",
        f"- {run['steps']} steps, {run['train_wall_minutes']} min of wall time on 2 CPU cores (sum over sessions; "
        "the run was stopped and resumed"
        + (", each leg warm-started from the one before: "
           + ", ".join(f"{name} {leg['steps']} steps / {leg['train_wall_minutes']} min" for name, leg in run["legs"])
           if len(run["legs"]) > 1 else "")
        + "). Full attention with a guided-attention loss and CTC weight 0.5 early, "
        "then 0.3; the last steps fine-tune with the inference window applied; last 5 checkpoints averaged.",
        "- Exact commands: `scripts/train_default_model.sh`.",
        "",
        *_lm_section(lm),
        "## Dev-set accuracy (measured by `python -m model_export.evaluate`, one segment per utterance)",
        "",
        f"{ev.get('utterances', '?')} utterances ({ev.get('hours', '?')} h) of held-out voices; beam {ev.get('beam', 1)}; "
        f"windowed rows use joint CTC/attention scoring with CTC weight {ev.get('ctc_weight', 0)} (the service "
        "default) unless marked attention only.",
        "",
        *_eval_table(ev),
        "",
    ]
    for title, other in also:
        lines += _also_section(title, other)
    lines += [
        "These figures are for synthetic voices of the training engines; real human speech is out of domain "
        "for this model. See docs/BENCHMARKS.md for service-level figures and the pocketsphinx comparison.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
