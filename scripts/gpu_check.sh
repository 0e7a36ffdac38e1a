#!/usr/bin/env bash
# The GPU check (issue 24), one script for a GPU machine that has no Rust toolchain: a `pez` built here with
# `--features cuda` (scripts/cuda_env.sh, then `cargo build --release -p pez-cli --features cuda`) is copied there
# and run on the tiny checkpoints of every architecture and on a model of SmolLM2-135M's shape (seeded random weights
# made there, where python3 has transformers), CPU against GPU in the same run:
#   - next-token top-5 and log-probs after two texts (`pez next-token --json`): same tokens, log-probs within 1e-3;
#     in bf16 (bf16 tensors; the CPU side under PEZ_OPS=composed) the CPU's top-3 within 0.05 on the GPU;
#   - 20 PEZ steps on the fixture task (`pez tune`, f32, fluency 0.1 where the model is a decoder): the same
#     tokens at every holdout pass, losses within 1e-3 relative; in bf16 the first step's loss within 1%;
#   - wall time of each tune, CPU and GPU;
#   - pez's fused ops (`pez check-kernels`: values and input gradients against the composed maths, f32 and bf16),
#     and on a GPU every model's 20 f32 steps again with PEZ_CUDA=fused (pez's CUDA kernels and device set-up):
#     the CPU's tokens;
#   - seconds per PEZ step at SmolLM2-135M's and GPT-2 Large's shapes, batch 16 and 32, f32 and bf16, pez against
#     the PyTorch yardstick on the same GPU (scripts/gpu_speed.py; where python3 has torch and transformers).
# Writes $OUT/gpu_check.json (nvidia-smi's line included; written first after the comparisons, so a run stopped
# during the speed part keeps them, with $OUT/gpu_speed.json rewritten after each timed row) and exits non-zero on
# any difference.
#   bash scripts/gpu_check.sh [PEZ]        (PEZ default gpu/pez, built by scripts/cuda_check.sh; GPU_CHECK_DEVICE=cpu
#                                          runs both sides on the CPU, with 2-layer models of the big shapes: the
#                                          script's own check on a machine without a GPU)
# On a device machine: run(command="bash scripts/gpu_check.sh", carry=["gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PEZ=$(realpath "${1:-gpu/pez}")
DEV=${GPU_CHECK_DEVICE:-cuda}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
smi=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1 || true)
if [ "$DEV" != cpu ]; then
  # gpu/pez was linked against stand-ins (scripts/cuda_stubs.py): the driver's libcuda and the CUDA 13 libraries
  # of the Python wheels here (PyTorch's) are what it loads.
  libs=$(python3 -c 'import glob, os, site; print(":".join(sorted({os.path.dirname(f) for p in site.getsitepackages() for f in glob.glob(p + "/nvidia/**/lib*.so*", recursive=True)})))' || true)
  export LD_LIBRARY_PATH="${libs}:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
  # The kernels are PTX, compiled by the driver at load: a driver older than the CUDA that wrote them refuses them.
  drv=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1 || true)
  built=$(cat "$PEZ.cuda" 2>/dev/null || true)
  if [ -n "$drv" ] && [ -n "$built" ] && [ "$(printf '%s\n%s\n' "$built" "$drv" | sort -V | tail -1)" != "$drv" ]; then
    echo "gpu_check: $PEZ carries PTX of CUDA $built; this driver reads up to CUDA $drv: build with CUDA $drv (scripts/cuda_env.sh)"; exit 1
  fi
  # ... and built for one GPU generation (compute capability; candle writes arch-specific PTX such as sm_90a).
  cap=$(sed 's/.*, *//' <<<"$smi" | tr -d '.')  # the query above ends with compute_cap
  arch=$(cat "$PEZ.arch" 2>/dev/null || true)
  if [ -n "$cap" ] && [ -n "$arch" ] && [ "$cap" != "$arch" ]; then
    echo "gpu_check: $PEZ was built for compute capability $arch; this GPU is $cap: build with CUDA_COMPUTE_CAP=$cap (scripts/cuda_env.sh)"; exit 1
  fi
  if ldd "$PEZ" | grep -q "not found"; then
    echo "gpu_check: $PEZ cannot find these libraries:"; ldd "$PEZ" | grep "not found"; exit 1
  fi
fi
echo "gpu_check: $PEZ on ${smi:-no nvidia-smi}; device $DEV; results in $OUT"
python3 - "$PEZ" "$DEV" "$OUT" "$smi" <<'PY'
import json, os, shutil, subprocess, sys, tempfile, time
pez, dev, out, smi = sys.argv[1:]
fx = "crates/pez-models/tests/fixtures"
tmp = tempfile.mkdtemp()
def model(name):
    own = f"{fx}/transfer/{name}"
    if os.path.exists(f"{own}/tokenizer.json"):
        return own
    d = f"{tmp}/{name}"
    os.makedirs(d)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{fx}/{name}/{f}", d)
    shutil.copy(f"{fx}/transfer/gpt2/tokenizer.json", d)
    return d
def run(args, env=None):
    r = subprocess.run([pez, *args], capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    if r.returncode:
        raise SystemExit(f"pez {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r.stdout
failures, results = [], []

def next_token_f32(name, m, res):
    worst = 0.0
    for text in ["great fun movie", "bad dull"]:
        a, b = (json.loads(run(["next-token", "--model", m, "--text", text, "--top", "5", "--json", "--dtype", "f32", "--device", d])) for d in ("cpu", dev))
        if [t["id"] for t in a["top"]] != [t["id"] for t in b["top"]]:
            failures.append(f"{name}: top-5 differ after {text!r}")
        worst = max([worst] + [abs(x["logprob"] - y["logprob"]) for x, y in zip(a["top"], b["top"])])
    res["next_token_max_logprob_diff"] = worst
    if worst > 1e-3:
        failures.append(f"{name}: log-probs differ by {worst}")

def next_token_bf16(name, m, res):
    # --dtype bf16: bf16 tensors on the GPU, and on the CPU under PEZ_OPS=composed (its f32 products of bf16 values
    # stand in for cuBLAS's): each of the CPU's top-3 in the GPU's top 10 (near ties may swap), log-probs within 0.05.
    a, b = (json.loads(run(["next-token", "--model", m, "--text", "great fun movie", "--top", n, "--json", "--dtype", "bf16", "--device", d],
                           {"PEZ_OPS": "composed"})) for d, n in (("cpu", "3"), (dev, "10")))
    on_dev = {t["id"]: t["logprob"] for t in b["top"]}
    diffs = [abs(t["logprob"] - on_dev[t["id"]]) if t["id"] in on_dev else float("inf") for t in a["top"]]
    res["bf16_next_token_max_logprob_diff"] = max(diffs)
    if max(diffs) > 0.05:
        failures.append(f"{name}: bf16 next-token differs: {a['top']} vs {b['top']}")

def tune_args(name, m):
    return ["tune", f"{fx}/transfer/task.toml", "--model", m, "--train", f"{fx}/transfer/dev.tsv", "--batch-size", "2", "--holdout", "4",
            "--prompt-len", "3", "--fluency", "0" if name == "t5" else "0.1", "--seed", "1"]

def same_run(ma, mb):
    """Whether two runs' records hold the same tokens, and their largest relative train-loss difference."""
    same = [x["token_ids"] for x in ma] == [y["token_ids"] for y in mb]
    return same, max(abs(x["train_loss"] - y["train_loss"]) / max(1.0, abs(x["train_loss"])) for x, y in zip(ma, mb))

def tune_f32(name, m, res):
    runs = {}
    for side, d in (("ref", "cpu"), ("dev", dev)):
        o = f"{tmp}/{name}-{side}"
        t0 = time.time()
        run(tune_args(name, m) + ["--steps", "20", "--eval-every", "5", "--dtype", "f32", "--device", d, "--out", o])
        runs[side] = ([json.loads(l) for l in open(f"{o}/metrics.jsonl")], time.time() - t0)
    (ma, ta), (mb, tb) = runs["ref"], runs["dev"]
    same, loss = same_run(ma, mb)
    res.update({"pez_20_steps_same_tokens": same, "pez_max_rel_loss_diff": loss, "tune_wall_s_cpu": round(ta, 2), "tune_wall_s_device": round(tb, 2),
                "prompt": ma[-1]["prompt"]})
    if not same:
        failures.append(f"{name}: 20-step tokens differ: {[x['prompt'] for x in ma]} vs {[y['prompt'] for y in mb]}")
    if loss > 1e-3:
        failures.append(f"{name}: losses differ by {loss}")

def tune_bf16(name, m, res):
    # the first step's loss (both sides start from the same tokens), CPU under PEZ_OPS=composed against the GPU
    first = []
    for side, d in (("ref", "cpu"), ("dev", dev)):
        o = f"{tmp}/{name}-bf16-{side}"
        run(tune_args(name, m) + ["--steps", "3", "--eval-every", "1", "--dtype", "bf16", "--device", d, "--out", o], {"PEZ_OPS": "composed"})
        first.append(json.loads(open(f"{o}/metrics.jsonl").readline())["train_loss"])
    res["bf16_first_step_loss_cpu_device"] = first
    if abs(first[0] - first[1]) > 0.01 * max(1.0, abs(first[0])):
        failures.append(f"{name}: bf16 first-step loss {first[0]} on the CPU, {first[1]} on the device")

def tune_f32_fused(name, m, res):
    # PEZ_CUDA=fused (pez's CUDA kernels, its own stream, no event tracking, the pool kept): the same 20 steps give
    # the CPU's tokens (the CPU run of tune_f32 is the reference)
    o = f"{tmp}/{name}-fused"
    run(tune_args(name, m) + ["--steps", "20", "--eval-every", "5", "--dtype", "f32", "--device", dev, "--out", o], {"PEZ_CUDA": "fused"})
    ma = [json.loads(l) for l in open(f"{tmp}/{name}-ref/metrics.jsonl")]
    mb = [json.loads(l) for l in open(f"{o}/metrics.jsonl")]
    same, loss = same_run(ma, mb)
    res.update({"fused_20_steps_same_tokens": same, "fused_max_rel_loss_diff": loss})
    if not same or loss > 1e-3:
        failures.append(f"{name}: PEZ_CUDA=fused differs from the CPU: tokens same {same}, losses within {loss}")

# pez's fused ops against the composed maths on the device (`pez check-kernels`: f32, and bf16 on a GPU), first:
# every later part runs on them when PEZ_CUDA=fused.
k = subprocess.run([pez, "check-kernels", "--device", dev, "--json"], capture_output=True, text=True)
try:
    results.append({"model": "kernels", "check_kernels": json.loads(k.stdout)})
except ValueError:
    results.append({"model": "kernels", "error": k.stderr[-2000:]})
if k.returncode:
    failures.append(f"check-kernels on {dev}: {k.stderr.strip()[-500:]}")
print(json.dumps(results[-1]), flush=True)

def models():
    for name in ["gpt2", "opt", "opt350", "llama", "gemma3", "t5"]:
        yield name, model(name)
    # Real SmolLM2 (a ~100 MB GGUF) does not travel; its shape does: 30 layers, 9 query and 3 key/value heads,
    # 49,152 rows, seeded random weights made here (2 layers on a CPU-only dry run).
    try:
        sys.path.insert(0, "scripts")
        from gpu_speed import make, shapes
    except ImportError as e:
        results.append({"model": "smollm2-135m-shape", "skipped": f"no transformers here: {e}"})
        return
    d = f"{tmp}/smollm2-135m-shape"
    make(shapes(dev == "cpu")["smollm2-135m"], d)
    yield "smollm2-135m-shape", d

for name, m in models():
    res = {"model": name}
    parts = [("f32 next-token", next_token_f32), ("bf16 next-token", next_token_bf16)] if name != "t5" else []  # next-token needs a causal decoder
    fused = [("fused f32 tune", tune_f32_fused)] if dev != "cpu" else []
    for what, part in parts + [("f32 tune", tune_f32)] + fused + [("bf16 tune", tune_bf16)]:
        try:
            part(name, m, res)
        except SystemExit as e:  # one failing part leaves the others to run and be recorded
            failures.append(f"{name}: {what} failed: {str(e)[-500:]}")
    results.append(res)
    print(json.dumps(res), flush=True)
def save(speed):
    json.dump({"nvidia_smi": smi, "device": dev, "results": results, "speed": speed, "failures": failures}, open(f"{out}/gpu_check.json", "w"), indent=1)
save({"running": "scripts/gpu_speed.py writes gpu_speed.json beside this file as it goes"})  # kept if the time limit stops the speed part
speed = None
try:
    import torch, transformers  # noqa: F401
except ImportError as e:
    speed = {"skipped": f"no yardstick here: {e}"}
if speed is None:
    env = dict(os.environ, **({"GPU_SPEED_SHAPES": "small"} if dev == "cpu" else {}))
    r = subprocess.run([sys.executable, "scripts/gpu_speed.py", pez, dev, f"{out}/gpu_speed.json"], env=env, stdout=None, stderr=subprocess.PIPE, text=True)
    speed = json.load(open(f"{out}/gpu_speed.json")) if r.returncode == 0 else {"error": r.stderr[-2000:]}
    if r.returncode:
        failures.append("gpu_speed.py failed")
save(speed)
print("gpu_check: " + ("all passed" if not failures else f"{len(failures)} failure(s): " + "; ".join(failures)))
sys.exit(1 if failures else 0)
PY
