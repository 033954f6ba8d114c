#!/usr/bin/env bash
# Puts Debian's `prometheus` and `promtool` binaries into deploy/observability/.cache/ (once):
# check.sh runs promtool, and the fleet test `a_real_prometheus_scrapes_the_scheduler_and_a_worker`
# runs a Prometheus server. Only the two binaries are taken from the package (apt-get download +
# dpkg-deb -x): `apt-get install prometheus` would also install and start a system service.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .cache/prometheus ] && [ -x .cache/promtool ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-prometheus: extracting prometheus and promtool from Debian's package into .cache/" >&2
sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo=sudo; fi
if ! (cd "$tmp" && apt-get download prometheus >"$tmp/log" 2>&1); then
    $sudo apt-get update -qq
    (cd "$tmp" && apt-get download prometheus >"$tmp/log" 2>&1) || { cat "$tmp/log" >&2; exit 1; }
fi
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
mkdir -p .cache
install -m 0755 "$tmp/x/usr/bin/promtool" "$tmp/x/usr/bin/prometheus" .cache/
