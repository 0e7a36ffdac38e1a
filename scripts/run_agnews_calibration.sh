#!/usr/bin/env bash
# Issue 15: AG News few-shot (K=4 per class) with and without content-free calibration, 3 seeds, SmolLM2-135M.
# Each seed: the committed few-shot recipe (evals/README.md), then its prompt scored on dev_1k uncalibrated (the
# run's own dev pass) and calibrated (`pez eval --calibration content-free`). Seed 0 is evals/agnews/pez-k4.
#   bash scripts/run_agnews_calibration.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
for s in 1 2; do
  out=evals/agnews/pez-k4-s$s
  [ -f "$out/prompt.json" ] && grep -q dev_accuracy "$out/prompt.json" || \
    "$PEZ" tune agnews --shots 4 --epochs 100 --batch-size 16 --eval-every 10 --fluency 0.003 --seed "$s" --out "$out" > "$out.out.json"
done
for run in evals/agnews/pez-k4 evals/agnews/pez-k4-s1 evals/agnews/pez-k4-s2; do
  for c in none content-free; do
    f="$run/eval-$c.json"
    [ -f "$f" ] || "$PEZ" eval --prompt-file "$run" --calibration "$c" --json > "$f"
  done
done
python3 - <<'PY'
import json, statistics as st
rows = []
for run in ["evals/agnews/pez-k4", "evals/agnews/pez-k4-s1", "evals/agnews/pez-k4-s2"]:
    for c in ["none", "content-free"]:
        v = json.load(open(f"{run}/eval-{c}.json"))
        rows.append((run, c, v))
def acc(v): return 100 * v["accuracy"]["accuracy"]
def per(v): return [100 * c / n for c, n in v["accuracy"]["per_class"]]
print("| calibration | seeds | dev accuracy | per class (World, Sports, Business, Sci/Tech) |\n|---|---|---|---|")
for c in ["none", "content-free"]:
    vs = [v for _, cc, v in rows if cc == c]
    a = [acc(v) for v in vs]
    pc = list(zip(*[per(v) for v in vs]))
    print(f"| {c} | {len(vs)} | {st.mean(a):.2f} ± {st.stdev(a):.2f} | " + ", ".join(f"{st.mean(x):.1f}" for x in pc) + " |")
print("\n| run | calibration | dev accuracy | per class |\n|---|---|---|---|")
for run, c, v in rows:
    print(f"| {run} | {c} | {acc(v):.2f} | " + ", ".join(f"{x:.1f}" for x in per(v)) + " |")
PY
