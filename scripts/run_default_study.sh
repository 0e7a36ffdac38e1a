#!/usr/bin/env bash
# The README's main job over 5 seeds, one after another (each resumable, each its own run dir <OUT>/s<seed>), with
# each seed's wall time, holdout and dev accuracy in <OUT>/summary.md; the whole command's wall time in wall_s.txt.
#   bash scripts/run_default_study.sh     (SEEDS=5, DTYPE=bf16, OUT=evals/sst2/main-job: issue 38's main job)
# JOB gives the job's flags. The committed earlier studies ran the main job of their day:
#   JOB="--tokens words --fluency 0.005 --init random" OUT=evals/sst2/main-job-10tokens   (issue 38, 10 tokens)
#   JOB="--fluency 0.003" DTYPE=f32 OUT=evals/sst2/default-study   (issue 15)
#   JOB="--fluency 0.003" DTYPE=bf16 SEEDS=3 OUT=evals/sst2/dtype-study/bf16   (issue 23)
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
SEEDS=${SEEDS:-5}
DTYPE=${DTYPE:-bf16}
JOB=${JOB:---tokens words --fluency 0.005 --init random --prompt-len 20}
OUT=${OUT:-evals/sst2/main-job}
t0=$(date +%s)
# shellcheck disable=SC2086 # JOB is a list of flags
"$PEZ" tune sst2 $JOB --dtype "$DTYPE" --seeds "$SEEDS" --out "$OUT" > /dev/null
echo "$(( $(date +%s) - t0 ))" > "$OUT/wall_s.txt"   # the whole command, model loads included
cat "$OUT/summary.md"
