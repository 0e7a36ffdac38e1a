#!/usr/bin/env bash
# One PEZ step side by side, in one run on this machine: ours (f32 and bf16) and PyTorch's strongest form (logits
# only where the loss reads them; f32, and bf16 autocast), SmolLM2-135M, batch 16, the same fixed SST-2 batches.
#
#   bash scripts/bench_step.sh [steps] [rounds]      (defaults 20 steps, 2 rounds of the four, interleaved)
#
# PyTorch comes from a venv under ~/.cache/pez (created here with torch, transformers, gguf and accelerate from
# PyPI if missing: several GB, as PyPI's Linux torch wheels carry CUDA libraries) or $PEZ_TORCH_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-20}"
rounds="${2:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pez/target}"
py="${PEZ_TORCH_PYTHON:-$HOME/.cache/pez/torch-venv/bin/python}"
if ! "$py" -c "import torch, transformers, gguf, accelerate" 2>/dev/null; then
  python3 -m venv "$HOME/.cache/pez/torch-venv"
  "$HOME/.cache/pez/torch-venv/bin/pip" install -q torch transformers gguf accelerate
  py="$HOME/.cache/pez/torch-venv/bin/python"
fi
bench=$(cargo bench --no-run -p pez-tune --bench tune_step 2>&1 | sed -n 's/.*Executable benches\/tune_step.rs (\(.*\))/\1/p')
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores; bf16 products on: $(grep -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "$("$py" -c 'import torch; print("torch", torch.__version__, torch.get_num_threads(), "threads")' 2>/dev/null)"
for r in $(seq 1 "$rounds"); do
  for d in f32 bf16; do
    printf 'round %s  ours  %-4s  ' "$r" "$d"; "$bench" smollm2-135m 16 "$steps" --dtype "$d" | tail -1
    printf 'round %s  torch %-4s  ' "$r" "$d"; "$py" scripts/torch_pez_step.py 16 "$steps" --dtype "$d" 2>/dev/null | tail -1
  done
done
