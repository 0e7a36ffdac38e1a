"""Table of scripts/run_holdout_study.sh (and, when it has run, scripts/run_default_study.sh): dev accuracy and
per-class accuracies (mean ± std over seeds) for each configuration, uncalibrated (the run's own dev pass) and with
content-free calibration (pez eval, where an eval-content-free.json sits in the run directory)."""
import json, pathlib, statistics, sys

out = pathlib.Path(sys.argv[1])
default = out.parent / "default-study"


def ms(xs):
    xs = [x * 100 for x in xs]
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2f}" if xs else "–"


print("# SST-2 holdout rule, training rows and calibration (SmolLM2-135M, PEZ + fluency 0.003)\n")
print("Commands: `bash scripts/run_holdout_study.sh` (each seed: `pez tune sst2 --fluency 0.003 --steps 150 --batch-size 16 "
      "--holdout 300 --eval-every 50 --holdout-rule RULE --train-rule random --seed S`) and `bash scripts/run_default_study.sh` "
      "(`pez tune sst2 --fluency 0.003 --seeds 5`: today's defaults, batch 16); calibrated rows: `pez eval --prompt-file RUN "
      "--calibration content-free`. Dev = the 872 GLUE SST-2 dev sentences (428 negative, 444 positive). Calibration is "
      "applied at evaluation only: the holdout picked each prompt uncalibrated.\n")
print("| configuration | calibration | seeds | dev accuracy | negative | positive | wall per run (s) |")
print("|---|---|---|---|---|---|---|")
def label(c):
    """A study's configuration, from what its runs recorded (train_rule is absent, i.e. random, in older runs)."""
    train = {"random": "any training row", "long": "long training rows"}[c.get("train_rule") or "random"]
    return f"{c['holdout_rule']} holdout {c['holdout']}, {train}, {c['steps']} steps, eval every {c['eval_every']}"


studies = [out / rule for rule in ["random", "long"]] + ([default] if (default / "summary.json").exists() else [])
rows = []
for d in studies:
    runs = sorted(d.glob("s*/prompt.json"))
    arts = [json.loads(p.read_text()) for p in runs]
    name = label(arts[0]["config"]) + (" (**default**)" if d == default else "")
    # Wall time per run from the sweep's summary (checkpoints are not committed).
    walls = [r["wall_s"] for r in json.loads((d / "summary.json").read_text())["runs"]]
    raw = [(a["dev_accuracy"], [k / t for k, t in a["dev_per_class"]]) for a in arts if a.get("dev_per_class")]
    cal = []
    for p in runs:
        f = p.parent / "eval-content-free.json"
        if f.exists():
            acc = json.loads(f.read_text())["accuracy"]
            cal.append((acc["accuracy"], [k / t for k, t in acc["per_class"]]))
    for cname, xs in [("none", raw), ("content-free", cal)]:
        if xs:
            print(f"| {name} | {cname} | {len(xs)} | {ms([x[0] for x in xs])} | {ms([x[1][0] for x in xs])} | "
                  f"{ms([x[1][1] for x in xs])} | {statistics.mean(walls):.0f} |")
    for p, a in zip(runs, arts):
        rows.append((d.name, p.parent.name, a["holdout_accuracy"], a.get("dev_accuracy"), a["step"], a["prompt"]))
print("\nPer seed (holdout accuracy of the chosen prompt, dev accuracy uncalibrated, the step it came from):\n")
print("| study | seed | holdout | dev | step | prompt |\n|---|---|---|---|---|---|")
for study, s, h, d, step, p in rows:
    print(f"| {study} | {s} | {h * 100:.1f} | {d * 100:.2f} | {step} | `{p.replace(chr(10), chr(92) + 'n')}` |")
print("\nWall times: the holdout study's column is not comparable between its rules (seeds 0-3 ran in earlier sessions "
      "beside other work, seed 4 at nice 19 beside builds; both rules do the same work per step). The default study ran "
      "alone on the 2 cores; its wall per run includes the dev pass.")
for d in [out, default]:
    wall = d / "wall_s.txt"
    if wall.exists():
        print(f"\n`{d}/wall_s.txt`: {wall.read_text().strip()} s for the whole command" + (" (only the last session's part)." if d == out else "."))
