#!/usr/bin/env bash
# Issue 15's goal check: the README's main job (`pez tune sst2 --fluency 0.003`, today's defaults) over 5 seeds,
# one after another (each resumable, each its own run dir), with each seed's wall time, holdout and dev accuracy.
#   bash scripts/run_default_study.sh     (SEEDS=5; about 20 minutes a seed on 2 cores in f32)
# DTYPE=f32|bf16|auto chooses the dtype (default f32, as the committed study ran; issue 23's bf16 comparison:
# DTYPE=bf16 SEEDS=3 OUT=evals/sst2/dtype-study/bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
SEEDS=${SEEDS:-5}
DTYPE=${DTYPE:-f32}
OUT=${OUT:-evals/sst2/default-study}
t0=$(date +%s)
"$PEZ" tune sst2 --fluency 0.003 --dtype "$DTYPE" --seeds "$SEEDS" --out "$OUT" > /dev/null
echo "$(( $(date +%s) - t0 ))" > "$OUT/wall_s.txt"   # the whole command, model loads included
cat "$OUT/summary.md"
