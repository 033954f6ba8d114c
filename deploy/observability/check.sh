#!/usr/bin/env bash
# Checks this folder: the Prometheus configuration (and its commented Kubernetes example), the
# alert rules and their unit tests, and the Grafana dashboard's queries.
#
#   deploy/observability/check.sh
#
# promtool: $PROMTOOL if set, else the one on PATH, else .cache/promtool here, fetched once from
# Debian's `prometheus` package by fetch-prometheus.sh (the binaries only, no service).
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${PROMTOOL:-}" ]; then
    if command -v promtool >/dev/null; then
        PROMTOOL=promtool
    else
        ./fetch-prometheus.sh
        PROMTOOL=.cache/promtool
    fi
fi

echo "== $("$PROMTOOL" --version 2>&1 | head -n 1)"

echo "== promtool check config prometheus.yml"
"$PROMTOOL" check config prometheus.yml

echo "== promtool check config: the Kubernetes example, uncommented"
k8s=$(mktemp --suffix=.yml)
trap 'rm -f "$k8s" "$k8s.out" "$k8s.static.yml"' EXIT
{
    echo "scrape_configs:"
    sed -n '/^# --- kubernetes example begin ---$/,/^# --- kubernetes example end ---$/p' prometheus.yml \
        | sed '1d;$d;s/^#//'
} >"$k8s"
grep -q 'kubernetes_sd_configs' "$k8s" || { echo "the Kubernetes example block is missing" >&2; exit 1; }
if ! "$PROMTOOL" check config "$k8s" >"$k8s.out" 2>&1; then
    # Debian's promtool is built without Kubernetes discovery. Then check the rest of the block
    # (job, relabelling) with each kubernetes_sd_configs swapped for a static target.
    grep -q 'field kubernetes_sd_configs not found' "$k8s.out" || { cat "$k8s.out"; exit 1; }
    echo "   this promtool has no Kubernetes discovery: checking the block with a static target in its place"
    awk '
        skip && (match($0, /^ */) && RLENGTH > indent || /^ *$/) { next }
        { skip = 0 }
        /^ *kubernetes_sd_configs:/ {
            match($0, /^ */); indent = RLENGTH; skip = 1
            printf "%*sstatic_configs: [{targets: [\"pod.example:8080\"]}]\n", indent, ""
            next
        }
        { print }
    ' "$k8s" >"$k8s.static.yml"
    [ -n "${VERBOSE:-}" ] && cat "$k8s.static.yml"
    "$PROMTOOL" check config "$k8s.static.yml"
fi
rm -f "$k8s.out" "$k8s.static.yml"

echo "== promtool check rules alerts.yml"
"$PROMTOOL" check rules alerts.yml

echo "== promtool test rules alerts_test.yml"
"$PROMTOOL" test rules alerts_test.yml

echo "== check_dashboard.py dashboard.json --rules alerts.yml"
python3 check_dashboard.py dashboard.json --rules alerts.yml

echo "== all passed"
