#!/usr/bin/env bash
# Load benchmark of pez-serve on SmolLM2-135M, loopback only: 32 concurrent clients, 2,000 /v1/classify requests
# (one SST-2 dev sentence each) with a learned prompt, then the yardstick: the same prompt + sentence + template as
# plain `max_tokens: 1` completions on the base model through mistral.rs (YARDSTICK_REQUESTS of them, default
# 200: mistral.rs answers about one a second here). Results are appended to evals/serve/load.jsonl.
#   bash scripts/serve_load.sh [engine_max_seqs]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PROMPT=evals/sst2/pez-fluency0.003-s1
OUT=evals/serve/load.jsonl
mkdir -p evals/serve
cargo build --release -q --workspace --tests  # the test build's feature set: no second mistral.rs build
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/runs/sst2-pez" && cp "$PROMPT/prompt.json" "$tmp/runs/sst2-pez/"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HF_HUB_OFFLINE=1 "$TARGET/release/pez-serve" --model smollm2-135m --classifiers "$tmp/runs" --port "$port" \
    --engine-max-seqs "${1:-1}" >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
prompt=$(python3 -c "import json; print(json.load(open('$PROMPT/prompt.json'))['prompt'], end='')")
python3 scripts/serve_load.py --url "http://127.0.0.1:$port" --mode classify --model sst2-pez --requests 2000 --out "$OUT"
python3 scripts/serve_load.py --url "http://127.0.0.1:$port" --mode completion --model smollm2-135m --prefix "$prompt" \
    --suffix " It was" --requests "${YARDSTICK_REQUESTS:-200}" --out "$OUT"
echo "peak RSS of pez-serve: $(grep VmHWM /proc/$pid/status)"
