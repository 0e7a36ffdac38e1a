#!/usr/bin/env bash
# The transfer grid end to end: the SST-2 prompts learned on SmolLM2-135M (scripts/run_tune_evals.sh: four seeds of
# each method) scored on the source and on Gemma 3 270M, written to evals/sst2/transfer.{md,csv,svg} and
# transfer_scores.json. Extra targets are passed through, e.g. a pez-serve or other OpenAI-compatible endpoint:
#   bash scripts/run_transfer_evals.sh --endpoint http://127.0.0.1:8080 --endpoint-model smollm2-135m
# or other in-process models: MODELS="smollm2-135m gemma3-270m /data/gpt2-xl" bash scripts/run_transfer_evals.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
cargo build --release -q -p pez-cli
runs=()
for m in pez-fluency0.003 pez-fluency0 autoprompt-sgd fluentprompt; do
  for d in "evals/sst2/$m" "evals/sst2/$m"-s[0-9]; do
    [ -f "$d/prompt.json" ] && runs+=("$d")
  done
done
# shellcheck disable=SC2086
"$PEZ" transfer --task sst2 --prompts "${runs[@]}" --models ${MODELS:-smollm2-135m gemma3-270m} --top 5 --out evals/sst2 "$@"
