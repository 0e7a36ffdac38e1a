"""Issue 38's AG News checks: per seed, each setting against the label start (evals/agnews/start.toml's `initlabel`
cells, 10 tokens) on the 1,000 dev rows (exact McNemar), and a paired t over the seeds both finished. Settings: the
random start at 10 tokens (start.toml) and at 20 tokens (length20.toml), the latter also against the former.
  python3 scripts/summarize_agnews_start.py
"""
import csv
import json
from pathlib import Path
from scipy.stats import ttest_rel
from sst2_dev import mcnemar, read_predictions

repo = Path(__file__).resolve().parent.parent
gold = [int(r[1]) for r in csv.reader(open(repo.parent / "shared/data/agnews/dev_1k.csv"))]
SETTINGS = {  # run folders under evals/agnews, by seed
    "label, 10 tokens": "start/initlabel-s{}",
    "random, 10 tokens": "start/initrandom-s{}",
    "random, 20 tokens": "length20/initrandom-s{}",
}


def run(setting, seed):
    """(dev accuracy, predictions) of a finished run, checked against each other; None if it has not finished."""
    d = repo / "evals/agnews" / SETTINGS[setting].format(seed)
    if not (d / "dev_predictions.jsonl").exists():
        return None
    preds = read_predictions(d / "dev_predictions.jsonl")
    acc = json.load(open(d / "prompt.json"))["dev_accuracy"]
    assert abs(sum(p == y for p, y in zip(preds, gold)) / len(gold) - acc) < 1e-9
    return acc, preds


def compare(base, other):
    print(f"{other} against {base}:")
    pairs = []
    for s in range(3):
        a, b = run(base, s), run(other, s)
        if a is None or b is None:
            continue
        only_a, only_b, p = mcnemar(a[1], b[1], gold)
        pairs.append((a[0], b[0]))
        print(f"  seed {s}: {100*a[0]:.1f} against {100*b[0]:.1f}; only {base} right {only_a}, only {other} right "
              f"{only_b}, McNemar p = {p:.3g}")
    if len(pairs) >= 2:
        t = ttest_rel([b for _, b in pairs], [a for a, _ in pairs])
        mean = sum(b for _, b in pairs) / len(pairs)
        print(f"  mean {100*mean:.2f}; paired t = {t.statistic:+.2f}, p = {t.pvalue:.3g} ({len(pairs)} seeds)")


compare("label, 10 tokens", "random, 10 tokens")
compare("label, 10 tokens", "random, 20 tokens")
compare("random, 10 tokens", "random, 20 tokens")
