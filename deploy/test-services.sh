#!/usr/bin/env bash
# Run with: bash deploy/test-services.sh
#
# Makes sure the servers the fleet tests talk to are there, idempotently:
#   RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379 — started if not running;
#   s3s-fs (an S3-compatible server over a folder) — installed with cargo if missing. The tests
#   start their own s3s-fs processes, one per test, each on a free port with its own folder.
set -euo pipefail

S3S_FS_VERSION=0.14.1   # 0.17 needs Rust 1.96; 0.14.1 builds with this machine's 1.95

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    listening "$port" && return 0
    sleep 0.5
  done
  echo "test-services: $name did not start listening on port $port within 60 s" >&2
  exit 1
}

if ! listening 6379; then
  echo "test-services: starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis 6379
fi

if ! listening 5672; then
  echo "test-services: starting RabbitMQ" >&2
  rabbitmq-server -detached
  wait_for RabbitMQ 5672
  rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

if ! command -v s3s-fs >/dev/null && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]]; then
  echo "test-services: installing s3s-fs $S3S_FS_VERSION (once per machine, a few minutes)" >&2
  cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked
fi
# The fleet test in which a real Prometheus scrapes the scheduler and a worker.
bash "$(dirname "${BASH_SOURCE[0]}")/observability/fetch-prometheus.sh"
echo "test-services: RabbitMQ, Redis, s3s-fs and Prometheus ready" >&2
