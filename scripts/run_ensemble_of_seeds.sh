#!/usr/bin/env bash
# Ensembles of five committed seeds, by default the README main job's before issue 38 chose the random start
# (evals/sst2/fluency-sweep/fluency0.005-tokenswords-s*: words-only, fluency 0.005, label start, 200 steps of 16,
# bf16): the k best by holdout (k = 1, 3, 5) as one classifier, without and with content-free calibration, scored
# on SST-2 dev in f32 with every text's prediction kept; then scripts/summarize_ensembles.py writes the table and
# the McNemar tests. A first part of issue 38's study: it reuses finished runs (no tuning), so it takes minutes.
#
#   CARGO_TARGET_DIR=... bash scripts/run_ensemble_of_seeds.sh
# SRC and OUT name other seeds (<SRC>0..<SRC>4) and where their ensembles go, INIT their start (the tune line
# below repeats the seeds' settings; only the calibration acts); issue 38's new main job:
#   SRC=evals/sst2/main-job-10tokens/s OUT=evals/sst2/main-job-10tokens/ensembles INIT=random bash scripts/run_ensemble_of_seeds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
SRC=${SRC:-evals/sst2/fluency-sweep/fluency0.005-tokenswords-s}
OUT=${OUT:-evals/sst2/ensembles}
INIT=${INIT:-label}
for cal in none content-free; do
  for k in 1 3 5; do
    root=$OUT/k$k-$cal
    mkdir -p "$root"
    # `pez tune --seeds` keeps finished runs: the five seeds, linked in as s0..s4, are only read.
    for s in 0 1 2 3 4; do ln -sfn "$(realpath --relative-to="$root" "$SRC$s")" "$root/s$s"; done
    "$PEZ" tune sst2 --tokens words --fluency 0.005 --init "$INIT" --holdout-rule long --train-rule long --seeds 5 \
      --ensemble "$k" --calibration "$cal" --skip-dev --out "$root" > "$root/tune.log" 2>&1
    /usr/bin/time -f "%e" -o "$root/eval_wall_s.txt" "$PEZ" eval --prompt-file "$root" --dtype f32 --json \
      --predictions "$root/dev_predictions.jsonl" > "$root/eval.json" 2> "$root/eval.log"
    echo "k=$k calibration=$cal: $(python3 -c "import json; print(round(100*json.load(open('$root/eval.json'))['accuracy']['accuracy'], 2))")%"
  done
done
python3 scripts/summarize_ensembles.py "$OUT"
