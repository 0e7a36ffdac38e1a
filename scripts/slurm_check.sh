#!/usr/bin/env bash
# `pez sweep` on a real Slurm (run by scripts/test.sh, so by CI): installs Debian's slurm-wlm and munge where
# missing, starts munged, slurmctld and slurmd for one node on this machine (generated slurm.conf, no cgroup
# plugins, every file in a temporary folder), submits deploy/slurm/pez-sweep.sbatch as a 4-cell array of short
# tunes of the tiny GPT-2 checkpoint (2 fluency weights x 2 seeds, two tasks at a time), requeues one cell
# mid-run with `scontrol requeue`, waits, and checks that `pez sweep summarize` equals the same grid run one seed
# after another by `pez tune --seeds` (the runs are deterministic); then pez-serve's slurm runner runs a tuning job
# as a batch job. Stops every daemon it started.
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
PEZ="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/pez"
[ -x "$PEZ" ] || { echo "slurm_check: build pez first ($PEZ)" >&2; exit 1; }
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm_check: installing slurm-wlm and munge (Debian packages)"
  $SUDO apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q slurm-wlm munge >/dev/null; }
fi
tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "slurm_check: FAIL $*" >&2; for f in "$tmp"/*.log "$tmp"/work/pez-sweep-*.out; do [ -f "$f" ] && { echo "== $f"; tail -20 "$f"; }; done >&2; exit 1; }

# munge: its own key, socket and files.
mkdir -p "$tmp/munge" && chmod 700 "$tmp/munge"
mungekey --create --keyfile="$tmp/munge/munge.key" 2>/dev/null || dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$tmp/munge/munge.key"
munged --foreground --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.socket" \
  --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/munged.log" --seed-file="$tmp/munge/munged.seed" >"$tmp/munged.out.log" 2>&1 &
pids+=($!)

# slurm: one node, this machine, on two free ports.
read -r pctl pd < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
host=$(hostname -s)
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/work"
cat > "$tmp/slurm.conf" <<EOF
ClusterName=pezcheck
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$pctl
SlurmdPort=$pd
SlurmUser=$(id -un)
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$tmp/slurm.conf"
slurmctld -D -i -f "$SLURM_CONF" >"$tmp/slurmctld.out.log" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$tmp/slurmd.out.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)' && break; sleep 1; done
sinfo -h -N -o '%T' | grep -qE '^(idle|mixed)' || fail "the node never came up: $(sinfo -h -N 2>&1)"
echo "slurm_check: slurm $(slurmctld -V | awk '{print $2}') up on $host in $(( $(date +%s) - t_start )) s"

# The sweep: 2 fluency weights x 2 seeds, 4,000 steps each (about 10 s), checkpoints every 5 steps.
fx="$(pwd)/crates/pez-models/tests/fixtures/transfer"
common=(--steps 4000 --batch-size 2 --eval-every 5 --holdout 4 --prompt-len 2 --dtype f32)
cat > "$tmp/work/sweep.toml" <<EOF
out = "runs"
top = 2
[base]
task = "$fx/task.toml"
model = "$fx/gpt2"
train = "$fx/dev.tsv"
steps = 4000
batch_size = 2
eval_every = 5
holdout = 4
prompt_len = 2
dtype = "f32"
[grid]
fluency = [0.0, 0.1]
seed = [0, 1]
EOF
n=$("$PEZ" sweep plan "$tmp/work/sweep.toml" --count)
[ "$n" = 4 ] || fail "the sweep has $n cells, expected 4"
script="$(pwd -P)/deploy/slurm/pez-sweep.sbatch"
job=$(cd "$tmp/work" && PEZ="$PEZ" sbatch --parsable --array=0-$((n - 1)) --cpus-per-task=1 --export=ALL "$script" "$tmp/work/sweep.toml" 2>&1) \
  || fail "sbatch: $job"
job=${job%%;*}
echo "slurm_check: submitted array job $job"

# Requeue cell 1 once it is past its first checkpoint and not finished.
cell1="$tmp/work/runs/fluency0.0-s1"
for _ in $(seq 1 600); do
  [ -f "$cell1/checkpoint.json" ] && break
  sleep 0.1
done
[ -f "$cell1/checkpoint.json" ] || fail "cell 1 wrote no checkpoint"
grep -q '"finished": *true' "$cell1/checkpoint.json" && fail "cell 1 finished before it could be requeued (make its run longer)"
step_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pez"]["step"])' "$cell1/checkpoint.json")
scontrol requeue "${job}_1" || fail "scontrol requeue ${job}_1"
echo "slurm_check: requeued ${job}_1 at step $step_before ($(( $(date +%s) - t_start )) s)"
# slurmctld holds a requeued job back for a while (its begin time moves ahead): make it eligible now, once pending.
for _ in $(seq 1 100); do
  [ "$(squeue -h -j "${job}_1" -o %T 2>/dev/null)" = PENDING ] && scontrol update JobId="${job}_1" StartTime=now 2>/dev/null && break
  sleep 0.2
done

# Wait for the array to leave the queue.
for _ in $(seq 1 600); do
  [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
  sleep 1
done
[ -z "$(squeue -h -j "$job")" ] || fail "the array is still queued: $(squeue -j "$job")"
log1=$(ls "$tmp"/work/pez-sweep-"${job}"_1.out)
grep -q "restart 1" "$log1" || fail "task 1 did not start again after the requeue"
grep -q "resuming" "$log1" || fail "task 1 did not resume its cell after the requeue"
"$PEZ" sweep summarize "$tmp/work/sweep.toml" >"$tmp/work/summary.md" 2>/dev/null
echo "slurm_check: the array finished ($(( $(date +%s) - t_start )) s); now the same grid by pez tune --seeds"

# The same grid one seed after another with pez tune --seeds, then the comparison.
for w in 0.0 0.1; do
  "$PEZ" tune "$fx/task.toml" --model "$fx/gpt2" --train "$fx/dev.tsv" "${common[@]}" --fluency "$w" --seeds 2 --top 2 \
    --out "$tmp/seq/f$w" >/dev/null 2>"$tmp/seq-$w.log" || fail "pez tune --seeds (fluency $w): $(tail -3 "$tmp/seq-$w.log")"
done
python3 - "$tmp" <<'PY' || fail "the Slurm sweep's summary differs from pez tune --seeds"
import json, sys
tmp = sys.argv[1]
grid = json.load(open(f"{tmp}/work/runs/summary.json"))
def strip(s):
    s = dict(s); s.pop("wall_s")
    s["runs"] = [{k: v for k, v in r.items() if k not in ("dir", "wall_s")} for r in s["runs"]]
    return s
assert [c["status"] for c in grid["cells"]] == ["finished"] * 4, grid["cells"]
for g in grid["groups"]:
    (w,) = g["values"]
    seq = json.load(open(f"{tmp}/seq/f{w}/summary.json"))
    assert strip(g["summary"]) == strip(seq), (w, g["summary"], seq)
    print(f"slurm_check: fluency {w}: " + ", ".join(f"seed {r['seed']} dev {r['dev_accuracy']:.4f} `{r['prompt']}`" for r in g["summary"]["runs"]) + " (equal to pez tune --seeds)")
PY
cat "$tmp/work/summary.md"

# pez-serve's slurm runner: a tuning job submitted as a batch job (`pez tune --settings`), followed until it ends;
# its classifier served, its prompt equal to the same settings run here by pez tune.
SERVE="$(dirname "$PEZ")/pez-serve"
sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$tmp/serve.toml" <<EOF
state_dir = "$tmp/serve-state"
[[models]]
name = "tiny-gpt2"
path = "$fx/gpt2"
dtype = "f32"
[tuning]
runner = "slurm"
[tuning.slurm]
poll_s = 1
sbatch_args = ["--cpus-per-task=1"]
EOF
HF_HUB_OFFLINE=1 "$SERVE" --config "$tmp/serve.toml" --port "$sport" >"$tmp/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$sport/health" >/dev/null && break; sleep 0.2; done
python3 - "$sport" "$fx/dev.tsv" "$tmp" "$PEZ" <<'PY' || fail "the slurm runner"
import csv, json, subprocess, sys, time
import openai
port, data, tmp, pez = sys.argv[1:]
names = ["negative", "positive"]
rows = [{"text": r["sentence"], "label": names[int(r["label"])]} for r in csv.DictReader(open(data), delimiter="\t")]
c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
f = c.files.create(file=("train.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()), purpose="fine-tune")
hp = {"steps": 400, "batch_size": 2, "eval_every": 100, "holdout": 4, "prompt_len": 2, "dtype": "f32"}
job = c.fine_tuning.jobs.create(model="tiny-gpt2", training_file=f.id, seed=2, method={"type": "pez", "pez": {"hyperparameters": hp}})
t0 = time.time()
while (job := c.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled") and time.time() - t0 < 300:
    time.sleep(0.5)
events = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100)]
assert job.status == "succeeded", (job.status, job.error, events)
assert any("Submitted to Slurm" in m for m in events) and any("holdout accuracy" in m for m in events), events
label = c.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": rows[0]["text"]}]).choices[0].message.content
run = f"{tmp}/serve-state/jobs/{job.id}"
subprocess.run([pez, "tune", "--settings", f"{run}/settings.toml", "--out", f"{tmp}/slurm-ref"], check=True, capture_output=True)
mine, ref = (json.load(open(p)) for p in (f"{run}/run/prompt.json", f"{tmp}/slurm-ref/prompt.json"))
assert mine["token_ids"] == ref["token_ids"] and mine["holdout_accuracy"] == ref["holdout_accuracy"], (mine, ref)
print(f"slurm_check: tuning job {job.id} ran as a Slurm batch job in {time.time() - t0:.0f} s: {mine['prompt']!r}, "
      f"served as {job.fine_tuned_model} ({label!r}); equal to pez tune --settings")
PY
echo "slurm_check: all passed in $(( $(date +%s) - t_start )) s"
