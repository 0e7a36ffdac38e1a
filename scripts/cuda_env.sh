#!/usr/bin/env bash
# Source this (`. scripts/cuda_env.sh`) before building with `--features cuda`: it fetches NVIDIA's CUDA 13.0 PyPI
# wheels once (nvcc, NVVM, the runtime headers and CCCL, ~130 MB, one pip command into ~/.cache/pez/cuda-13.0.88) and
# exports what candle's kernel build (cudaforge) and cudarc read; and makes link-time stand-ins for the driver,
# cuBLAS(Lt), cuRAND, NVRTC and the runtime (scripts/cuda_stubs.py, in $CUDA_HOME/lib/stubs, where cudarc's build
# looks). No GPU or driver is needed to build and link; running needs the driver and the CUDA 13 libraries on the
# GPU machine (scripts/gpu_check.sh finds them).
#   CUDA_COMPUTE_CAP  the GPU generation to compile for (default 90: H100/H200)
# CUDA 13.0, not newer: candle's kernels travel as PTX, which the driver compiles when it loads them, and a driver
# reads no PTX of a newer CUDA than its own (minor-version compatibility covers machine code only). The GPUs lent
# here run driver 580 = CUDA 13.0 (nvcc 13.4 wrote PTX ISA 9.4, which that driver refuses); cudarc's bindings are
# 13.0's too, so the binary asks the driver for no function newer than it has.
_pez_cuda_ver=13.0.88
_pez_cuda_dir="${PEZ_CACHE:-$HOME/.cache/pez}/cuda-$_pez_cuda_ver"
if [ ! -x "$_pez_cuda_dir/nvidia/cu13/bin/nvcc" ]; then
  echo "cuda_env: fetching the CUDA $_pez_cuda_ver compiler wheels into $_pez_cuda_dir" >&2
  python3 -m pip install -q --no-deps --target "$_pez_cuda_dir" \
    "nvidia-cuda-nvcc==$_pez_cuda_ver" "nvidia-nvvm==$_pez_cuda_ver" "nvidia-cuda-crt==$_pez_cuda_ver" \
    "nvidia-cuda-runtime==$_pez_cuda_ver" "nvidia-cuda-cccl==13.0.85" \
    || { echo "cuda_env: pip could not fetch the CUDA wheels" >&2; return 1 2>/dev/null || exit 1; }
fi
export CUDA_HOME="$_pez_cuda_dir/nvidia/cu13"
export CUDA_PATH="$CUDA_HOME"
export NVCC="$CUDA_HOME/bin/nvcc"
export PATH="$CUDA_HOME/bin:$PATH"
if [ ! -e "$CUDA_HOME/lib/stubs/libcuda.so" ]; then
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo fetch --locked -q && python3 scripts/cuda_stubs.py "$CUDA_HOME/lib/stubs") \
    || { echo "cuda_env: could not make the CUDA link stubs" >&2; return 1 2>/dev/null || exit 1; }
fi
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
echo "cuda_env: nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $CUDA_COMPUTE_CAP" >&2
