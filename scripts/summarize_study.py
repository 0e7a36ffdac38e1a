"""Issue 38's study as one table and one plot: every finished tuning run under a study folder (the cells of
evals/sst2/study/*.toml, run by `pez sweep run`), grouped by setting (steps, batch, prompt length, start) over
its seeds, against the default setting (the README main job before the study: 200 steps of 16, 10 tokens, label
start):

  - SST-2 dev accuracy per seed, mean and sample std; the best seed by holdout (best-of-N as `--seeds N --top 1`);
  - paired t over the seeds both settings ran, and exact McNemar per seed (the same seed's prompts on the same 872
    sentences, from each run's dev_predictions.jsonl; runs from before that file existed get it from
    `pez eval --predictions` in the run's dtype, checked to give the run's own dev counts), against the default
    and, for the other settings that start from random words, against the 10-token main job (200 steps of 16, 10
    tokens, random start);
  - wall time per run (the run's own clock at its last metrics record: training and holdout passes).

Shorter settings come from longer runs: a PEZ run of N steps is the first N steps of a longer one (the same
records; crates/pez-tune/tests/horizon.rs), so a run of 800 steps also gives the 200- and 400-step settings of its
batch and seed: the best prompt by holdout among its records up to step N, scored on dev by `pez eval` in the run's
dtype and kept in <run>/at-step-N/ (prompt.json, dev_predictions.jsonl), its wall time the run's clock at step N.
Where a real run of that setting and seed exists too, the two must have found the same prompt. A run still going
(or stopped, its checkpoint kept to resume) gives the shorter settings its records have passed.

Writes <study>/table.md, <study>/study.json and <study>/pareto.svg (dev mean against compute, in units of the main
job's 200 steps of 16 rows of a 10-token prompt: steps x batch / 3200 x the cost of a step at the setting's prompt
length relative to 10 tokens, measured by scripts/time_prompt_len.sh into <study>/step_cost.json (a length it
did not measure stays off the plot and the front; without the file every length counts 1), since the runs' wall times move with what else shares the two cores; the Pareto
front: the settings no other setting beats in both).

  PEZ=.../release/pez python3 scripts/summarize_study.py evals/sst2/study [more folders of runs]

More folders (e.g. evals/sst2/main-job and main-job-10tokens, the README jobs' seeds from `pez tune --seeds 5`) add their runs (`*/prompt.json`)
to the same settings; a setting and seed found twice must have the same prompt.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from scipy.stats import ttest_rel

import sst2_dev
from sst2_dev import read_predictions

study = Path(sys.argv[1])
more = [Path(a) for a in sys.argv[2:]]
pez = os.environ.get("PEZ", os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release/pez"))
DEFAULT = (200, 16, 10, "label")
MAIN = (200, 16, 10, "random")  # the README main job from the study's choice of the random start to that of 20 tokens
NEW_MAIN = (200, 16, 20, "random")  # the README main job now
KEY = ("steps", "batch_size", "prompt_len", "init")
SHORTER = (200, 400)  # settings of the steps-batch study read from its 800-step runs

gold = sst2_dev.gold()


def right_per_class(preds: list[int]) -> list[int]:
    return [sum(1 for p, y in zip(preds, gold) if y == c and p == c) for c in (0, 1)]


def predictions(run: Path, art: dict) -> list[int]:
    """The run's dev labels in data order, made by pez eval for runs older than dev_predictions.jsonl."""
    f = run / "dev_predictions.jsonl"
    if not f.exists():
        dtype = art["config"]["dtype"]
        subprocess.run([pez, "eval", "--prompt-file", str(run), "--dtype", dtype, "--json", "--predictions", str(f)],
                       check=True, capture_output=True)
    preds = read_predictions(f)
    per = right_per_class(preds)
    want = [k for k, _ in art["dev_per_class"]]
    if len(preds) != len(gold) or per != want:
        f.unlink()
        raise SystemExit(f"{run}: predictions give {per} right per class, the run says {want}")
    return preds


def at_step(run: Path, art: dict, records: list[dict], n: int) -> tuple[dict, float]:
    """The prompt a run of `n` steps returns, read from a longer run's metrics `records` (see above), as a
    prompt.json without dev scores; and the longer run's clock at step `n`."""
    wall = next(r["elapsed_s"] for r in records if r["step"] == n)
    best = [r for r in records if r["step"] <= n and r["best"]][-1]
    short = dict(art, prompt=best["prompt"], token_ids=best["token_ids"], holdout_accuracy=best["holdout_accuracy"],
                 fluency_log_ppl=best["fluency_log_ppl"], step=best["step"], dev_accuracy=None, dev_per_class=None,
                 config=dict(art["config"], steps=n, out=str(run / f"at-step-{n}")))
    return short, wall


def score(d: Path, short: dict) -> dict:
    """`short` scored on SST-2 dev by pez eval in its run's dtype, kept in `d` (and read from there next time)."""
    if (d / "prompt.json").exists() and (d / "dev_predictions.jsonl").exists():
        kept = json.load(open(d / "prompt.json"))
        assert kept["token_ids"] == short["token_ids"], f"{d}: another prompt than its run's records give"
        return kept
    d.mkdir(exist_ok=True)
    json.dump(short, open(d / "prompt.json", "w"), indent=2)
    c = short["config"]
    subprocess.run([pez, "eval", "--prompt-file", str(d), "--dtype", c["dtype"], "--batch-size", str(c["eval_batch"]),
                    "--json", "--predictions", str(d / "dev_predictions.jsonl")], check=True, capture_output=True)
    right = right_per_class(read_predictions(d / "dev_predictions.jsonl"))
    short = dict(short, dev_accuracy=sum(right) / len(gold),
                 dev_per_class=[[r, gold.count(k)] for k, r in enumerate(right)])
    json.dump(short, open(d / "prompt.json", "w"), indent=2)
    return short


def add(runs: dict, where: Path, art: dict, wall: float, preds) -> None:
    """The run at `where` under its setting and seed; `preds()` gives its dev labels (called only if it is new)."""
    c = art["config"]
    key, seed = tuple(c[k] for k in KEY), c["seed"]
    if (key, seed) in runs:  # the same setting in two sweep files, or a real run and one read from a longer run
        assert runs[key, seed]["prompt"] == art["prompt"], f"{where}: same setting and seed, another prompt"
        return
    runs[key, seed] = {
        "dir": str(where),
        "prompt": art["prompt"],
        "holdout": art["holdout_accuracy"],
        "dev": art["dev_accuracy"],
        "per_class": [k / n for k, n in art["dev_per_class"]],
        "wall_s": wall,
        "preds": preds(),
    }


runs = {}
finished, going = [], []
for p in sorted(study.glob("*/*/prompt.json")) + [p for m in more for p in sorted(m.glob("*/prompt.json"))]:
    if not (p.parent / "metrics.jsonl").exists():
        continue
    art = json.load(open(p))
    records = [json.loads(l) for l in open(p.parent / "metrics.jsonl")]
    (finished if art.get("dev_accuracy") is not None else going).append((p.parent, art, records))
for run, art, records in finished:
    # The run's clock at its last record (training and holdout passes): committed, unlike its checkpoint.
    add(runs, run, art, records[-1]["elapsed_s"], lambda: predictions(run, art))
for run, art, records in finished + going:
    c = art["config"]
    for n in SHORTER:
        reached = any(r["step"] == n for r in records)
        if n < c["steps"] and n % c["eval_every"] == 0 and c["method"] == "pez" and reached:
            short, wall = at_step(run, art, records, n)
            d = run / f"at-step-{n}"
            key = tuple(short["config"][k] for k in KEY)
            if (key, c["seed"]) in runs:  # a real run of it: it must have found this prompt
                assert runs[key, c["seed"]]["prompt"] == short["prompt"], f"{d}: another prompt than the real run's"
                continue
            short = score(d, short)
            add(runs, d, short, wall, lambda: read_predictions(d / "dev_predictions.jsonl"))

settings = sorted({k for k, _ in runs}, key=lambda k: (k != DEFAULT, k))
seeds_of = lambda key: {s: r for (k, s), r in runs.items() if k == key}
base, main = seeds_of(DEFAULT), seeds_of(MAIN)


def paired_tests(k: tuple, seeds: list[int], ref: dict) -> dict:
    """McNemar per seed and paired t over the seeds setting `k` shares with the reference runs `ref`."""
    shared = [s for s in seeds if s in ref]
    out = {}
    if shared:
        out["mcnemar"] = {s: sst2_dev.mcnemar(ref[s]["preds"], runs[k, s]["preds"], gold) for s in shared}
    if len(shared) >= 2:
        t = ttest_rel([runs[k, s]["dev"] for s in shared], [ref[s]["dev"] for s in shared])
        out["paired_t"] = {"seeds": shared, "t": float(t.statistic), "p": float(t.pvalue)}
    return out


cost_file = study / "step_cost.json"
step_cost = json.load(open(cost_file))["relative_to_10_tokens"] if cost_file.exists() else {}
if not step_cost:
    print(f"{cost_file} is missing: compute counts every prompt length's step alike", file=sys.stderr)

rows = []
for k in settings:
    seeds = sorted(s for kk, s in runs if kk == k)
    rs = [runs[k, s] for s in seeds]
    devs = [r["dev"] for r in rs]
    mean = sum(devs) / len(devs)
    std = (sum((d - mean) ** 2 for d in devs) / (len(devs) - 1)) ** 0.5 if len(devs) > 1 else None
    best = max(zip(rs, seeds), key=lambda t: (t[0]["holdout"], -t[1]))
    # a length whose step cost was not measured has no place on the compute axis (None: off the plot and front)
    cost = step_cost.get(str(k[2]), None if step_cost else 1.0)
    row = dict(zip(KEY, k), units=None if cost is None else round(k[0] * k[1] / 3200 * cost, 2), seeds=seeds, dev=devs, dev_mean=mean, dev_std=std,
               best_by_holdout={"seed": best[1], "dev": best[0]["dev"]},
               wall_s=[r["wall_s"] for r in rs], wall_mean_s=sum(r["wall_s"] for r in rs) / len(rs),
               prompts=[r["prompt"] for r in rs])
    if k != DEFAULT:
        row.update(paired_tests(k, seeds, base))
    if k != MAIN and k[3] == MAIN[3]:
        row["vs_main_job"] = paired_tests(k, seeds, main)
    rows.append(row)

# Pareto front: no other setting has a higher dev mean at no more compute.
costed = [r for r in rows if r["units"] is not None]
for r in rows:
    r["pareto"] = r in costed and not any(
        o is not r and o["dev_mean"] > r["dev_mean"] and o["units"] <= r["units"] for o in costed)

pct = lambda x: f"{100 * x:.2f}"
paired = lambda t: f"t = {t['t']:+.2f}, p = {t['p']:.3g} ({len(t['seeds'])} seeds)" if t else "–"
lines = ["| steps | batch | tokens | start | compute (main-job units) | seeds | dev per seed | dev mean ± std | best by holdout (seed: dev) | "
         "wall per run (min) | vs default: paired t over seeds | vs default, McNemar per seed (only default right / "
         "only this right, p) | vs 10-token main job: paired t over seeds | vs 10-token main job, McNemar per seed | front |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
mcnemars = lambda mc: "; ".join(f"s{s}: {a}/{b}, p = {p:.3g}" for s, (a, b, p) in mc.items()) or "–"
for r in rows:
    t = r.get("paired_t")
    vs_main = r.get("vs_main_job", {})
    lines.append(
        f"| {r['steps']} | {r['batch_size']} | {r['prompt_len']} | {r['init']}"
        f"{' (default)' if tuple(r[k] for k in KEY) == DEFAULT else ''}"
        f"{' (10-token main job)' if tuple(r[k] for k in KEY) == MAIN else ''}"
        f"{' (main job)' if tuple(r[k] for k in KEY) == NEW_MAIN else ''} | {'not measured' if r['units'] is None else format(r['units'], 'g')} | {len(r['seeds'])} | "
        f"{', '.join(pct(d) for d in r['dev'])} | {pct(r['dev_mean'])}"
        f"{' ± ' + pct(r['dev_std']) if r['dev_std'] is not None else ''} | "
        f"{r['best_by_holdout']['seed']}: {pct(r['best_by_holdout']['dev'])} | "
        f"{', '.join(f'{w / 60:.1f}' for w in r['wall_s'])} | "
        f"{paired(t)} | {mcnemars(r.get('mcnemar', {}))} | "
        f"{paired(vs_main.get('paired_t'))} | {mcnemars(vs_main.get('mcnemar', {}))} | "
        f"{'yes' if r['pareto'] else ''} |")
(study / "table.md").write_text("\n".join(lines) + "\n")
json.dump(rows, open(study / "study.json", "w"), indent=1)

# The plot: dev mean (with the seeds' range) against wall time, the front joined.
W, H, L, B = 640, 400, 60, 50
xs = [r["units"] for r in costed]
ys = [100 * d for r in costed for d in r["dev"]]
x0, x1 = 0, max(xs) * 1.1
y0, y1 = min(ys) - 1, max(ys) + 1
X = lambda x: L + (x - x0) / (x1 - x0) * (W - L - 20)
Y = lambda y: H - B - (y - y0) / (y1 - y0) * (H - B - 20)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H - B}" x2="{W - 20}" y2="{H - B}" stroke="black"/>',
       f'<line x1="{L}" y1="20" x2="{L}" y2="{H - B}" stroke="black"/>',
       f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">compute per run (main-job units: steps x batch / 3200 x step cost at the length)</text>',
       f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">SST-2 dev accuracy (%)</text>']
for i in range(6):
    xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
    svg += [f'<text x="{X(xv):.1f}" y="{H - B + 15}" text-anchor="middle">{xv:.1f}</text>',
            f'<text x="{L - 5}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:.1f}</text>']
front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["units"])
svg.append('<polyline fill="none" stroke="#d62728" stroke-dasharray="4 3" points="' +
           " ".join(f"{X(r['units']):.1f},{Y(100 * r['dev_mean']):.1f}" for r in front) + '"/>')
seen = {}
for r in costed:
    # settings of the same compute side by side, 14 px apart, so their labels do not overlap
    nth = seen[r["units"]] = seen.get(r["units"], -1) + 1
    x, lo, hi = X(r["units"]) + 14 * nth, Y(100 * min(r["dev"])), Y(100 * max(r["dev"]))
    colour = "#d62728" if r["pareto"] else "#1f77b4"
    label = f"{r['steps']}x{r['batch_size']}, {r['prompt_len']} tok, {r['init']} (n={len(r['seeds'])})"
    svg += [f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}" stroke="{colour}"/>',
            f'<circle cx="{x:.1f}" cy="{Y(100 * r["dev_mean"]):.1f}" r="4" fill="{colour}"/>',
            f'<text x="{x + 6:.1f}" y="{Y(100 * r["dev_mean"]) - 4:.1f}" transform="rotate(-30 {x + 6:.1f} {Y(100 * r["dev_mean"]) - 4:.1f})">{label}</text>']
svg.append("</svg>")
(study / "pareto.svg").write_text("\n".join(svg) + "\n")
print((study / "table.md").read_text())
