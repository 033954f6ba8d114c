#!/usr/bin/env bash
# Run with: make fuzz            (FUZZ_EXAMPLES=N per operation, default 400;
#                                 FUZZ_RESULTS=FILE, default deploy/fuzz/RESULTS.md; `make test`
#                                 runs a bounded pass with its results in a scratch file)
#
# Fuzzes the running scheduler from its own /openapi.json with Schemathesis: a real `serve` against
# RabbitMQ, Redis and an s3s-fs server (no workers, so accepted jobs only queue), under queue and key
# prefixes of its own that are removed afterwards. Every API operation gets FUZZ_EXAMPLES generated
# requests, valid and invalid (Schemathesis' examples, coverage and fuzzing phases), with its checks
# (no 5xx, status codes, content types and bodies as documented, auth enforced). Then
# summarize.py counts every request from the HAR report, checks each 4xx body against the API's
# error shape itself, and writes deploy/fuzz/RESULTS.md. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

EXAMPLES=${FUZZ_EXAMPLES:-400}
RESULTS=${FUZZ_RESULTS:-deploy/fuzz/RESULTS.md}
bash deploy/test-services.sh
if [[ ! -x .venv-fuzz/bin/schemathesis ]]; then
  python3 -m venv .venv-fuzz
  .venv-fuzz/bin/pip install --quiet --disable-pip-version-check -r deploy/fuzz/requirements.txt
fi
cargo build --release --quiet -p rapid-scheduler

work=$(mktemp -d)
prefix="fuzz-$$"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
s3_port=$(free_port)
api_port=$(free_port)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rabbitmqctl --quiet list_queues name 2>/dev/null | grep "^$prefix\\." | while read -r queue; do
    rabbitmqctl --quiet delete_queue "$queue" >/dev/null 2>&1 || true
  done
  redis-cli --scan --pattern "$prefix:*" | xargs -r redis-cli del >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/s3"
"${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" --host 127.0.0.1 --port "$s3_port" --access-key fuzz --secret-key fuzz-secret \
  "$work/s3" >"$work/s3s-fs.log" 2>&1 &
pids+=($!)
key_hash=$(./target/release/rapid-scheduler hash-key fuzz-key)
cat >"$work/fleet.toml" <<TOML
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
queue_prefix = "$prefix"
[redis]
url = "redis://127.0.0.1:6379/0"
key_prefix = "$prefix"
[s3]
endpoint = "http://127.0.0.1:$s3_port"
region = "us-east-1"
bucket = "fuzz"
path_style = true
access_key = "fuzz"
secret_key = "fuzz-secret"
create_bucket = true
[scheduler]
listen = "127.0.0.1:$api_port"
callback_secret = "fuzz-secret"
default_model = "rapid-mini"
blocked_terms = { en = ["gore"], zh = ["血腥"] }
[scheduler.models.rapid-mini]
width = 64
height = 64
[[tenants]]
name = "fuzz"
api_key_sha256 = "$key_hash"
TOML
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && break; sleep 0.1; done
RAPID_LOG=warn ./target/release/rapid-scheduler serve --config "$work/fleet.toml" >"$work/scheduler.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null && break; sleep 0.2; done

started=$(date +%s)
status=0
# `use_after_free` expects a DELETEd resource to be gone; here DELETE cancels a request, which
# stays readable with status `cancelled` (DESIGN.md). `positive_data_acceptance` expects every
# schema-valid body to be accepted; the schema states types, not the planner's range checks.
# Run from the scratch folder, so Schemathesis' own cache stays out of the repository.
schemathesis="$PWD/.venv-fuzz/bin/schemathesis"
(cd "$work" && "$schemathesis" run "http://127.0.0.1:$api_port/openapi.json" \
  --header "Authorization: Bearer fuzz-key" --checks all --exclude-checks use_after_free,positive_data_acceptance \
  --max-examples "$EXAMPLES" --seed 1 --workers 2 --phases examples,coverage,fuzzing --no-shrink \
  --report har,junit --report-har-path "$work/run.har" --report-junit-path "$work/junit.xml" \
  --output-truncate true >"$work/schemathesis.txt" 2>&1) || status=$?
elapsed=$(( $(date +%s) - started ))
tail -n 40 "$work/schemathesis.txt"
.venv-fuzz/bin/python deploy/fuzz/summarize.py --har "$work/run.har" --junit "$work/junit.xml" \
  --scheduler-log "$work/scheduler.log" --seconds "$elapsed" --examples "$EXAMPLES" \
  --schemathesis-exit "$status" --out "$RESULTS" || status=$?
exit "$status"
