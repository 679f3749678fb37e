#!/usr/bin/env bash
# From a fresh machine to a test run: system packages, .venv with the project and
# its [train,dev] extras (torch pinned), generated protobuf code, then pytest.
#   scripts/test.sh                    everything (slow tests included)
#   scripts/test.sh -m "not slow" -x   arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_system_deps.sh

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Editable install: setup.py generates service/proto/ during the build.
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[train,dev]' 'torch==2.13.0'
.venv/bin/python scripts/gen_proto.py

exec .venv/bin/python -m pytest "$@"
