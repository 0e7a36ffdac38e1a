#!/usr/bin/env bash
# The tuning results in evals/: SmolLM2-135M on SST-2 (empty template, PEZ with and without fluency, three
# baselines) and few-shot AG News. Writes run directories under evals/ and a log with wall times.
#   bash scripts/run_tune_evals.sh            (about an hour on 2 CPU cores)
#   ONLY='sst2/*-s2' bash scripts/run_tune_evals.sh   (only the runs whose name matches the pattern)
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
LOG=evals/tune_log.txt
mkdir -p evals/sst2 evals/agnews
run() { # name, then pez arguments
  local name=$1; shift
  [[ -n "${ONLY:-}" && "$name" != $ONLY ]] && return 0
  local t0=$(date +%s)
  echo "== $name: pez $*" | tee -a "$LOG"
  "$PEZ" "$@" > "evals/$name.out.json"
  echo "   wall $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
}
SST="--holdout 200 --batch-size 16 --eval-every 50 --holdout-rule random --train-rule random"  # the rules these runs had (before SST-2 defaulted to long rows)
run sst2/empty eval sst2 --empty --json
run sst2/pez-fluency0.003 tune sst2 --fluency 0.003 --steps 300 $SST --out evals/sst2/pez-fluency0.003
run agnews/empty eval agnews --empty --json
run agnews/pez-k2 tune agnews --shots 2 --epochs 100 --batch-size 16 --eval-every 10 --fluency 0.003 --out evals/agnews/pez-k2
run agnews/pez-k4 tune agnews --shots 4 --epochs 100 --batch-size 16 --eval-every 10 --fluency 0.003 --out evals/agnews/pez-k4
run sst2/pez-fluency0 tune sst2 --fluency 0 --steps 150 $SST --out evals/sst2/pez-fluency0
run sst2/autoprompt-sgd tune sst2 --method autoprompt-sgd --steps 150 $SST --out evals/sst2/autoprompt-sgd
run sst2/fluentprompt tune sst2 --method fluentprompt --fluency 0.003 --steps 150 $SST --out evals/sst2/fluentprompt
run sst2/soft tune sst2 --method soft --steps 150 $SST --out evals/sst2/soft
# Second seeds (seed 1) for the transfer grid.
run sst2/pez-fluency0.003-s1 tune sst2 --fluency 0.003 --steps 150 --seed 1 $SST --out evals/sst2/pez-fluency0.003-s1
run sst2/pez-fluency0-s1 tune sst2 --fluency 0 --steps 150 --seed 1 $SST --out evals/sst2/pez-fluency0-s1
run sst2/autoprompt-sgd-s1 tune sst2 --method autoprompt-sgd --steps 150 --seed 1 $SST --out evals/sst2/autoprompt-sgd-s1
run sst2/fluentprompt-s1 tune sst2 --method fluentprompt --fluency 0.003 --steps 150 --seed 1 $SST --out evals/sst2/fluentprompt-s1
# Third and fourth seeds (seeds 2 and 3).
run sst2/pez-fluency0.003-s2 tune sst2 --fluency 0.003 --steps 150 --seed 2 $SST --out evals/sst2/pez-fluency0.003-s2
run sst2/pez-fluency0-s2 tune sst2 --fluency 0 --steps 150 --seed 2 $SST --out evals/sst2/pez-fluency0-s2
run sst2/autoprompt-sgd-s2 tune sst2 --method autoprompt-sgd --steps 150 --seed 2 $SST --out evals/sst2/autoprompt-sgd-s2
run sst2/fluentprompt-s2 tune sst2 --method fluentprompt --fluency 0.003 --steps 150 --seed 2 $SST --out evals/sst2/fluentprompt-s2
run sst2/pez-fluency0.003-s3 tune sst2 --fluency 0.003 --steps 150 --seed 3 $SST --out evals/sst2/pez-fluency0.003-s3
run sst2/pez-fluency0-s3 tune sst2 --fluency 0 --steps 150 --seed 3 $SST --out evals/sst2/pez-fluency0-s3
run sst2/autoprompt-sgd-s3 tune sst2 --method autoprompt-sgd --steps 150 --seed 3 $SST --out evals/sst2/autoprompt-sgd-s3
run sst2/fluentprompt-s3 tune sst2 --method fluentprompt --fluency 0.003 --steps 150 --seed 3 $SST --out evals/sst2/fluentprompt-s3
if [ -z "${ONLY:-}" ]; then echo "== done" | tee -a "$LOG"; fi
