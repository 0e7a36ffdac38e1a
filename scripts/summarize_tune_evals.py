#!/usr/bin/env python3
"""Markdown tables of the tuning runs under evals/ (reads each run's prompt.json and evals/tune_log.txt)."""
import json, pathlib, re

ROOT = pathlib.Path(__file__).resolve().parent.parent
E = ROOT / "evals"
walls = {}
name = None
for line in (E / "tune_log.txt").read_text().splitlines():
    m = re.match(r"== (\S+): (.*)", line)
    if m:
        name = m.group(1)
        walls[name] = dict(cmd=m.group(2))
    m = re.match(r"\s+wall (\d+) s", line)
    if m and name:
        walls[name]["wall"] = int(m.group(1))


def empty(task):
    return json.loads((E / f"{task}/empty.out.json").read_text())["accuracy"]


def shown(prompt):
    """A prompt as one table cell: newlines and tabs written as escapes."""
    return prompt.replace("|", "/").replace("\n", "\\n").replace("\t", "\\t")


def table(task, runs):
    e = empty(task)
    out = [f"| run | method | fluency w | steps | holdout acc | dev acc | Δ vs empty | prompt log-ppl | wall (s) | prompt |",
           "|---|---|---|---|---|---|---|---|---|---|",
           f"| empty template | – | – | – | – | {e['accuracy']*100:.2f} [{e['ci95'][0]*100:.1f}, {e['ci95'][1]*100:.1f}] | – | – | "
           f"{walls.get(task + '/empty', {}).get('wall', '')} | `` |"]
    for r in runs:
        p = E / task / r / "prompt.json"
        if not p.exists():
            continue
        a = json.loads(p.read_text())
        c = a["config"]
        steps = a["step"] if c.get("shots") is None else f"{a['step']} ({c['shots']}-shot)"
        dev = a["dev_accuracy"]
        out.append(f"| {r} | {a['method']} | {c['fluency']} | {steps} | {a['holdout_accuracy']*100:.1f} | {dev*100:.2f} | "
                   f"{(dev - e['accuracy'])*100:+.2f} | {a['fluency_log_ppl']:.2f} | {walls.get(task + '/' + r, {}).get('wall', '')} | "
                   f"`{shown(a['prompt'])}` |")
    return "\n".join(out)


print("## SST-2 (SmolLM2-135M-Instruct, dev = 872 sentences)\n")
methods = ["pez-fluency0.003", "pez-fluency0", "autoprompt-sgd", "fluentprompt", "soft"]
print(table("sst2", [m + s for m in methods for s in ["", "-s1", "-s2", "-s3"]]))
print("\n'steps' is the step of the best prompt by holdout accuracy (ties keep the later one). Soft: the prompt text is only "
      "the nearest tokens; its accuracy is the soft prompt's.\n")
print("## AG News few-shot (dev = dev_1k)\n")
print(table("agnews", ["pez-k2", "pez-k4"]))
print("\nCommands (from evals/tune_log.txt):\n")
for k, v in walls.items():
    print(f"- `{k}`: `pez {v['cmd'].removeprefix('pez ')}`")
