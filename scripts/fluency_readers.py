"""Issue 26's measures for every finished cell of a fluency sweep: dev accuracy and the prompt's log-perplexity
under the source model (from its prompt.json), and under an independent reader, Gemma 3 270M: its accuracy with
the prompt moved there as text, and the prompt's log-perplexity (`pez eval --json`: prompt_log_ppl). Each cell's
figures are cached in <cell>/readers.json; the table goes to stdout (Markdown).

    python3 scripts/fluency_readers.py evals/sst2/fluency-sweep/sweep.toml [--reader gemma3-270m] [--pez PATH]
"""
import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--reader", default="gemma3-270m")
    ap.add_argument("--pez", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "pez"))
    a = ap.parse_args()
    plan = subprocess.run([a.pez, "sweep", "plan", a.sweep], capture_output=True, text=True, check=True).stdout.splitlines()
    out_dir = plan[0].split("run directories under ", 1)[1]
    rows = []
    for line in plan[2:]:
        index, state, name = line.split(None, 2)
        if state != "finished":
            continue
        cell = os.path.join(out_dir, name)
        p = json.load(open(os.path.join(cell, "prompt.json")))
        cache = os.path.join(cell, "readers.json")
        readers = json.load(open(cache)) if os.path.exists(cache) else {}
        if a.reader not in readers:
            r = subprocess.run([a.pez, "eval", p["task"], "--prompt-file", cell, "--model", a.reader, "--json"], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{cell}: pez eval on {a.reader} failed: {r.stderr[-500:]}")
            e = json.loads(r.stdout)
            readers[a.reader] = {"accuracy": e["accuracy"]["accuracy"], "prompt_log_ppl": e["prompt_log_ppl"], "dtype": e["dtype"]}
            json.dump(readers, open(cache, "w"), indent=1)
        c = p["config"]
        rows.append((int(index), c["fluency"], c.get("tokens", "all"), c["seed"], p["dev_accuracy"], p["fluency_log_ppl"],
                     readers[a.reader]["accuracy"], readers[a.reader]["prompt_log_ppl"], p["prompt"]))
    print(f"| cell | fluency | tokens | seed | dev (source) | log-ppl (source) | dev on {a.reader} | log-ppl ({a.reader}) | prompt |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, w, t, s, dev, lp, gacc, glp, prompt in rows:
        shown = json.dumps(prompt)[1:-1].replace("|", "\\|").replace("`", "'")
        print(f"| {i} | {w} | {t} | {s} | {dev * 100:.2f} | {lp:.2f} | {gacc * 100:.2f} | {glp:.2f} | `{shown}` |")


if __name__ == "__main__":
    main()
