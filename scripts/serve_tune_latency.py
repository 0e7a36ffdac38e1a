"""One real tuning job through pez-serve's API (the official openai client) on SmolLM2-135M with SST-2's train file,
and /v1/classify latency while it runs against without it.

    python scripts/serve_tune_latency.py --pez-serve target/release/pez-serve --pez target/release/pez \
        --data ../shared/data/sst2 --out evals/serve/tuning-job

1. pez-serve starts on SmolLM2-135M (f32, classification only) with an empty state directory.
2. Without a job: one client sends /v1/classify requests of one SST-2 dev sentence, paced every --every seconds,
   for --quiet-s seconds; each request's latency is kept.
3. SST-2's train split (67,349 rows, as chat examples) and dev split (872, as {"text", "label"}) are uploaded, and a
   job is created with the README main job's settings (words-only tokens, fluency 0.005, a 500-row holdout and
   batches of long rows, 200 steps, batch 16) and a seed; the same paced load runs until the job ends.
4. The job's prompt and dev accuracy are compared with `pez tune --settings` of the job's own settings file, run
   after the server has stopped (alone on the machine: its wall time is the job's without serving).
Writes <out>/result.json and prints a summary.
"""
import argparse
import csv
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai

try:
    import httpx
except ImportError:  # openai >= 3 ships httpx2
    import httpx2 as httpx

NAMES = ["negative", "positive"]
HYPERPARAMETERS = {"tokens": "words", "fluency": 0.005, "holdout_rule": "long", "train_rule": "long", "holdout": 500}


def rows(path):
    return [(r["sentence"], NAMES[int(r["label"])]) for r in csv.DictReader(open(path), delimiter="\t", quoting=csv.QUOTE_NONE)]


def percentiles(xs):
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
    return {"n": len(xs), "p50_ms": q(0.50) * 1e3, "p90_ms": q(0.90) * 1e3, "p99_ms": q(0.99) * 1e3, "max_ms": xs[-1] * 1e3}


class Load(threading.Thread):
    """Paced /v1/classify requests of one text each until stopped; the latency of each."""

    def __init__(self, url, model, texts, every):
        super().__init__(daemon=True)
        self.url, self.model, self.texts, self.every = url, model, texts, every
        self.latencies, self.errors, self.stop = [], 0, threading.Event()

    def run(self):
        client, i = httpx.Client(timeout=60), 0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            r = client.post(self.url + "/v1/classify", json={"model": self.model, "input": self.texts[i % len(self.texts)]})
            dt = time.perf_counter() - t0
            if r.status_code == 200:
                self.latencies.append(dt)
            else:
                self.errors += 1
            i += 1
            self.stop.wait(max(0.0, self.every - dt))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pez-serve", required=True)
    ap.add_argument("--pez", required=True)
    ap.add_argument("--data", required=True, help="folder with SST-2's train.tsv and dev.tsv")
    ap.add_argument("--out", required=True)
    ap.add_argument("--classifier", default="evals/sst2/pez-fluency0.003-s1", help="a run directory served as the probe's classifier")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=float, default=0.5, help="seconds between classify requests")
    ap.add_argument("--quiet-s", type=float, default=120)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pez-tune-latency-"))
    train, dev = rows(Path(a.data, "train.tsv")), rows(Path(a.data, "dev.tsv"))
    Path(tmp, "train.jsonl").write_text("".join(json.dumps({"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": l}]}) + "\n" for t, l in train))
    Path(tmp, "dev.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in dev))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    log = open(out / "serve.log", "w")
    server = subprocess.Popen([a.pez_serve, "--model", "smollm2-135m", "--dtype", "f32", "--no-generation", "--state-dir", str(tmp / "state"),
                               "--classifiers", a.classifier, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            sys.exit("pez-serve exited")
        time.sleep(0.5)
    # The probe: a learned SST-2 classifier (a committed run) on one dev sentence at a time.
    texts, probe = [t for t, _ in dev], Path(a.classifier).name
    quiet = Load(url, probe, texts, a.every)
    quiet.start()
    time.sleep(a.quiet_s)
    quiet.stop.set()
    quiet.join()
    c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    t_upload = time.time()
    f_train = c.files.create(file=("sst2-train.jsonl", Path(tmp, "train.jsonl").read_bytes()), purpose="fine-tune")
    f_dev = c.files.create(file=("sst2-dev.jsonl", Path(tmp, "dev.jsonl").read_bytes()), purpose="fine-tune")
    upload_s = time.time() - t_upload
    busy = Load(url, probe, texts, a.every)
    busy.start()
    job = c.fine_tuning.jobs.create(model="smollm2-135m", training_file=f_train.id, validation_file=f_dev.id, seed=a.seed, suffix="sst2",
                                    method={"type": "pez", "pez": {"hyperparameters": HYPERPARAMETERS}})
    t_job = time.time()
    while (job := c.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        time.sleep(5)
    job_s = time.time() - t_job
    busy.stop.set()
    busy.join()
    events = list(c.fine_tuning.jobs.list_events(job.id, limit=100))
    run = tmp / "state" / "jobs" / job.id
    mine = json.loads((run / "run" / "prompt.json").read_text())
    server.terminate()
    server.wait(timeout=120)
    t_ref = time.time()
    subprocess.run([a.pez, "tune", "--settings", str(run / "settings.toml"), "--out", str(tmp / "ref")], check=True,
                   stdout=subprocess.DEVNULL, stderr=open(out / "pez-tune.log", "w"))
    ref_s = time.time() - t_ref
    ref = json.loads((tmp / "ref" / "prompt.json").read_text())
    result = {
        "job": {"id": job.id, "status": job.status, "fine_tuned_model": job.fine_tuned_model, "wall_s": job_s, "upload_s": upload_s,
                "events": len(events), "prompt": mine["prompt"], "token_ids": mine["token_ids"], "holdout_accuracy": mine["holdout_accuracy"],
                "dev_accuracy": mine["dev_accuracy"], "dev_per_class": mine.get("dev_per_class"), "settings": HYPERPARAMETERS, "seed": a.seed},
        "pez_tune": {"wall_s": ref_s, "prompt": ref["prompt"], "token_ids": ref["token_ids"], "holdout_accuracy": ref["holdout_accuracy"],
                     "dev_accuracy": ref["dev_accuracy"]},
        "equal_to_pez_tune": mine["token_ids"] == ref["token_ids"] and mine["dev_accuracy"] == ref["dev_accuracy"],
        "classify_without_job": percentiles(quiet.latencies) | {"errors": quiet.errors},
        "classify_during_job": percentiles(busy.latencies) | {"errors": busy.errors},
        "request_every_s": a.every,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
