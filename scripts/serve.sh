#!/usr/bin/env bash
# Start the speech-to-text server on a fresh machine with the bundled default model.
#   scripts/serve.sh                              gRPC on :50051, metrics on :9090
#   scripts/serve.sh --port 6000 --metrics-port 6001
# Flags and STT_* environment variables: see README.md (Configuration).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Serving dependencies only (no torch). The build step generates service/proto/.
.venv/bin/pip install --quiet --disable-pip-version-check -e .
if ! .venv/bin/python scripts/gen_proto.py --check; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'grpcio-tools==1.85.1'
  .venv/bin/python scripts/gen_proto.py
fi

exec .venv/bin/stt-server "$@"
