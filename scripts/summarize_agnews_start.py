"""Issue 38's AG News check (evals/agnews/start.toml): per seed, the label start against the random start on the
1,000 dev rows (exact McNemar), and a paired t over the seeds both finished.
  python3 scripts/summarize_agnews_start.py
"""
import csv
import json
from pathlib import Path
from scipy.stats import ttest_rel
from sst2_dev import mcnemar, read_predictions

repo = Path(__file__).resolve().parent.parent
gold = [int(r[1]) for r in csv.reader(open(repo.parent / "shared/data/agnews/dev_1k.csv"))]
root = repo / "evals/agnews/start"
pairs = []
for s in range(3):
    a, b = root / f"initlabel-s{s}", root / f"initrandom-s{s}"
    if not ((a / "dev_predictions.jsonl").exists() and (b / "dev_predictions.jsonl").exists()):
        continue
    pa, pb = (read_predictions(d / "dev_predictions.jsonl") for d in (a, b))
    da, db = (json.load(open(d / "prompt.json"))["dev_accuracy"] for d in (a, b))
    assert abs(sum(p == y for p, y in zip(pa, gold)) / len(gold) - da) < 1e-9
    only_a, only_b, p = mcnemar(pa, pb, gold)
    pairs.append((da, db))
    print(f"seed {s}: label {100*da:.1f}, random {100*db:.1f}; only label right {only_a}, only random right {only_b}, McNemar p = {p:.3g}")
if len(pairs) >= 2:
    t = ttest_rel([b for _, b in pairs], [a for a, _ in pairs])
    print(f"paired t = {t.statistic:+.2f}, p = {t.pvalue:.3g} ({len(pairs)} seeds)")
