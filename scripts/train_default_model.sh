#!/usr/bin/env bash
# Reproduces the bundled default model (service/models/default) from nothing:
# synthetic corpus -> training -> ONNX export (+ int8) -> dev-set evaluation.
# Needs the [train] extra and the system packages of scripts/install_system_deps.sh.
# Every step resumes when re-run (corpus: skips finished utterances; training: newest checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/bpe2}
THREADS=${THREADS:-2}

python -m model_export.corpus --out data/corpus --train-utts 24000 --dev-utts 600 --workers "$THREADS"
python -m model_export.train --train data/corpus/train.jsonl --dev data/corpus/dev.jsonl --out "$RUN" \
    --tokens bpe256 --steps 7000 --window-from 6000 --guided-until 2500 --ctc-high-until 2000 --threads "$THREADS"
python -m model_export.export --checkpoint "$RUN/final.pt" --out service/models/default --int8-out "$RUN/int8" \
    --meta "$(python -m model_export.card --summary-json --corpus data/corpus --run "$RUN")"
python -m model_export.evaluate --manifest data/corpus/dev.jsonl --model-dir service/models/default \
    --checkpoint "$RUN/final.pt" --int8-dir "$RUN/int8" --json-out "$RUN/dev_eval.json"
