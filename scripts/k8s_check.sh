#!/usr/bin/env bash
# deploy/k8s/ checked offline (run by scripts/test.sh): every manifest against Kubernetes' own schemas
# (PyPI kubernetes-validate, strict: unknown fields refused), and what schemas cannot see: the ConfigMap's
# serve.toml is a config pez-serve accepts (with the Secret's keys; refused without), the pods' grace period covers
# the drain deadline, max_rss_mib sits under the memory limit, the state directory is the StatefulSet's claim,
# and the sweep Job's completions equal its sweep file's cells. Not checked (no container
# runtime or cluster here): that the Dockerfile builds and that the objects run.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION=${K8S_VERSION:-1.33.0}
TARGET="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
python3 -c "import kubernetes_validate" 2>/dev/null || python3 -m pip install -q kubernetes-validate \
  || { echo "k8s_check: cannot install kubernetes-validate from PyPI" >&2; exit 1; }
python3 -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" deploy/k8s/*.yaml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" <<'PY'
import sys, tomllib, yaml
tmp = sys.argv[1]
docs = {}
import glob
for f in sorted(glob.glob("deploy/k8s/*.yaml")):
    for d in yaml.safe_load_all(open(f)):
        if d:
            docs[(d["kind"], d["metadata"]["name"])] = d
serve = docs[("ConfigMap", "pez-serve-config")]["data"]["serve.toml"]
open(f"{tmp}/serve.toml", "w").write(serve)
cfg = tomllib.loads(serve)
sts = docs[("StatefulSet", "pez-serve")]["spec"]
dep = sts["template"]["spec"]
c = dep["containers"][0]
grace, drain = dep["terminationGracePeriodSeconds"], cfg["limits"]["shutdown_timeout_s"]
pause = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
assert grace > drain + pause, f"terminationGracePeriodSeconds {grace} must exceed shutdown_timeout_s {drain} + preStop {pause}"
lim = c["resources"]["limits"]["memory"]
assert lim.endswith("Gi"), lim
assert cfg["limits"]["max_rss_mib"] < int(lim[:-2]) * 1024, (cfg["limits"]["max_rss_mib"], lim)
for p in ("/health", "/health/live"):
    assert any(c[k]["httpGet"]["path"] == p for k in ("readinessProbe", "livenessProbe")), p
# The state directory is the pod's own claim; the keys come from the Secret; one writer.
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
claims = [t["metadata"]["name"] for t in sts["volumeClaimTemplates"]]
assert "state" in claims and mounts["state"] == cfg["state_dir"], (claims, mounts, cfg.get("state_dir"))
assert sts["replicas"] == 1 and sts["serviceName"] in {n for (k, n) in docs if k == "Service"}, sts["serviceName"]
keys = [e for e in c["env"] if e["name"] == "PEZ_API_KEYS"]
assert keys and keys[0]["valueFrom"]["secretKeyRef"]["name"] == "pez-api-keys", keys
open(f"{tmp}/sweep.toml", "w").write(docs[("ConfigMap", "pez-sweep")]["data"]["sweep.toml"])
open(f"{tmp}/completions", "w").write(str(docs[("Job", "pez-sweep")]["spec"]["completions"]))
print(f"k8s_check: grace {grace} s > drain {drain} s + preStop {pause} s; max_rss_mib {cfg['limits']['max_rss_mib']} < limit {lim}")
PY
# pez-serve reads the ConfigMap's file as it would in the pod (the classifier's prompt.json stands in for the
# pez-classifiers ConfigMap); --check-config parses and checks it, loading no model.
mkdir -p "$tmp/classifiers" && cp evals/sst2/pez-fluency0.003-s1/prompt.json "$tmp/classifiers/sst2-pez.json"
sed "s#/classifiers/#$tmp/classifiers/#" "$tmp/serve.toml" > "$tmp/serve.local.toml"
# With the Secret's keys as the pod gets them; without any, listening on 0.0.0.0 is refused (and says why).
if "$TARGET/release/pez-serve" --config "$tmp/serve.local.toml" --check-config 2>"$tmp/refused.log"; then
  echo "k8s_check: pez-serve accepted 0.0.0.0 without an API key" >&2; exit 1
fi
grep -q "not a loopback address" "$tmp/refused.log" || { cat "$tmp/refused.log" >&2; exit 1; }
PEZ_API_KEYS=k8s-check-key "$TARGET/release/pez-serve" --config "$tmp/serve.local.toml" --check-config
n=$("$TARGET/release/pez" sweep plan "$tmp/sweep.toml" --count)
[ "$n" = "$(cat "$tmp/completions")" ] || { echo "k8s_check: the sweep Job runs $(cat "$tmp/completions") cells, its sweep file has $n" >&2; exit 1; }
echo "k8s_check: all passed (schemas of Kubernetes $K8S_VERSION; serve.toml accepted by pez-serve; sweep Job completions = $n cells)"
