#!/usr/bin/env bash
# The test command: fetch the real models (cached), then run every test in release mode (numeric tests crawl
# unoptimised). Nothing is downloaded from the Hugging Face hub here (HF_HUB_OFFLINE=1): data comes from
# ../shared/data or the tests' own fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
# House rules first (seconds): the formatter's layout (rustfmt.toml), functions within 100 lines (60 in
# pez-serve's sources).
cargo fmt --all --check
python3 scripts/fn_lengths.py --max 100 --max-under plugins/pez-serve/src=60 crates plugins
# The workspace's binaries (features unified as the tests build them), then the models through `pez models`.
cargo build --release -q --workspace --bins
PEZ="${CARGO_TARGET_DIR:-target}/release/pez" bash scripts/setup.sh
cargo test --release --workspace
# The linter on every target, warnings as errors (a check build: no code generation).
cargo clippy --release -q --workspace --all-targets -- -D warnings
# Tuning through pez-serve's API: files, jobs, keys, kill -9 and resume (the official openai client, tiny model).
bash scripts/tuning_check.sh
# The container image built on a Debian base made here (debootstrap, podman), run with a state volume: one tuning
# job and one classification through it, a restart, the job still there (skips where podman cannot run).
bash scripts/image_check.sh
# pez sweep as a Slurm job array on a one-node Slurm started here (installs slurm-wlm and munge where missing).
bash scripts/slurm_check.sh
# deploy/k8s/ against Kubernetes' schemas, offline (kubernetes-validate from PyPI).
bash scripts/k8s_check.sh
# pez-serve end to end on the real model, through the official openai client (needs the models from setup.sh).
bash scripts/serve_check.sh
bash scripts/install_check.sh
# The CUDA build (`--device cuda`), checked without a GPU.
bash scripts/cuda_check.sh
