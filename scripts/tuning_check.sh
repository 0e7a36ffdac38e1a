#!/usr/bin/env bash
# Tuning as a service end to end (run by scripts/test.sh, so by CI): real pez-serve processes on the tiny GPT-2
# checkpoint, driven by the official `openai` package (scripts/tuning_client_check.py: upload, jobs, events,
# classification by the tuned model, cancel, paging, bad input, API keys, a full queue, kill -9 and resume).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release"
python3 -c "import openai" 2>/dev/null || python3 -m pip install -q openai || { echo "tuning_check: cannot install the openai package from PyPI" >&2; exit 1; }
FX=crates/pez-models/tests/fixtures/transfer
HF_HUB_OFFLINE=1 python3 scripts/tuning_client_check.py --pez-serve "$TARGET/pez-serve" --pez "$TARGET/pez" \
  --model "$FX/gpt2" --data "$FX/dev.tsv"
echo "tuning_check: all passed"
