#!/usr/bin/env bash
# pez-serve classification throughput in f32 and in bf16 on this CPU (loopback only): for each dtype a server
# with one learned SST-2 classifier on SmolLM2-135M (no generation engine), 32 concurrent clients, 2,000
# /v1/classify requests of one dev sentence each. Appends to evals/serve/dtype.jsonl.
#   bash scripts/serve_dtype.sh [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PROMPT=evals/sst2/pez-fluency0.003-s1
OUT=evals/serve/dtype.jsonl
mkdir -p evals/serve
cargo build --release -q --workspace --tests  # the test build's feature set: no second mistral.rs build
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/runs/sst2-pez" && cp "$PROMPT/prompt.json" "$tmp/runs/sst2-pez/"
cpu=$(lscpu | sed -n 's/^Model name: *//p')
for dtype in f32 bf16; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  HF_HUB_OFFLINE=1 "$TARGET/release/pez-serve" --model smollm2-135m --classifiers "$tmp/runs" --port "$port" \
      --no-generation --dtype "$dtype" >"$tmp/serve-$dtype.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
  echo "dtype $dtype ($cpu):"
  python3 scripts/serve_load.py --url "http://127.0.0.1:$port" --mode classify --model sst2-pez --requests "${1:-2000}" --out "$tmp/one.jsonl"
  python3 -c "import json,sys; r=json.loads(open('$tmp/one.jsonl').readlines()[-1]); r.update(dtype='$dtype', cpu=sys.argv[1]); print(json.dumps(r))" "$cpu" >> "$OUT"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
