#!/usr/bin/env bash
# Run with `bash deploy/k8s/validate.sh`: renders every overlay with kustomize and validates the
# result offline (VALIDATION.md says against what). Installs its tools on first use, from the
# package registries only: a Python venv in .venv-deploy (kubernetes-validate, yamllint) and the
# npm package @kubernetes-models/keda in .venv-deploy/npm. Needs kubectl (Debian:
# `apt-get install kubernetes-client`) or kustomize, python3 >= 3.11, node and npm.
set -euo pipefail
cd "$(dirname "$0")/../.."
k8s=deploy/k8s
venv=.venv-deploy
out=.cache/k8s-rendered
overlays=(cpu gpu cpu-hpa gpu-hpa)

if command -v kubectl >/dev/null; then
    render=(kubectl kustomize)
elif command -v kustomize >/dev/null; then
    render=(kustomize build)
else
    echo "validate.sh: needs kubectl or kustomize (Debian: apt-get install kubernetes-client)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$k8s/requirements.txt"
if [ ! -f "$venv/npm/node_modules/@kubernetes-models/keda/package.json" ]; then
    mkdir -p "$venv/npm"
    npm install --silent --no-audit --no-fund --prefix "$venv/npm" @kubernetes-models/keda@2.0.0
fi

rm -rf "$out" && mkdir -p "$out"
for overlay in "${overlays[@]}"; do
    "${render[@]}" "$k8s/overlays/$overlay" > "$out/$overlay.yaml"
    echo "rendered $k8s/overlays/$overlay: $(grep -c '^kind:' "$out/$overlay.yaml") objects"
done

# Redis with its append-only file, for clusters without a managed one (its own kustomization).
"${render[@]}" "$k8s/redis" > "$out/redis.yaml"
echo "rendered $k8s/redis: $(grep -c '^kind:' "$out/redis.yaml") objects"

"$venv/bin/yamllint" --strict -c "$k8s/.yamllint" "$k8s" "$out"
echo "yamllint: $k8s and the rendered overlays are clean"

"$venv/bin/python" "$k8s/validate.py" "$out" "$venv/npm"
