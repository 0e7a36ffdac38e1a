"""Table of scripts/run_transfer_calibration.sh's two runs: per prompt and on average, accuracy and per-class
accuracy on the target without and with content-free calibration, and a paired t-test between the two.

    python3 scripts/summarize_transfer_calibration.py evals/sst2/transfer-calibration DEV_TSV > .../README.md
"""
import csv
import json
import math
import statistics as st
import sys

out, dev = sys.argv[1], sys.argv[2]
labels = [int(r["label"]) for r in csv.DictReader(open(dev), delimiter="\t", quoting=csv.QUOTE_NONE)]
runs = {cal: json.load(open(f"{out}/{cal}/transfer_scores.json"))["prompts"] for cal in ("none", "content-free")}


def per_class(correct, c):
    idx = [i for i, l in enumerate(labels) if l == c]
    return 100 * sum(correct[i] for i in idx) / len(idx)


print("# SST-2 prompts from SmolLM2-135M on Gemma 3 270M, with and without content-free calibration\n")
print(f"Command: `bash scripts/run_transfer_calibration.sh` (then this table: `python3 scripts/summarize_transfer_calibration.py {out} {dev}`).")
print("The prompts are the holdout study's (`evals/sst2/holdout-study`, PEZ + fluency 0.003, 150 steps); calibration offsets are")
print(f"estimated on Gemma 3 itself from content-free inputs. Dev: {len(labels)} sentences ({labels.count(0)} negative, {labels.count(1)} positive).\n")
print("| prompt | model | calibration | accuracy | negative | positive |")
print("|---|---|---|---|---|---|")
rows = {}
for cal, prompts in runs.items():
    for p in prompts:
        key = (p["method"], p["prompt"])
        acc, neg, pos = 100 * p["accuracy"], per_class(p["correct"], 0), per_class(p["correct"], 1)
        rows.setdefault(key, {})[cal] = (acc, neg, pos, p["correct"])
for (method, prompt), r in rows.items():
    for cal in ("none", "content-free"):
        if cal in r:
            acc, neg, pos, _ = r[cal]
            print(f"| `{prompt!r}`[{method}] | gemma3-270m | {cal} | {acc:.2f} | {neg:.1f} | {pos:.1f} |")
print()
learned = [r for (m, _), r in rows.items() if m != "empty" and len(r) == 2]
for cal in ("none", "content-free"):
    accs = [r[cal][0] for r in learned]
    negs = [r[cal][1] for r in learned]
    poss = [r[cal][2] for r in learned]
    print(f"- learned prompts, {cal}: accuracy {st.mean(accs):.2f} ± {st.stdev(accs):.2f}, negative {st.mean(negs):.1f} ± {st.stdev(negs):.1f}, "
          f"positive {st.mean(poss):.1f} ± {st.stdev(poss):.1f} (n = {len(accs)})")
# Paired over examples: correctness averaged over the prompts, calibrated minus uncalibrated.
d = [st.mean(r["content-free"][3][i] for r in learned) - st.mean(r["none"][3][i] for r in learned) for i in range(len(labels))]
t = st.mean(d) / (st.stdev(d) / math.sqrt(len(d))) if st.stdev(d) > 0 else float("nan")
print(f"- calibrated minus uncalibrated, paired over the {len(d)} examples: {100 * st.mean(d):+.2f} points, t = {t:.2f}")
