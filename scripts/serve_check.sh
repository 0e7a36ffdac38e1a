#!/usr/bin/env bash
# End-to-end check of pez-serve on the real SmolLM2-135M (run by scripts/test.sh, so by CI):
#   1. `pez eval --predictions` labels every SST-2 dev sentence with a committed PEZ prompt;
#   2. pez-serve (classifier + the mistral.rs engine for the base model) starts on a free loopback port;
#   3. scripts/serve_client_check.py talks to it with the official `openai` package (installed from PyPI if
#      missing) and checks shapes, errors and label agreement with step 1 on all 872 examples;
#   4. scripts/serve_probe.py: ~60 hostile requests (each answered within 5 s, no 5xx, OpenAI-shaped errors,
#      /health after each), 200 clients hanging up at random moments, no panic, /metrics parsed;
#   5. SIGTERM while a request is in flight: the request still completes and the server exits cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
DATA="${PEZ_DATA:-../shared/data}"
PROMPT=evals/sst2/pez-fluency0.003-s1
NAME=sst2-pez
python3 -c "import openai" 2>/dev/null || python3 -m pip install -q openai || { echo "serve_check: cannot install the openai package from PyPI" >&2; exit 1; }
# The test build's feature set (a plain `-p pez-serve` build resolves other features and rebuilds mistral.rs).
cargo build --release -q --workspace --tests
tmp=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/runs/$NAME" && cp "$PROMPT/prompt.json" "$tmp/runs/$NAME/"
# Short client timeouts, so the probe's stalled requests are answered within its 5 s.
printf 'models = []\n[limits]\nheader_timeout_s = 3\nbody_timeout_s = 3\n' > "$tmp/serve.toml"
# Both sides in f32: its results move by ~1e-6 with how rows are packed together (the server packs what requests
# arrive, eval packs the dev set in order), never enough to flip a label. bf16 rounds activations, so those ulps
# can flip a bf16 rounding and grow to ~1e-2 in a probability: near-ties may differ there (NOTES, issue 23).
"$TARGET/release/pez" eval --prompt-file "$PROMPT" --dtype f32 --predictions "$tmp/pred.jsonl"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HF_HUB_OFFLINE=1 "$TARGET/release/pez-serve" --config "$tmp/serve.toml" --model smollm2-135m --dtype f32 --classifiers "$tmp/runs" --port "$port" >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; kill -0 "$pid" 2>/dev/null || { cat "$tmp/serve.log"; exit 1; }; sleep 1; done
python3 scripts/serve_client_check.py --url "http://127.0.0.1:$port/v1" --classifier "$NAME" --base smollm2-135m \
    --predictions "$tmp/pred.jsonl" --data "$DATA/sst2/dev.tsv"
python3 scripts/serve_probe.py --url "http://127.0.0.1:$port" --classifier "$NAME" --base smollm2-135m --log "$tmp/serve.log"
# Graceful shutdown: a 64-text request in flight (well within shutdown_timeout_s even on a busy machine) when SIGTERM arrives still gets its answer.
python3 - "$port" "$DATA/sst2/dev.tsv" >"$tmp/inflight.out" 2>&1 <<'PY' &
import csv, sys
try:
    import httpx
except ImportError:
    import httpx2 as httpx
texts = [r["sentence"] for r in csv.DictReader(open(sys.argv[2]), delimiter="\t", quoting=csv.QUOTE_NONE)][:64]
r = httpx.post(f"http://127.0.0.1:{sys.argv[1]}/v1/classify", json={"model": "sst2-pez", "input": texts}, timeout=300)
print(r.status_code, len(r.json()["data"]))
PY
client=$!
# SIGTERM once the request is in flight (this /metrics request is the other one counted).
for _ in $(seq 1 300); do
  [ "$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^pez_requests_in_flight / {print $2}')" -ge 2 ] 2>/dev/null && break
  sleep 0.1
done
kill -TERM "$pid"
wait "$client" || true  # judged below, with the server log on failure
rc=0; wait "$pid" || rc=$?
pid=
echo "in-flight request during shutdown: $(cat "$tmp/inflight.out"); server exit code $rc"
grep -q "^200 64$" "$tmp/inflight.out" && [ "$rc" = 0 ] || { cat "$tmp/serve.log"; exit 1; }
echo "serve_check: all passed"
