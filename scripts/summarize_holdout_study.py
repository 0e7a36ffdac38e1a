"""Table of scripts/run_holdout_study.sh: dev accuracy and per-class accuracies (mean ± std over seeds) for each
holdout rule, uncalibrated (the run's own dev pass) and with content-free calibration (pez eval)."""
import json, pathlib, statistics, sys

out = pathlib.Path(sys.argv[1])


def ms(xs):
    xs = [x * 100 for x in xs]
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2f}" if xs else "–"


print("# SST-2 holdout rule and calibration (SmolLM2-135M, PEZ + fluency 0.003)\n")
print("Command: `bash scripts/run_holdout_study.sh` (each seed: `pez tune sst2 --fluency 0.003 --steps 150 --batch-size 16 "
      "--holdout 300 --eval-every 50 --holdout-rule RULE --seed S`, then `pez eval --prompt-file RUN --calibration content-free`). "
      "Dev = the 872 GLUE SST-2 dev sentences (428 negative, 444 positive). Calibration is applied at evaluation only: "
      "the holdout picked each prompt uncalibrated.\n")
print("| holdout rule | calibration | seeds | dev accuracy | negative | positive | wall per run (s) |")
print("|---|---|---|---|---|---|---|")
rows = []
for rule in ["random", "long"]:
    runs = sorted((out / rule).glob("s*/prompt.json"))
    arts = [json.loads(p.read_text()) for p in runs]
    # Wall time per run from the sweep's summary (checkpoints are not committed).
    walls = [r["wall_s"] for r in json.loads((out / rule / "summary.json").read_text())["runs"]]
    raw = [(a["dev_accuracy"], [k / t for k, t in a["dev_per_class"]]) for a in arts if a.get("dev_per_class")]
    cal = []
    for p in runs:
        f = p.parent / "eval-content-free.json"
        if f.exists():
            acc = json.loads(f.read_text())["accuracy"]
            cal.append((acc["accuracy"], [k / t for k, t in acc["per_class"]]))
    for name, xs in [("none", raw), ("content-free", cal)]:
        if xs:
            print(f"| {rule} | {name} | {len(xs)} | {ms([x[0] for x in xs])} | {ms([x[1][0] for x in xs])} | "
                  f"{ms([x[1][1] for x in xs])} | {statistics.mean(walls):.0f} |")
    for p, a in zip(runs, arts):
        rows.append((rule, p.parent.name, a["holdout_accuracy"], a.get("dev_accuracy"), a["prompt"]))
print("\nPer seed (holdout accuracy of the chosen prompt, dev accuracy uncalibrated):\n")
print("| rule | seed | holdout | dev | prompt |\n|---|---|---|---|---|")
for rule, s, h, d, p in rows:
    print(f"| {rule} | {s} | {h * 100:.1f} | {d * 100:.2f} | `{p.replace(chr(10), chr(92) + 'n')}` |")
wall = out / "wall_s.txt"
if wall.exists():
    print(f"\nWall time of the whole study: {wall.read_text().strip()} s.")
