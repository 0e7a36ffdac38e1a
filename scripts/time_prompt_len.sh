#!/usr/bin/env bash
# What a prompt's length costs: the main job's first 25 steps and first holdout pass (`pez tune sst2 --tokens words
# --fluency 0.005 --init random`, bf16, seed 0) at 5, 10 and 20 prompt tokens, one run after another on an otherwise
# idle machine, the lengths interleaved over ROUNDS rounds; each run's clock at step 25 (metrics.jsonl's elapsed_s:
# the model and data loads are not in it). Writes evals/sst2/study/step_cost.json, which scripts/summarize_study.py
# reads to put prompt lengths on the study's compute axis.
#   PEZ=.../release/pez ROUNDS=1 bash scripts/time_prompt_len.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
ROUNDS=${ROUNDS:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for len in 5 10 20; do
    "$PEZ" tune sst2 --tokens words --fluency 0.005 --init random --dtype bf16 --prompt-len "$len" --steps 25 \
      --eval-every 25 --skip-dev --out "$tmp/r$r-len$len" > /dev/null 2>&1
  done
done
python3 - "$tmp" "$ROUNDS" <<'PY'
import json, subprocess, sys
from pathlib import Path
tmp, rounds = Path(sys.argv[1]), int(sys.argv[2])
secs = {L: [json.loads((tmp / f"r{r}-len{L}/metrics.jsonl").open().readline())["elapsed_s"] for r in range(1, rounds + 1)]
        for L in (5, 10, 20)}
for L, v in secs.items():
    print(f"{L} tokens: " + ", ".join(f"{s:.1f} s" for s in v))
mean = {L: sum(v) / len(v) for L, v in secs.items()}
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
out = {"what": "seconds to step 25 of the main job (25 steps + one 500-row holdout pass), bf16, seed 0",
       "cpu": model, "threads": len(__import__("os").sched_getaffinity(0)), "rounds": rounds,
       "seconds": {str(L): v for L, v in secs.items()},
       "relative_to_10_tokens": {str(L): mean[L] / mean[10] for L in mean}}
Path("evals/sst2/study/step_cost.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out["relative_to_10_tokens"]))
PY
