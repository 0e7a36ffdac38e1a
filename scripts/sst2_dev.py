"""What the dev summaries share (summarize_ensembles.py, summarize_study.py, summarize_agnews_start.py): SST-2's 872
gold labels in data order (pez eval's order), a predictions file read, and the exact McNemar test of two
classifiers' predictions."""
import csv
import json
from pathlib import Path

from scipy.stats import binomtest


def gold():
    dev = Path(__file__).resolve().parent.parent.parent / "shared/data/sst2/dev.tsv"
    return [int(r["label"]) for r in csv.DictReader(open(dev), delimiter="\t", quoting=csv.QUOTE_NONE)]


def read_predictions(f):
    """Predicted label indices in data order from a `pez eval --predictions` (or a run's dev_predictions.jsonl) file."""
    return [json.loads(l)["label_index"] for l in open(f)]


def mcnemar(a, b, y):
    """Exact McNemar of b against a: sentences only a gets right, only b gets right, two-sided p."""
    only_a = sum(1 for p, q, t in zip(a, b, y) if p == t and q != t)
    only_b = sum(1 for p, q, t in zip(a, b, y) if q == t and p != t)
    n = only_a + only_b
    return only_a, only_b, (binomtest(only_b, n, 0.5).pvalue if n else 1.0)
