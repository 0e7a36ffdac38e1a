#!/usr/bin/env bash
# Issue 15's study on SST-2 / SmolLM2-135M: PEZ + fluency 0.003 with the holdout drawn at random from train (the
# paper) or from long train rows (10+ words, like dev's whole sentences), each seed's best prompt then scored on
# dev with and without content-free calibration (applied at evaluation; the holdout picked without it).
#   bash scripts/run_holdout_study.sh        (SEEDS=5 STEPS=150 HOLDOUT=300 by default; about 90 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
SEEDS=${SEEDS:-5}; STEPS=${STEPS:-150}; HOLDOUT=${HOLDOUT:-300}
OUT=evals/sst2/holdout-study
mkdir -p "$OUT"
t0=$(date +%s)
common=(tune sst2 --fluency 0.003 --steps "$STEPS" --batch-size 16 --holdout "$HOLDOUT" --eval-every 50 --train-rule random)
# Seeds in two rounds, alternating the rules, so an interrupted study still compares them on the same seeds.
half=$(( (SEEDS + 1) / 2 ))
for round in "0 $half" "$half $((SEEDS - half))"; do
  set -- $round
  [ "$2" -gt 0 ] || continue
  for rule in long random; do
    "$PEZ" "${common[@]}" --holdout-rule "$rule" --seed "$1" --seeds "$2" --out "$OUT/$rule" > /dev/null
  done
done
for rule in long random; do
  "$PEZ" "${common[@]}" --holdout-rule "$rule" --seed 0 --seeds "$SEEDS" --out "$OUT/$rule" > /dev/null  # summary of all seeds
  for s in $(seq 0 $((SEEDS - 1))); do
    f="$OUT/$rule/s$s/eval-content-free.json"
    [ -f "$f" ] || "$PEZ" eval --prompt-file "$OUT/$rule/s$s" --calibration content-free --json > "$f"
  done
done
echo "$(( $(date +%s) - t0 ))" > "$OUT/wall_s.txt"
python3 scripts/summarize_holdout_study.py "$OUT" > "$OUT/README.md"
cat "$OUT/README.md"
