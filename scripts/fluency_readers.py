"""Issue 26's measures for every finished cell of a fluency sweep, and the paper's transfer claim tested.

For each prompt: dev accuracy (and per class) and its log-perplexity under the source model (its prompt.json), and
under an independent reader, Gemma 3 270M: its accuracy with the prompt moved there as text, and the prompt's
log-perplexity (`pez eval --json --predictions`: prompt_log_ppl and every example's label). Each cell's reader
figures are cached in <cell>/readers.json and <cell>/<reader>.predictions.jsonl. `--baseline DIR...` adds runs to
compare with (today's default prompts). Writes to --out: table.md (every prompt, escaped; means per setting;
paired tests), pareto.svg (accuracy against the reader's log-perplexity, one point per prompt) and study.json.

Paired tests, on the reader's dev predictions (the 872 SST-2 dev sentences): each fluent prompt (w > 0) against the
w = 0 prompt of the same token set and seed, exact two-sided McNemar (binomial on the discordant sentences); and
each fluent setting's prompts together against the w = 0 ones of the same token set, a paired t-test over sentences
on correctness averaged over the seeds (as `pez transfer` tests a method; p from the normal, df > 800).

    python3 scripts/fluency_readers.py evals/sst2/fluency-sweep/sweep.toml --out evals/sst2/fluency-sweep \
        [--baseline evals/sst2/default-study/s0 ...] [--reader gemma3-270m] [--pez PATH]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys


def gold_labels():
    """SST-2 dev labels in data order (the order `pez eval --predictions` writes), from PEZ_DATA or ../shared/data."""
    root = os.path.join(os.path.dirname(__file__), "..")
    data = os.environ.get("PEZ_DATA", os.path.join(root, "..", "shared", "data"))
    lines = open(os.path.join(data, "sst2", "dev.tsv")).read().splitlines()[1:]
    return [int(l.rsplit("\t", 1)[1]) for l in lines]


def read_cell(pez, cell, reader, gold):
    p = json.load(open(os.path.join(cell, "prompt.json")))
    cache = os.path.join(cell, "readers.json")
    preds = os.path.join(cell, f"{reader}.predictions.jsonl")
    readers = json.load(open(cache)) if os.path.exists(cache) else {}
    if reader not in readers or not os.path.exists(preds):
        r = subprocess.run([pez, "eval", p["task"], "--prompt-file", cell, "--model", reader, "--json", "--predictions", preds],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{cell}: pez eval on {reader} failed: {r.stderr[-500:]}")
        e = json.loads(r.stdout)
        readers[reader] = {"accuracy": e["accuracy"]["accuracy"], "prompt_log_ppl": e["prompt_log_ppl"], "dtype": e["dtype"]}
        json.dump(readers, open(cache, "w"), indent=1)
    c = p.get("config", {})
    predicted = [x["label_index"] for x in map(json.loads, open(preds))]
    if len(predicted) != len(gold):
        sys.exit(f"{preds}: {len(predicted)} predictions for {len(gold)} dev sentences")
    correct = [int(p == g) for p, g in zip(predicted, gold)]
    if abs(sum(correct) / len(gold) - readers[reader]["accuracy"]) > 1e-9:
        sys.exit(f"{preds}: the predictions do not give the accuracy pez eval reported: another data order?")
    return {"cell": cell, "fluency": c.get("fluency"), "tokens": c.get("tokens", "all"), "seed": c.get("seed"),
            "dev": p["dev_accuracy"], "per_class": [k / n for k, n in p["dev_per_class"]], "log_ppl": p["fluency_log_ppl"],
            "reader_acc": readers[reader]["accuracy"], "reader_log_ppl": readers[reader]["prompt_log_ppl"], "prompt": p["prompt"],
            "correct": correct}


def mcnemar(a, b):
    """Exact two-sided McNemar: p of the discordant split under Binomial(n, 1/2); (a-only, b-only, p)."""
    n10 = sum(1 for x, y in zip(a, b) if x and not y)
    n01 = sum(1 for x, y in zip(a, b) if y and not x)
    n, k = n10 + n01, min(n10, n01)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return n10, n01, p


def paired_t(a, b):
    d = [x - y for x, y in zip(a, b)]
    m, s = statistics.mean(d), statistics.stdev(d)
    t = m / (s / math.sqrt(len(d))) if s > 0 else 0.0
    return m, t, math.erfc(abs(t) / math.sqrt(2))


def svg(rows, base, reader, path):
    """Dev accuracy (source model) against the reader's log-perplexity: one point per prompt, the weight written
    beside it, colour by token set; today's default prompts as black crosses."""
    pts = rows + base
    x0, x1 = min(r["reader_log_ppl"] for r in pts) - 0.5, max(r["reader_log_ppl"] for r in pts) + 0.5
    y0, y1 = min(r["dev"] for r in pts) * 100 - 1, max(r["dev"] for r in pts) * 100 + 1
    W, H, L, B = 720, 480, 60, 50
    X = lambda v: L + (v - x0) / (x1 - x0) * (W - L - 20)
    Y = lambda v: H - B - (v * 100 - y0) / (y1 - y0) * (H - B - 20)
    col = {"all": "#1f77b4", "printable": "#2ca02c", "words": "#d62728"}
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<line x1="{L}" y1="{H - B}" x2="{W - 20}" y2="{H - B}" stroke="black"/><line x1="{L}" y1="20" x2="{L}" y2="{H - B}" stroke="black"/>']
    for i in range(int(math.ceil(x0)), int(x1) + 1):
        o.append(f'<text x="{X(i):.1f}" y="{H - B + 15}" text-anchor="middle">{i}</text>')
    for v in range(int(math.ceil(y0)), int(y1) + 1, 2):
        o.append(f'<text x="{L - 6}" y="{Y(v / 100) + 4:.1f}" text-anchor="end">{v}</text>')
    o.append(f'<text x="{(L + W) / 2}" y="{H - 12}" text-anchor="middle">prompt log-perplexity under {reader} (nats per token; lower reads better)</text>')
    o.append(f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">SST-2 dev accuracy, source model (%)</text>')
    for r in rows:
        x, y = X(r["reader_log_ppl"]), Y(r["dev"])
        o.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{col.get(r["tokens"], "gray")}" fill-opacity="0.8"/>')
        o.append(f'<text x="{x + 6:.1f}" y="{y - 4:.1f}" font-size="9">{r["fluency"]}/s{r["seed"]}</text>')
    for r in base:
        x, y = X(r["reader_log_ppl"]), Y(r["dev"])
        o.append(f'<path d="M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}M{x - 4:.1f},{y + 4:.1f}L{x + 4:.1f},{y - 4:.1f}" stroke="black" stroke-width="2"/>')
    for i, (k, c) in enumerate(list(col.items()) + [("today's default (fluency 0.003, f32)", "black")]):
        y = H - B - 75 + 16 * i  # bottom right: low accuracy and high perplexity, where no prompt worth having sits
        o.append(f'<rect x="{W - 250}" y="{y - 9}" width="10" height="10" fill="{c}"/><text x="{W - 235}" y="{y}">tokens {k}</text>'
                 if c != "black" else f'<text x="{W - 250}" y="{y}">x  {k}</text>')
    o.append(f'<text x="{L + 5}" y="14">Each point one prompt, labelled weight/seed</text></svg>')
    open(path, "w").write("\n".join(o))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--out", required=True)
    ap.add_argument("--baseline", nargs="*", default=[])
    ap.add_argument("--reader", default="gemma3-270m")
    ap.add_argument("--pez", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "pez"))
    a = ap.parse_args()
    plan = subprocess.run([a.pez, "sweep", "plan", a.sweep], capture_output=True, text=True, check=True).stdout.splitlines()
    out_dir = plan[0].split("run directories under ", 1)[1]
    gold = gold_labels()
    rows = []
    for line in plan[2:]:
        index, state, name = line.split(None, 2)
        if state == "finished":
            rows.append(dict(read_cell(a.pez, os.path.join(out_dir, name), a.reader, gold), index=int(index)))
    base = [read_cell(a.pez, d, a.reader, gold) for d in a.baseline]
    esc = lambda s: json.dumps(s)[1:-1].replace("|", "\\|").replace("`", "'")
    md = [f"Reader: {a.reader}. Log-perplexity: mean next-token NLL of the prompt's tokens (nats per token); under the "
          "reader the prompt is re-tokenized from its text. Prompts JSON-escaped.\n",
          f"| cell | fluency | tokens | seed | dev | dev neg / pos | log-ppl (source) | dev on {a.reader} | log-ppl ({a.reader}) | prompt |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["index"]) + base:
        md.append(f"| {r.get('index', os.path.relpath(r['cell']))} | {r['fluency']} | {r['tokens']} | {r['seed']} | {r['dev'] * 100:.2f} | "
                  f"{r['per_class'][0] * 100:.1f} / {r['per_class'][1] * 100:.1f} | {r['log_ppl']:.2f} | {r['reader_acc'] * 100:.2f} | "
                  f"{r['reader_log_ppl']:.2f} | `{esc(r['prompt'])}` |")
    groups = {}
    for r in rows:
        groups.setdefault((r["tokens"], r["fluency"]), []).append(r)
    if base:
        groups[("today's default", "0.003 f32")] = base
    ms = lambda v: f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"
    md += ["\nMeans over seeds (± sample std):\n",
           f"| tokens | fluency | seeds | dev | log-ppl (source) | dev on {a.reader} | log-ppl ({a.reader}) |", "|---|---|---|---|---|---|---|"]
    for (t, w), g in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        md.append(f"| {t} | {w} | {len(g)} | {ms([r['dev'] * 100 for r in g])} | {ms([r['log_ppl'] for r in g])} | "
                  f"{ms([r['reader_acc'] * 100 for r in g])} | {ms([r['reader_log_ppl'] for r in g])} |")
    tests = {"per_prompt": [], "per_setting": []}
    md += [f"\nTransfer to {a.reader}, fluent (w > 0) against w = 0, same token set (and seed for single prompts):\n",
           "| tokens | fluency | seed | fluent-only right | w=0-only right | McNemar p |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["index"]):
        z = [q for q in rows if q["fluency"] == 0 and q["tokens"] == r["tokens"] and q["seed"] == r["seed"]]
        if r["fluency"] and z:
            n10, n01, p = mcnemar(r["correct"], z[0]["correct"])
            tests["per_prompt"].append({"tokens": r["tokens"], "fluency": r["fluency"], "seed": r["seed"], "fluent_only": n10, "zero_only": n01, "p": p})
            md.append(f"| {r['tokens']} | {r['fluency']} | {r['seed']} | {n10} | {n01} | {p:.3g} |")
    md += ["\n| tokens | fluency | prompts (fluent / w=0) | mean accuracy difference (points) | t | p |", "|---|---|---|---|---|---|"]
    for (t, w), g in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        z = groups.get((t, 0.0))
        if not isinstance(w, float) or not w or not z:
            continue
        avg = lambda gs: [statistics.mean(c) for c in zip(*(q["correct"] for q in gs))]
        d, tt, p = paired_t(avg(g), avg(z))
        tests["per_setting"].append({"tokens": t, "fluency": w, "n_fluent": len(g), "n_zero": len(z), "diff": d, "t": tt, "p": p})
        md.append(f"| {t} | {w} | {len(g)} / {len(z)} | {d * 100:+.2f} | {tt:.2f} | {p:.3g} |")
    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "table.md"), "w").write("\n".join(md) + "\n")
    svg(rows, base, a.reader, os.path.join(a.out, "pareto.svg"))
    strip = lambda r: {k: v for k, v in r.items() if k != "correct"}
    json.dump({"reader": a.reader, "prompts": [strip(r) for r in rows], "baseline": [strip(r) for r in base], "tests": tests},
              open(os.path.join(a.out, "study.json"), "w"), indent=1)
    print("\n".join(md))


if __name__ == "__main__":
    main()
