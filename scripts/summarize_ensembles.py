"""The ensembles of scripts/run_ensemble_of_seeds.sh as a table: SST-2 dev accuracy (95% Wilson interval), per
class, and exact McNemar tests against the single best prompt by holdout (k = 1, uncalibrated: what `pez tune
--seeds 5 --top 1` gives), on the same 872 sentences. Writes <dir>/README.md's table part to <dir>/table.md."""
import json
import sys
from pathlib import Path

from sst2_dev import gold, mcnemar, read_predictions

d = Path(sys.argv[1])


def load(name):
    root = d / name
    preds = read_predictions(root / "dev_predictions.jsonl")
    ev = json.load(open(root / "eval.json"))
    ens = json.load(open(root / "ensemble.json"))
    wall = float(open(root / "eval_wall_s.txt").read().split()[-1])
    return preds, ev, ens, wall


y = gold()
base = load("k1-none")[0]
rows = ["| k | calibration | members (seeds, best first) | dev | 95% CI | negative / positive | vs k=1 none: only base right / only this right, McNemar p | eval wall (s) |",
        "|---|---|---|---|---|---|---|---|"]
for cal in ["none", "content-free"]:
    for k in [1, 3, 5]:
        preds, ev, ens, wall = load(f"k{k}-{cal}")
        acc = ev["accuracy"]
        assert len(preds) == len(y)
        assert sum(p == t for p, t in zip(preds, y)) == acc["correct"]
        per = " / ".join(f"{100 * c / n:.1f}" for c, n in acc["per_class"])
        a, b, p = mcnemar(base, preds, y)
        seeds = ", ".join(str(m["seed"]) for m in ens["members"])
        rows.append(f"| {k} | {cal} | {seeds} | {100 * acc['accuracy']:.2f} | {100 * acc['ci95'][0]:.1f}-{100 * acc['ci95'][1]:.1f} | {per} | "
                    f"{a} / {b}, p = {p:.3g} | {wall:.0f} |")
table = "\n".join(rows) + "\n"
(d / "table.md").write_text(table)
print(table)
