#!/usr/bin/env bash
# `pez` works installed and away from the source tree: `cargo install` into a temporary root, then
# `pez eval sst2 --empty` run from `/` with the data and models named by $PEZ_DATA / $PEZ_MODELS only. The empty
# template must score what it scores in the checkout: 519 of the 872 SST-2 dev sentences (59.52%, evals/sst2/empty.out.json).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# `cargo install` reads no local config: give it ours, so it builds with the same flags as the tests (and shares
# their artifacts instead of rebuilding them with other flags).
cargo install --quiet --locked --config .cargo/config.toml --path crates/pez-cli --root "$root"
data=$(cd "${PEZ_DATA:-../shared/data}" && pwd)
models=$(cd "${PEZ_MODELS:-models}" && pwd)
out=$(cd / && PEZ_DATA="$data" PEZ_MODELS="$models" "$root/bin/pez" eval sst2 --empty --dtype f32 --json)
correct=$(python3 -c 'import json,sys; a=json.loads(sys.stdin.read())["accuracy"]; print(a["correct"], a["total"])' <<<"$out")
[ "$correct" = "519 872" ] || { echo "install_check: installed pez from / scored $correct, expected 519 872" >&2; exit 1; }
echo "install_check: installed pez eval from / = 519/872 (as in the checkout)"
