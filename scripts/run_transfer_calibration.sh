#!/usr/bin/env bash
# Issue 15: the holdout study's SST-2 prompts (learned on SmolLM2-135M, scripts/run_holdout_study.sh) scored on
# Gemma 3 270M with and without content-free calibration, the calibration estimated on the target itself.
# Writes evals/sst2/transfer-calibration/{none,content-free}/transfer.{md,csv,svg} and transfer_scores.json.
# Every seed's prompt of each holdout rule is scored (TOP=5 per rule's runs; RULES="long random" by default).
#   bash scripts/run_transfer_calibration.sh     (MODELS="gemma3-270m" by default; ~75 s per prompt and setting here)
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
OUT=evals/sst2/transfer-calibration
runs=()
for rule in ${RULES:-long random}; do runs+=(evals/sst2/holdout-study/"$rule"/s[0-9]); done
for cal in none content-free; do
  mkdir -p "$OUT/$cal"
  # shellcheck disable=SC2086
  "$PEZ" transfer --task sst2 --prompts "${runs[@]}" --models ${MODELS:-gemma3-270m} --top "$(( ${TOP:-5} * $(wc -w <<< "${RULES:-long random}") ))" \
      --calibration "$cal" --out "$OUT/$cal"
done
