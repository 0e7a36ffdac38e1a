#!/usr/bin/env bash
# Prompt distillation with all-MiniLM-L6-v2 (real weights): every prompt of data/distill_prompts.txt shortened to 25%
# and 50% of its tokens, with PEZ over the whole vocabulary (the paper) and over the long prompt's own tokens, against
# truncation and the best of as many random prompts (from the same tokens) as PEZ steps.
#   bash scripts/run_distill_evals.sh     (about 15 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=${PEZ:-${CARGO_TARGET_DIR:-target}/release/pez}
OUT=evals/distill/minilm.jsonl
: > "$OUT"
t0=$(date +%s)
while IFS= read -r p; do
  for v in all prompt; do
    for r in 0.25 0.5; do
      "$PEZ" distill "$p" --ratio "$r" --steps 500 --model minilm-l6 --vocab "$v" --json >> "$OUT"
    done
  done
done < data/distill_prompts.txt
echo "wall $(( $(date +%s) - t0 )) s" > evals/distill/wall.txt
python3 - "$OUT" <<'PY' > evals/distill/README.md
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("# Prompt distillation with all-MiniLM-L6-v2\n")
print("Command: `bash scripts/run_distill_evals.sh` (`pez distill PROMPT --ratio R --steps 500 --model minilm-l6 --vocab V` "
      "for each of the 8 prompts in data/distill_prompts.txt). Cosine of mean-pooled sentence features to the original "
      "prompt's. Vocabulary `all`: any token (the paper); `prompt`: only the long prompt's own tokens (PEZ chooses which "
      "and in what order). The random baseline draws from the same tokens as PEZ.\n")
print("| vocabulary | ratio | n | PEZ | truncated | best of 500 random | PEZ > truncated | PEZ > random |\n|---|---|---|---|---|---|---|---|")
for v in ("all", "prompt"):
    for r in (0.25, 0.5):
        x = [o for o in rows if o["ratio"] == r and o.get("vocab", "all") == v]
        if not x:
            continue
        m = lambda k: sum(o[k] for o in x) / len(x)
        wins = sum(o["cosine"] > o["truncated_cosine"] for o in x)
        wins_r = sum(o["cosine"] > o["random_best_cosine"] for o in x)
        print(f"| {v} | {r} | {len(x)} | {m('cosine'):.4f} | {m('truncated_cosine'):.4f} | {m('random_best_cosine'):.4f} | {wins}/{len(x)} | {wins_r}/{len(x)} |")
print("\n## Prompts\n\n| vocabulary | ratio | original | PEZ prompt | cos | truncated cos |\n|---|---|---|---|---|---|")
for o in rows:
    print(f"| {o.get('vocab', 'all')} | {o['ratio']} | {o['original'][:60]}... | `{o['prompt']}` | {o['cosine']:.3f} | {o['truncated_cosine']:.3f} |")
PY
cat evals/distill/README.md
