"""Tuning as a service, driven by the official `openai` package against real pez-serve processes on the tiny GPT-2
checkpoint (run by scripts/tuning_check.sh, so by the tests):

  1. upload, create, events until `succeeded`, then chat.completions and /v1/classify answer with the learned
     labels (equal to `pez eval` of the job's prompt.json), and the job's prompt equals `pez tune --settings` of
     the job's own settings file;
  2. cancel; list paging (files, jobs, events); every bad input refused as said, with nothing written;
  3. API keys: none is a 401; another key gets 404 for this key's file and job and does not list them, but may
     call the tuned classifier;
  4. a full queue answers 429;
  5. crash: `kill -9` of pez-serve while a job runs, restart on the same state directory: the job resumes and
     ends with the same prompt tokens and holdout as the same job run without the kill; no file, job or event
     lost; the tuned classifier of step 1 is served again after the restart.

    python scripts/tuning_client_check.py --pez-serve target/release/pez-serve --pez target/release/pez \
        --model crates/pez-models/tests/fixtures/transfer/gpt2 --data crates/pez-models/tests/fixtures/transfer/dev.tsv
"""
import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

try:
    import httpx
except ImportError:  # openai >= 3 ships httpx2
    import httpx2 as httpx

KEY_A, KEY_B = "key-alpha", "key-beta"
# Short runs of the tiny model: 12 examples, 4 held out, 2 prompt tokens.
SMALL = {"steps": 6, "batch_size": 2, "eval_every": 3, "holdout": 4, "prompt_len": 2, "dtype": "f32"}
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
    """A pez-serve process on the tiny model with two API keys and its own state directory."""

    def __init__(self, a, state, extra_toml=""):
        self.a, self.state, self.port = a, state, free_port()
        self.conf = Path(state).parent / f"serve-{self.port}.toml"
        self.conf.write_text(
            f'state_dir = "{state}"\n[[models]]\nname = "tiny-gpt2"\npath = "{a.model}"\ndtype = "f32"\n'
            f'[auth]\napi_keys = ["{KEY_A}", "{KEY_B}"]\npublic_metrics = false\n{extra_toml}'
        )
        self.log = open(Path(state).parent / f"serve-{self.port}.log", "w")
        self.p = subprocess.Popen([a.pez_serve, "--config", str(self.conf), "--port", str(self.port)],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.p.poll() is not None:
                sys.exit(f"pez-serve exited: {Path(self.log.name).read_text()[-3000:]}")
            time.sleep(0.2)
        self.a_client = openai.OpenAI(base_url=self.url + "/v1", api_key=KEY_A, max_retries=0, timeout=120)
        self.b_client = openai.OpenAI(base_url=self.url + "/v1", api_key=KEY_B, max_retries=0, timeout=120)

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


def jsonl(path, rows):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def wait(client, job_id, until=("succeeded", "failed", "cancelled"), timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = client.fine_tuning.jobs.retrieve(job_id)
        if j.status in until:
            return j
        time.sleep(0.2)
    sys.exit(f"job {job_id} never reached {until}")


def pez_hp(**kw):
    return {"type": "pez", "pez": {"hyperparameters": {**SMALL, **kw}}}


def all_events(client, job_id):
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))


def learned_labels_and_equality(a, s, files, tmp):
    """Step 1: a job end to end, its classifier served, its prompt equal to `pez tune` with the same settings."""
    c = s.a_client
    job = c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=files["train"], validation_file=files["dev"],
                                    seed=3, suffix="tiny", method=pez_hp(), metadata={"purpose": "check"})
    check(job.status == "queued" and job.method.type == "pez", f"jobs.create -> {job.id} {job.status}")
    hp = job.method.pez["hyperparameters"] if isinstance(job.method.pez, dict) else job.method.pez.hyperparameters
    check(hp["verbalizers"] == [" negative", " positive"] and hp["labels"] == ["negative", "positive"]
          and hp["template"] == " It was" and hp["steps"] == 6, f"the derived task is shown in the job: {hp}")
    job = wait(c, job.id)
    check(job.status == "succeeded" and job.fine_tuned_model.startswith("ft:tiny-gpt2:pez:tiny:"),
          f"the job {job.status}: {job.fine_tuned_model}")
    events = all_events(c, job.id)
    metrics = [e.data for e in events if e.type == "metrics"]
    check(any(d.get("holdout_accuracy") is not None for d in metrics) and any("eta_s" in d for d in metrics),
          f"{len(events)} events, {len(metrics)} with metrics (step, loss, holdout, ETA): {[e.message for e in events][:4]}")
    ckpts = list(c.fine_tuning.jobs.checkpoints.list(job.id))
    check(sorted(k.step_number for k in ckpts) == [3, 6], f"checkpoints at steps {[k.step_number for k in ckpts]}")
    ids = [m.id for m in c.models.list().data]
    check(job.fine_tuned_model in ids, "the tuned classifier is in /v1/models")
    texts = [r["sentence"] for r in csv.DictReader(open(a.data), delimiter="\t")]
    got = httpx.post(s.url + "/v1/classify", headers={"Authorization": f"Bearer {KEY_A}"},
                     json={"model": job.fine_tuned_model, "input": texts}, timeout=60).json()
    labels = [d["label"] for d in got["data"]]
    run = Path(tmp, "state", "jobs", job.id, "run")
    pred = Path(tmp, "pred.jsonl")
    subprocess.run([a.pez, "eval", str(run.parent / "task.toml"), "--prompt-file", str(run / "prompt.json"),
                    "--model", a.model, "--dtype", "f32", "--predictions", str(pred)], check=True, capture_output=True)
    want = [json.loads(l)["label"] for l in pred.read_text().splitlines()]
    check(labels == want, f"/v1/classify labels equal pez eval's on the job's prompt: {labels}")
    r = c.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": texts[0]}])
    check(r.choices[0].message.content == labels[0], f"chat.completions answers the learned label {labels[0]!r}")
    # The same run by `pez tune` from the job's own settings file (another directory): the same prompt.
    ref = Path(tmp, "ref")
    subprocess.run([a.pez, "tune", "--settings", str(run.parent / "settings.toml"), "--out", str(ref), "--json"],
                   check=True, capture_output=True)
    mine, theirs = json.loads((run / "prompt.json").read_text()), json.loads((ref / "prompt.json").read_text())
    check(mine["token_ids"] == theirs["token_ids"] and mine["holdout_accuracy"] == theirs["holdout_accuracy"]
          and mine["dev_accuracy"] == theirs["dev_accuracy"],
          f"the job's prompt equals pez tune --settings: {mine['prompt']!r} holdout {mine['holdout_accuracy']}")
    return job


def cancel_and_paging(s, files):
    c = s.a_client
    long = c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=files["train"], seed=1,
                                     method=pez_hp(steps=20000, eval_every=1000))
    wait(c, long.id, until=("running", "succeeded"))
    j = c.fine_tuning.jobs.cancel(long.id)
    time.sleep(0.5)
    j = c.fine_tuning.jobs.retrieve(long.id)
    check(j.status == "cancelled" and not j.fine_tuned_model, f"jobs.cancel -> {j.status}")
    try:
        c.fine_tuning.jobs.cancel(long.id)
        check(False, "cancelling a cancelled job is refused")
    except openai.BadRequestError:
        check(True, "cancelling a cancelled job is refused (400)")
    for i in range(3):
        c.files.create(file=(f"extra-{i}.jsonl", Path(files["path"]).read_bytes()), purpose="fine-tune")
    page = c.files.list(limit=2)
    every = [f.id for f in c.files.list(limit=2)]
    check(len(page.data) == 2 and page.has_more and len(every) == len(set(every)) >= 5,
          f"files.list limit=2: a page of 2 with more; {len(every)} by paging")
    jobs = [j.id for j in c.fine_tuning.jobs.list(limit=1)]
    check(len(jobs) == len(set(jobs)) >= 2 and jobs[0] == long.id, f"jobs.list limit=1 pages {len(jobs)} jobs, newest first")
    ev = all_events(c, long.id)
    first = c.fine_tuning.jobs.list_events(long.id, limit=2)
    after = c.fine_tuning.jobs.list_events(long.id, limit=2, after=first.data[-1].id)
    check([e.id for e in first.data + after.data] == [e.id for e in ev[:4]], f"events page by `after` ({len(ev)} events)")


def refused(what, call, status, text, param=None):
    try:
        call()
        check(False, f"{what}: accepted")
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        msg = str(body.get("message", e))
        ok = e.status_code == status and text in msg and (param is None or body.get("param") == param)
        check(ok, f"{what}: {e.status_code} {body.get('param')!r} {msg[:120]!r}")


def bad_input(s, files, tmp):
    c, state = s.a_client, Path(tmp, "state")
    before = (len(list(c.files.list())), len(list(c.fine_tuning.jobs.list())),
              sorted(os.listdir(state / "jobs")), sorted(os.listdir(state / "files")))
    good = Path(files["path"]).read_bytes()
    up = lambda name, data: lambda: c.files.create(file=(name, data), purpose="fine-tune")
    refused("a malformed JSONL line", up("bad.jsonl", good + b'{"text": "x", "label": \n'), 400, "line 13", "file")
    refused("an empty file", up("empty.jsonl", b""), 400, "empty", "file")
    refused("a file over max_file_bytes", up("big.jsonl", good * 200), 413, "larger than")
    refused("a file name with a path", up("../../etc/x.jsonl", good), 400, "without a path", "file")
    refused("another purpose", lambda: c.files.create(file=("a.jsonl", good), purpose="batch"), 400, "fine-tune", "purpose")
    one = c.files.create(file=("one.jsonl", b'{"text": "a good film", "label": "positive"}\n' * 8), purpose="fine-tune")
    create = lambda **kw: lambda: c.fine_tuning.jobs.create(**{"model": "tiny-gpt2", "training_file": files["train"], **kw})
    refused("one label only", create(training_file=one.id), 400, "at least two labels", "training_file")
    refused("two labels with the same first verbalizer token",
            create(method=pez_hp(verbalizers=[" good", " good"])), 400, "first token", "method.pez.hyperparameters.verbalizers")
    refused("an unknown base model", create(model="gpt-4o-mini"), 400, "not a base model", "model")
    refused("an unknown file id", create(training_file="file-nope"), 404, "file-nope", "training_file")
    refused("steps out of range", create(method=pez_hp(steps=10**9)), 400, "at most", "method.pez.hyperparameters.steps")
    refused("fluency out of range", create(method=pez_hp(fluency=2.0)), 400, "--fluency", "method.pez.hyperparameters.fluency")
    refused("an unknown hyperparameter", create(method=pez_hp(stepz=3)), 400, "stepz", "method.pez.hyperparameters.stepz")
    refused("a job's own field as a hyperparameter", create(method=pez_hp(seed=3)), 400, "own field", "method.pez.hyperparameters.seed")
    refused("a holdout as large as the data", create(method=pez_hp(holdout=12)), 400, "none would be left", "method.pez.hyperparameters.holdout")
    refused("an unsupported method", create(method={"type": "dpo"}), 400, "unknown variant")
    c.files.delete(one.id)
    gone = c.files.create(file=("gone.jsonl", good), purpose="fine-tune")
    c.files.delete(gone.id)
    refused("a job on a deleted file", create(training_file=gone.id), 404, gone.id, "training_file")
    after = (len(list(c.files.list())), len(list(c.fine_tuning.jobs.list())),
             sorted(os.listdir(state / "jobs")), sorted(os.listdir(state / "files")))
    check(after == before, "nothing was written by the refused requests (files, jobs, their directories)")
    # A file a running job uses may be deleted: the job has its own copy.
    mine = c.files.create(file=("mine.jsonl", good), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=mine.id, method=pez_hp(steps=400, eval_every=200))
    check(c.files.delete(mine.id).deleted, "the training file of a queued job is deleted")
    check(wait(c, job.id).status == "succeeded", "and the job still succeeds")
    # supervised (OpenAI's method) is accepted and runs with pez's defaults for what it does not say.
    sup = c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=files["train"],
                                    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}})
    check(sup.method.type == "pez" and sup.hyperparameters.batch_size == 16, "method supervised: accepted, pez's defaults")
    c.fine_tuning.jobs.cancel(sup.id)


def keys(s, files, job):
    no_key = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
    try:
        no_key.models.list()
        check(False, "a wrong key is refused")
    except openai.AuthenticationError as e:
        check(e.status_code == 401 and e.body.get("code") == "invalid_api_key", "a wrong key: 401 invalid_api_key")
    r = httpx.get(s.url + "/v1/models")
    check(r.status_code == 401 and "error" in r.json(), f"no key: {r.status_code} in OpenAI's shape")
    check(httpx.get(s.url + "/health").status_code == 200, "/health needs no key")
    check(httpx.get(s.url + "/metrics").status_code == 401, "/metrics needs a key (public_metrics = false)")
    b = s.b_client
    for what, call in [("job", lambda: b.fine_tuning.jobs.retrieve(job.id)), ("file", lambda: b.files.retrieve(files["train"])),
                       ("file content", lambda: b.files.content(files["train"])), ("events", lambda: b.fine_tuning.jobs.list_events(job.id)),
                       ("cancel", lambda: b.fine_tuning.jobs.cancel(job.id)), ("delete", lambda: b.files.delete(files["train"]))]:
        try:
            call()
            check(False, f"another key's {what}")
        except openai.NotFoundError:
            check(True, f"another key's {what}: 404")
    check(not list(b.files.list()) and not list(b.fine_tuning.jobs.list()),
          "another key lists no file and no job of this key")
    r = b.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "a bad movie"}])
    check(r.choices[0].message.content in ("negative", "positive"), "another key may call the tuned classifier")


def full_queue(s, files):
    c = s.a_client
    made, busy = [], None
    for _ in range(6):
        try:
            made.append(c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=files["train"],
                                                  method=pez_hp(steps=20000, eval_every=1000)).id)
        except openai.RateLimitError as e:
            busy = e
            break
    check(busy is not None and len(made) == 3, f"a full queue (1 running + 2 queued) answers 429 after {len(made)} jobs")
    for j in made:
        c.fine_tuning.jobs.cancel(j)


def crash(a, tmp, files_path):
    """Step 5 on a server of its own: kill -9 mid-run, restart, resume; against the same job without the kill."""
    state = Path(tmp, "crash", "state")
    state.mkdir(parents=True)
    s = Server(a, state)
    c = s.a_client
    f = c.files.create(file=("train.jsonl", Path(files_path).read_bytes()), purpose="fine-tune").id
    hp = pez_hp(steps=12000, eval_every=1000)
    killed = c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=f, seed=5, method=hp)
    t0 = time.time()
    while not list(c.fine_tuning.jobs.checkpoints.list(killed.id)) and time.time() - t0 < 300:
        time.sleep(0.05)
    time.sleep(0.3)  # past the checkpoint, mid-way to the next
    before = [e.id for e in all_events(c, killed.id)]
    files_before = [x.id for x in c.files.list()]
    s.kill9()
    check(wait_status(state, killed.id) == "running", f"killed with the job running, {len(before)} events so far")
    s = Server(a, state)
    c = s.a_client
    done = wait(c, killed.id)
    after = [e.id for e in all_events(c, killed.id)]
    check(done.status == "succeeded" and set(before) <= set(after), f"restarted: the job resumed and {done.status}; no event lost")
    check([x.id for x in c.files.list()] == files_before, "no file lost")
    again = wait(c, c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=f, seed=5, method=hp).id)
    run = lambda j: json.loads(Path(state, "jobs", j, "run", "prompt.json").read_text())
    k, u = run(killed.id), run(again.id)
    check(k["token_ids"] == u["token_ids"] and k["holdout_accuracy"] == u["holdout_accuracy"] and k["step"] == u["step"],
          f"the killed job ends as the same job without the kill: {k['prompt']!r} ({k['holdout_accuracy']}, step {k['step']})")
    check(any("restarted" in e.message for e in all_events(c, killed.id)), "an event says the job resumed after a restart")
    s.stop()


def wait_status(state, job_id):
    import sqlite3
    db = sqlite3.connect(Path(state, "pez.sqlite3"))
    return db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pez-serve", required=True)
    ap.add_argument("--pez", required=True)
    ap.add_argument("--model", required=True, help="the tiny GPT-2 checkpoint directory")
    ap.add_argument("--data", required=True, help="its tiny SST-2-like TSV (sentence, label)")
    a = ap.parse_args()
    a.model = str(Path(a.model).resolve())
    tmp = tempfile.mkdtemp(prefix="pez-tuning-")
    rows = list(csv.DictReader(open(a.data), delimiter="\t"))
    names = ["negative", "positive"]
    train = jsonl(Path(tmp, "train.jsonl"), [{"messages": [{"role": "system", "content": "Classify."},
                  {"role": "user", "content": r["sentence"]}, {"role": "assistant", "content": names[int(r["label"])]}]} for r in rows])
    dev = jsonl(Path(tmp, "dev.jsonl"), [{"text": r["sentence"], "label": names[int(r["label"])]} for r in rows])
    s = Server(a, Path(tmp, "state"), "[tuning]\nmax_queued_jobs = 2\nmax_file_bytes = 65536\n")
    c = s.a_client
    files = {"path": str(train), "train": c.files.create(file=open(train, "rb"), purpose="fine-tune").id,
             "dev": c.files.create(file=("dev.jsonl", Path(dev).read_bytes()), purpose="fine-tune").id}
    check(c.files.content(files["train"]).content == Path(train).read_bytes(), "files.content gives the upload back")
    job = learned_labels_and_equality(a, s, files, tmp)
    cancel_and_paging(s, files)
    bad_input(s, files, tmp)
    keys(s, files, job)
    full_queue(s, files)
    s.stop()
    s = Server(a, Path(tmp, "state"))
    r = s.b_client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "a bad movie"}])
    check(r.choices[0].message.content in ("negative", "positive"), "after a restart the tuned classifier is served again")
    s.stop()
    crash(a, tmp, train)
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
