#!/usr/bin/env bash
# `pez transfer --endpoint-api openai` at scale against a real OpenAI-compatible server: pez-serve's base model,
# i.e. mistral.rs's own /v1/completions (its quantized GGUF inference, not pez's forward), scored from the
# returned top-20 log-probabilities. Compared per example with the in-process target on the same examples.
#   bash scripts/run_openai_endpoint_check.sh [N]     (N first SST-2 dev examples, default 200; ~1 completion/s here)
# Writes evals/sst2/openai-endpoint/{README.md, endpoint/, in-process/}.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
TARGET="${CARGO_TARGET_DIR:-target}"
DATA="${PEZ_DATA:-../shared/data}"
PROMPT=evals/sst2/pez-fluency0.003-s1
OUT=evals/sst2/openai-endpoint
cargo build --release -q -p pez-cli -p pez-serve
tmp=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
head -n $((N + 1)) "$DATA/sst2/dev.tsv" > "$tmp/dev.tsv"  # header + N examples (a temporary subset, not committed)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HF_HUB_OFFLINE=1 "$TARGET/release/pez-serve" --model smollm2-135m --port "$port" >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; kill -0 "$pid" 2>/dev/null || { cat "$tmp/serve.log"; exit 1; }; sleep 1; done
mkdir -p "$OUT"
t0=$(date +%s)
"$TARGET/release/pez" transfer --task sst2 --prompts "$PROMPT" --endpoint "http://127.0.0.1:$port" \
    --endpoint-model smollm2-135m --endpoint-api openai --top 1 --data "$tmp/dev.tsv" --out "$OUT/endpoint"
t1=$(date +%s)
"$TARGET/release/pez" transfer --task sst2 --prompts "$PROMPT" --models smollm2-135m --top 1 --data "$tmp/dev.tsv" --out "$OUT/in-process"
t2=$(date +%s)
python3 - "$OUT" "$N" "$PROMPT" "$((t1 - t0))" "$((t2 - t1))" <<'PY' > "$OUT/README.md"
import json, sys
out, n, prompt, t_end, t_in = sys.argv[1:]
load = lambda d: {(p["method"], p["prompt"]): p["correct"] for p in json.load(open(f"{out}/{d}/transfer_scores.json"))["prompts"]}
end, inp = load("endpoint"), load("in-process")
print("# `pez transfer --endpoint-api openai` against mistral.rs (SmolLM2-135M behind pez-serve)\n")
print(f"Command: `bash scripts/run_openai_endpoint_check.sh {n}`: the first {n} SST-2 dev examples, the empty template and "
      f"the prompt of `{prompt}`. Endpoint: pez-serve's base model, answered by mistral.rs's own `/v1/completions` "
      "(`max_tokens: 1`, `logprobs: 20`, its quantized Q4_1 inference); the label is the verbalizer with the higher "
      "returned log-probability. In-process: pez's f32 forward of the dequantized weights. "
      f"Wall time: endpoint {t_end} s, in-process {t_in} s.\n")
print("| prompt | endpoint accuracy | in-process accuracy | same correctness |\n|---|---|---|---|")
for key, c in inp.items():
    e = end[key]
    same = sum(a == b for a, b in zip(e, c))
    print(f"| {key[0]} `{key[1]}` | {100 * sum(e) / len(e):.1f} | {100 * sum(c) / len(c):.1f} | {same}/{len(c)} |")
PY
cat "$OUT/README.md"
