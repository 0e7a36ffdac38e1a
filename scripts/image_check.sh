#!/usr/bin/env bash
# The container image, built and run for real (run by scripts/test.sh, so by CI). These machines reach no
# registry of container images, so the base is made from Debian's packages: `debootstrap --variant=minbase
# bookworm` (cached as a tarball in ~/.cache/pez/image), imported into podman, and the Dockerfile's `prebuilt`
# target built on it from the binaries the test command already built (RUNTIME_IMAGE=that base). The image then
# runs with a state volume, serves the tiny GPT-2 checkpoint, takes one tuning job and one classification through
# the official openai client, is restarted, and still has the job and serves its classifier.
# Where podman, runc or debootstrap cannot be had or run (no root, no Debian, no user namespaces), it says so and
# skips. runc, not crun: crun fails here on cgroups and raised rlimits; both need the rlimits below.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release"
skip() { echo "image_check: skipped: $*"; exit 0; }
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
  command -v apt-get >/dev/null || skip "no podman, runc or debootstrap, and no apt-get to install them"
  echo "image_check: installing podman, runc and debootstrap (Debian packages)"
  { $SUDO apt-get install -y -q podman runc debootstrap uidmap slirp4netns >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q podman runc debootstrap uidmap slirp4netns >/dev/null; }; } \
    || skip "could not install podman, runc and debootstrap"
fi
P=(podman --runtime runc)
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
BASE=localhost/pez-base:bookworm
IMAGE=localhost/pez:check
t0=$(date +%s)
if ! "${P[@]}" image exists "$BASE"; then
  cache="$HOME/.cache/pez/image"
  if [ ! -s "$cache/bookworm-minbase.tar" ]; then
    mkdir -p "$cache"
    root=$(mktemp -d)
    $SUDO debootstrap --variant=minbase --include=ca-certificates bookworm "$root/rootfs" http://deb.debian.org/debian \
      >"$cache/debootstrap.log" 2>&1 || { $SUDO rm -rf "$root"; skip "debootstrap failed: $(tail -2 "$cache/debootstrap.log")"; }
    $SUDO tar -C "$root/rootfs" -cf "$cache/bookworm-minbase.tar" .
    $SUDO rm -rf "$root"
  fi
  "${P[@]}" import "$cache/bookworm-minbase.tar" "$BASE" >/dev/null 2>&1 || skip "podman cannot import an image here"
fi
tmp=$(mktemp -d)
name="pez-check-$$"
cleanup() {
  "${P[@]}" rm -f "$name" >/dev/null 2>&1 || true
  "${P[@]}" volume rm -f "$name-state" >/dev/null 2>&1 || true
  "${P[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
# The build context: the Dockerfile and the binaries, nothing else (the checkout's models are not sent).
mkdir -p "$tmp/ctx/prebuilt" "$tmp/conf"
cp Dockerfile "$tmp/ctx/"
cp "$TARGET/pez" "$TARGET/pez-serve" "$tmp/ctx/prebuilt/"
"${P[@]}" build -q "${LIMITS[@]}" --target prebuilt --build-arg RUNTIME_IMAGE="$BASE" -t "$IMAGE" "$tmp/ctx" >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log" >&2; echo "image_check: FAIL the image did not build" >&2; exit 1; }
echo "image_check: built $IMAGE on $BASE ($(( $(date +%s) - t0 )) s)"
cat > "$tmp/conf/serve.toml" <<EOF
host = "0.0.0.0"
state_dir = "/state"
[[models]]
name = "tiny-gpt2"
path = "/fixtures/gpt2"
dtype = "f32"
EOF
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${P[@]}" volume create "$name-state" >/dev/null
run() {
  "${P[@]}" run -d --name "$name" "${LIMITS[@]}" -p "127.0.0.1:$port:8080" -e PEZ_API_KEYS=image-check-key \
    -v "$name-state:/state" -v "$(pwd)/crates/pez-models/tests/fixtures/transfer:/fixtures:ro" -v "$tmp/conf:/config:ro" \
    "$IMAGE" --config /config/serve.toml >/dev/null
}
up() {
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0; sleep 0.2; done
  "${P[@]}" logs "$name" 2>&1 | tail -20 >&2
  echo "image_check: FAIL pez-serve in the container never became ready" >&2
  exit 1
}
run
up
python3 scripts/image_client_check.py --url "http://127.0.0.1:$port/v1" --key image-check-key --data crates/pez-models/tests/fixtures/transfer/dev.tsv \
  --state "$tmp/job.json" create
"${P[@]}" restart "$name" >/dev/null
up
python3 scripts/image_client_check.py --url "http://127.0.0.1:$port/v1" --key image-check-key --data crates/pez-models/tests/fixtures/transfer/dev.tsv \
  --state "$tmp/job.json" after-restart
echo "image_check: all passed in $(( $(date +%s) - t0 )) s"
