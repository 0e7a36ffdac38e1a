#!/usr/bin/env bash
# The CUDA build checked without a GPU (run by scripts/test.sh, so by CI): NVIDIA's compiler wheels and link stubs
# (scripts/cuda_env.sh, cached in ~/.cache/pez/cuda), then `pez` built and linked with the `cuda` feature (candle's
# CUDA kernels compiled to PTX for compute capability $CUDA_COMPUTE_CAP), stripped into gpu/pez: the binary a GPU
# machine runs (scripts/gpu_check.sh). Checked here: it records the CUDA 13 libraries it needs and runs a CPU
# command; `--device cuda` itself needs a GPU. pez-serve's CUDA build is compiled (`cargo check`) as well.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cuda_env.sh
t0=$(date +%s)
# candle-kernels' build (cudaforge) keeps PTX it compiled before unless a source, the target or its flags changed,
# not when the compiler did: kept PTX of another nvcc is thrown away here.
stamp="${CARGO_TARGET_DIR:-target}/release/.pez-cuda-nvcc"
nvcc_version=$("$NVCC" --version)
nvcc_build=$(tail -1 <<<"$nvcc_version")
if [ "$(cat "$stamp" 2>/dev/null)" != "$nvcc_build" ]; then
  cargo clean -q --release -p candle-kernels
fi
cargo build -q --release --locked -p pez-cli --features cuda
echo "$nvcc_build" > "$stamp"
mkdir -p gpu
cp "${CARGO_TARGET_DIR:-target}/release/pez" gpu/pez
strip gpu/pez
# Both builds stay cached: this puts the CPU binary back for whatever runs next, without compiling.
cargo build -q --release --locked -p pez-cli
# pez-serve's classifiers take `device = "cuda"` too: its CUDA build (mistral.rs on a CUDA-enabled candle) is
# checked, not linked (linking would build mistral.rs a second time: too long for CI).
cargo check -q --release --locked -p pez-serve --features cuda
needed=" $(readelf -d gpu/pez | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
# The driver and cuBLAS at least (the linker keeps only libraries whose functions are used).
for lib in libcuda.so.1 libcublas.so.13; do
  case "$needed" in *" $lib "*) ;; *) echo "cuda_check: gpu/pez does not ask for $lib (it needs:$needed)"; exit 1 ;; esac
done
# The kernels travel as PTX text, which the GPU's driver compiles at load: it must be PTX that driver reads. The
# GPUs lent here run driver 580 (CUDA 13.0: PTX ISA up to 9.0); scripts/gpu_check.sh compares gpu/pez.cuda with
# the driver it finds.
ptx=$(grep -a -o '^\.version [0-9.]*' gpu/pez | sort -u | tr '\n' ' ')
[ -n "$ptx" ] || { echo "cuda_check: no PTX found in gpu/pez"; exit 1; }
for v in $(echo "$ptx" | sed 's/\.version//g'); do
  awk -v v="$v" 'BEGIN { split(v, a, "."); exit !(a[1] < 9 || (a[1] == 9 && a[2] <= 0)) }' \
    || { echo "cuda_check: gpu/pez carries PTX $v, newer than driver 580 (CUDA 13.0, PTX 9.0) reads"; exit 1; }
done
# pez's own kernels (crates/pez-nn/src/cuda, compiled by pez-nn's build.rs) travel beside candle's.
for k in rms_norm layer_norm rope gated masked_softmax; do
  for pass in fwd bwd; do
    grep -a -q "\.entry pez_${k}_${pass}_bf16" gpu/pez || { echo "cuda_check: gpu/pez lacks pez's CUDA kernel pez_${k}_${pass}"; exit 1; }
  done
done
sed -n 's/.*release \([0-9.]*\),.*/\1/p' <<<"$nvcc_version" > gpu/pez.cuda
# candle's kernels for compute capability 90 are `sm_90a` PTX, which runs on that generation alone.
echo "$CUDA_COMPUTE_CAP" > gpu/pez.arch
mb=$(( $(stat -c %s gpu/pez) / 1048576 ))
[ "$mb" -lt 60 ] || { echo "cuda_check: gpu/pez is $mb MiB: too big to travel to a GPU machine (64 MiB a copy)"; exit 1; }
# The CPU path of the CUDA build runs; the stubs stand in for the libraries (none of their functions is called).
fx=crates/pez-models/tests/fixtures/transfer/gpt2
a=$(LD_LIBRARY_PATH="$CUDA_HOME/lib/stubs" gpu/pez next-token --model "$fx" --text "great fun" --top 3 --json --dtype f32 --device cpu)
b=$("${CARGO_TARGET_DIR:-target}/release/pez" next-token --model "$fx" --text "great fun" --top 3 --json --dtype f32 --device cpu)
[ "$a" = "$b" ] || { echo "cuda_check: the CUDA build's CPU next-token differs:"; echo "$a"; echo "$b"; exit 1; }
# ... and its fused-op check (what gpu_check.sh runs on the GPU) passes on the CPU kernels.
LD_LIBRARY_PATH="$CUDA_HOME/lib/stubs" gpu/pez check-kernels --device cpu > /dev/null
echo "cuda_check: pez built and linked with --features cuda (CUDA $(cat gpu/pez.cuda), PTX ISA $(echo ${ptx//.version /})) in $(( $(date +%s) - t0 )) s: gpu/pez, $mb MiB, needs$needed"
