#!/usr/bin/env bash
# The CUDA build checked without a GPU (run by scripts/test.sh, so by CI): NVIDIA's compiler wheels
# (scripts/cuda_env.sh, cached in ~/.cache/pez/cuda), then `cargo check` of `pez` with the `cuda` feature, which
# compiles candle's CUDA kernels to PTX and type-checks every `--device cuda` path. Linking and running need the
# CUDA libraries and a GPU: scripts/gpu_check.sh on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cuda_env.sh
t0=$(date +%s)
cargo check -q --locked -p pez-cli --features cuda
echo "cuda_check: cargo check -p pez-cli --features cuda passed in $(( $(date +%s) - t0 )) s"
