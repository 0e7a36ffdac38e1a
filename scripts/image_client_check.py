"""One tuning job and one classification through pez-serve in its container (scripts/image_check.sh), with the
official `openai` client: `create` uploads the tiny task, tunes, classifies and saves the job's id; after the
container restarts, `after-restart` finds the job succeeded and its classifier still served.
"""
import argparse
import csv
import json
import sys
import time

import openai

try:
    import httpx
except ImportError:  # openai >= 3 ships httpx2
    import httpx2 as httpx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--state", required=True, help="where `create` writes the job id for `after-restart`")
    ap.add_argument("step", choices=["create", "after-restart"])
    a = ap.parse_args()
    c = openai.OpenAI(base_url=a.url, api_key=a.key, max_retries=0, timeout=120)
    names = ["negative", "positive"]
    rows = [(r["sentence"], names[int(r["label"])]) for r in csv.DictReader(open(a.data), delimiter="\t")]
    if a.step == "create":
        f = c.files.create(file=("train.jsonl", "".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in rows).encode()),
                           purpose="fine-tune")
        hp = {"steps": 6, "batch_size": 2, "eval_every": 3, "holdout": 4, "prompt_len": 2}
        job = c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=f.id, seed=1, method={"type": "pez", "pez": {"hyperparameters": hp}})
        t0 = time.time()
        while (job := c.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            if time.time() - t0 > 120:
                sys.exit(f"image_check: the job is still {job.status}")
            time.sleep(0.3)
        if job.status != "succeeded":
            sys.exit(f"image_check: the job {job.status}: {job.error}")
        json.dump({"job": job.id, "model": job.fine_tuned_model}, open(a.state, "w"))
        print(f"image_check: job {job.id} succeeded in the container: {job.fine_tuned_model}")
    saved = json.load(open(a.state))
    job = c.fine_tuning.jobs.retrieve(saved["job"])
    if job.status != "succeeded" or job.fine_tuned_model != saved["model"]:
        sys.exit(f"image_check: the job is {job.status} ({job.fine_tuned_model})")
    label = c.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": rows[0][0]}]).choices[0].message.content
    r = httpx.post(a.url + "/classify", headers={"Authorization": f"Bearer {a.key}"}, json={"model": job.fine_tuned_model, "input": [t for t, _ in rows]})
    labels = [d["label"] for d in r.json()["data"]]
    if r.status_code != 200 or labels[0] != label or not set(labels) <= set(names):
        sys.exit(f"image_check: classification: {r.status_code} {labels} vs {label}")
    print(f"image_check: {a.step}: job {job.id} {job.status}; chat {label!r}; /v1/classify {labels}")


if __name__ == "__main__":
    main()
