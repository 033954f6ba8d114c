"""Run with: make bench-load   (or python3 deploy/bench/load/load.py [--large 20] [--small 2000]
                                                                 [--threads 4] [--seconds 60] [--jobs 200])

The fleet's own overhead on loopback; phases 1-3 with no worker, so nothing but the API, the
planner, Redis and RabbitMQ is measured: `rapid-scheduler serve` against the machine's RabbitMQ and Redis and an
s3s-fs store (`bash deploy/test-services.sh` starts or installs them), under a queue prefix and
key prefix of its own that it deletes afterwards.

1. Enqueue: `--large` requests of 400 jobs each (the default `max_jobs_per_request`), one after
   another: jobs enqueued per second (records written to Redis, jobs published with confirms).
2. Small submits: `--small` one-job requests from `--threads` client threads (keep-alive), bounded
   by `--seconds`: accepted requests per second, p50 and p99 API latency as the client saw it.
3. Dispatch: a second scheduler on the same queues with `dispatch_ready_jobs` above the backlog
   moves every waiting job from the lanes into `jobs`: dispatches per second.
4. One worker: `--jobs` one-job requests of the bundled model (1 step, no upscaling), each
   submitted when the last has ended, on fresh queues: queue-to-start latency (submit → the
   worker's `started` event) and the fleet's overhead per job (`started` → `succeeded` minus the
   engine's own stage times: admission, state writes, progress events, the upload). Event times
   are whole milliseconds, so single values are ±1 ms.
(The first scheduler keeps `dispatch_ready_jobs = 1`, so phases 1 and 2 leave the backlog in the
lanes for phase 3.) Bounded and self-stopping: each phase ends at its count or its time limit.

Writes deploy/bench/load/LOAD.md and load.json. Standard library only.
"""

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py
from machine import cpu_model, isa  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SCHEDULER = ROOT / "target/release/rapid-scheduler"
WORKER = ROOT / "target/release/rapid-worker"
MODEL = ROOT / "models/rapid-mini"
S3S_FS = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin/s3s-fs"
API_KEY = "load-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def key_hash() -> str:
    return subprocess.run([SCHEDULER, "hash-key", API_KEY], check=True, capture_output=True, text=True).stdout.strip()


def config(prefix: str, port: int, s3_port: int, ready_jobs: int) -> str:
    """The fleet's configuration; its `[worker]` section serves only phase 4."""
    return f"""
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
queue_prefix = "{prefix}"
[redis]
url = "redis://127.0.0.1:6379/0"
key_prefix = "{prefix}"
finished_ttl_secs = 3600
[s3]
endpoint = "http://127.0.0.1:{s3_port}"
region = "us-east-1"
bucket = "images"
path_style = true
access_key = "load"
secret_key = "load-secret"
create_bucket = true
[scheduler]
listen = "127.0.0.1:{port}"
callback_secret = "load"
default_model = "rapid-mini"
dispatch_ready_jobs = {ready_jobs}
[scheduler.models.rapid-mini]
width = 64
height = 64
[worker]
threads = 1
[worker.models]
rapid-mini = "{MODEL}"
[[tenants]]
name = "load"
api_key_sha256 = "{key_hash()}"
"""


def start(args: list, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_http(port: int, path: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"error: nothing ready on port {port}{path} after {seconds} s")


def submit(connection: http.client.HTTPConnection, body: bytes) -> float:
    """POSTs one generation request; the seconds it took. Anything but 202 stops the benchmark."""
    started = time.perf_counter()
    connection.request("POST", "/v1/generations", body,
                       {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 202:
        sys.exit(f"error: submit answered {response.status}: {answer[:300]!r}")
    return elapsed


def percentile(values: list, share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def lane_depth(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith("rapid_lane_depth{"))


def phase_large(port: int, count: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    # 25 prompts × 16 images = 400 jobs.
    body = json.dumps({"prompts": [f"a navy wool coat, look {i}" for i in range(25)], "images_per_prompt": 16}).encode()
    times = [submit(connection, body) for _ in range(count)]
    return {"requests": count, "jobs_per_request": 400, "seconds": [round(t, 4) for t in times],
            "jobs_per_second_median": round(400 / statistics.median(times)),
            "jobs_per_second_overall": round(400 * count / sum(times))}


def phase_small(port: int, count: int, threads: int, seconds: float) -> dict:
    body = json.dumps({"prompts": ["a red silk dress"]}).encode()
    latencies: list = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    remaining = [count]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            latency = submit(connection, body)
            with lock:
                latencies.append(latency)

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "threads": threads, "seconds": round(elapsed, 2),
            "requests_per_second": round(len(latencies) / elapsed),
            "p50_ms": round(1000 * percentile(latencies, 0.50), 2),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 2)}


def phase_dispatch(prefix: str, s3_port: int, work: Path, waiting: int, seconds: float) -> dict:
    port = free_port()
    path = work / "dispatch.toml"
    path.write_text(config(prefix, port, s3_port, ready_jobs=10_000_000))
    scheduler = start([SCHEDULER, "serve", "--config", path], work / "dispatch.log")
    try:
        wait_http(port, "/readyz")
        started = time.perf_counter()
        deadline = time.monotonic() + seconds
        left = lane_depth(port)
        while left > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            left = lane_depth(port)
        elapsed = time.perf_counter() - started
    finally:
        scheduler.terminate()
        scheduler.wait()
    moved = waiting - left
    return {"jobs_moved": moved, "seconds": round(elapsed, 2), "dispatches_per_second": round(moved / elapsed)}


def get_json(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"Authorization": f"Bearer {API_KEY}"})
    return json.loads(connection.getresponse().read())


def phase_worker(prefix: str, s3_port: int, work: Path, count: int, seconds: float) -> dict:
    port = free_port()
    path = work / "worker.toml"
    path.write_text(config(prefix, port, s3_port, ready_jobs=16))
    scheduler = start([SCHEDULER, "serve", "--config", path], work / "scheduler-4.log")
    worker = start([WORKER, "run", "--config", path], work / "worker.log")
    queue_to_start, overhead = [], []
    try:
        wait_http(port, "/readyz")
        deadline = time.monotonic() + 60
        while "waiting for jobs" not in (work / "worker.log").read_text():
            if time.monotonic() > deadline:
                sys.exit(f"error: the worker did not start:\n{(work / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.1)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"prompts": ["a red silk dress"], "steps": 1, "upscale": False, "priority": "interactive"}).encode()
        stop_at = time.monotonic() + seconds
        while len(queue_to_start) < count and time.monotonic() < stop_at:
            connection.request("POST", "/v1/generations", body,
                               {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
            response = connection.getresponse()
            request_id = json.loads(response.read())["request_id"]
            while get_json(port, f"/v1/requests/{request_id}")["status"] in ("queued", "running"):
                time.sleep(0.005)
            view = get_json(port, f"/v1/requests/{request_id}")
            events = get_json(port, f"/v1/requests/{request_id}/events")["events"]
            started = next(e for e in events if e["kind"]["type"] == "started")
            done = next(e for e in events if e["kind"]["type"] == "succeeded")
            # `unet_per_step` is `unet_total` divided by the steps: counted once, in the total.
            engine = sum(ms for name, ms in done["timings_ms"] if name != "unet_per_step")
            queue_to_start.append(started["at_ms"] - view["created_ms"])
            overhead.append(done["at_ms"] - started["at_ms"] - engine)
    finally:
        worker.terminate()
        scheduler.terminate()
        worker.wait()
        scheduler.wait()
    return {"jobs": len(queue_to_start),
            "queue_to_start_p50_ms": percentile(queue_to_start, 0.5), "queue_to_start_p99_ms": percentile(queue_to_start, 0.99),
            "overhead_p50_ms": round(percentile(overhead, 0.5), 1), "overhead_p99_ms": round(percentile(overhead, 0.99), 1)}


def clean_up(prefix: str) -> None:
    for queue in ["jobs", "jobs.dead", "callbacks", "callbacks.dead", "jobs.interactive.load", "jobs.batch.load"]:
        subprocess.run(["rabbitmqctl", "delete_queue", f"{prefix}.{queue}"], capture_output=True)
    keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"{prefix}:*"], capture_output=True, text=True).stdout.split()
    for start_at in range(0, len(keys), 1000):
        subprocess.run(["redis-cli", "DEL", *keys[start_at:start_at + 1000]], capture_output=True)


def write_results(results: dict) -> None:
    out = Path(__file__).resolve().parent
    (out / "load.json").write_text(json.dumps(results, indent=2) + "\n")
    large, small, dispatch, worker = (results[k] for k in ("enqueue", "small_submits", "dispatch", "worker"))
    (out / "LOAD.md").write_text(f"""# The fleet's overhead under load (loopback)

Written by `make bench-load` (`deploy/bench/load/load.py`) on {results['generated']}; machine:
{results['machine']['cpu']} ({results['machine']['isa']}), {results['machine']['cores']} cores, shared by
the client, the scheduler, RabbitMQ and Redis. One `rapid-scheduler serve`, the machine's RabbitMQ
(persistent messages, publisher confirms) and Redis; no worker, except for the last two rows (one
`rapid-worker` on the bundled model, 1 step, no upscaling, each job submitted once the last ended).

| measure | value |
|---|---:|
| 400-job requests enqueued, jobs/s (median request) | {large['jobs_per_second_median']} |
| 400-job requests enqueued, jobs/s (all {large['requests']} requests) | {large['jobs_per_second_overall']} |
| one-job submits, accepted/s ({small['threads']} client threads, {small['requests']} requests) | {small['requests_per_second']} |
| one-job submit latency p50, ms | {small['p50_ms']} |
| one-job submit latency p99, ms | {small['p99_ms']} |
| dispatches/s, lanes → `jobs` ({dispatch['jobs_moved']} jobs) | {dispatch['dispatches_per_second']} |
| queue-to-start p50 / p99, ms (one worker, {worker['jobs']} jobs one after another) | {worker['queue_to_start_p50_ms']} / {worker['queue_to_start_p99_ms']} |
| fleet overhead per job beyond the engine, p50 / p99, ms | {worker['overhead_p50_ms']} / {worker['overhead_p99_ms']} |

A submit writes the request and its job records to Redis, then publishes the jobs into the
tenant's lane with publisher confirms awaited in windows of 256. The dispatcher takes up to 256 jobs
a round, one `basic.get` each (a round trip apiece, which bounds its rate), publishes them with their
confirms awaited together, then acknowledges them in their lanes; it only has to keep ahead of the
workers, which take tens to hundreds of milliseconds a job. The one-job latencies include waiting
for the two cores the four client threads share with the server side.
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=20, help="400-job requests (phase 1)")
    parser.add_argument("--small", type=int, default=2000, help="one-job requests at most (phase 2)")
    parser.add_argument("--threads", type=int, default=4, help="client threads of phase 2")
    parser.add_argument("--seconds", type=float, default=60, help="time limit of phases 2, 3 and 4 each")
    parser.add_argument("--jobs", type=int, default=200, help="one-job requests through the worker (phase 4)")
    args = parser.parse_args()
    for binary in (SCHEDULER, WORKER):
        if not binary.exists():
            sys.exit(f"error: {binary} is missing; run `cargo build --release -p rapid-scheduler -p rapid-worker`")
    prefix = f"load-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="rapid-load-") as folder:
        work = Path(folder)
        s3_port, port = free_port(), free_port()
        (work / "s3").mkdir()
        s3 = start([S3S_FS, "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", "load",
                    "--secret-key", "load-secret", work / "s3"], work / "s3s-fs.log")
        path = work / "fleet.toml"
        path.write_text(config(prefix, port, s3_port, ready_jobs=1))
        scheduler = start([SCHEDULER, "serve", "--config", path], work / "scheduler.log")
        try:
            wait_http(port, "/readyz")
            large = phase_large(port, args.large)
            print(f"enqueue: {large['jobs_per_second_median']} jobs/s (median of {args.large} × 400 jobs)", file=sys.stderr)
            small = phase_small(port, args.small, args.threads, args.seconds)
            print(f"small submits: {small['requests_per_second']} req/s, p50 {small['p50_ms']} ms, "
                  f"p99 {small['p99_ms']} ms", file=sys.stderr)
            scheduler.terminate()
            scheduler.wait()
            waiting = large["requests"] * 400 + small["requests"]
            dispatch = phase_dispatch(prefix, s3_port, work, waiting, args.seconds)
            print(f"dispatch: {dispatch['dispatches_per_second']} jobs/s ({dispatch['jobs_moved']} moved)", file=sys.stderr)
        finally:
            scheduler.kill()
            clean_up(prefix)
        try:
            worker = phase_worker(prefix + "-w", s3_port, work, args.jobs, args.seconds)
            print(f"worker: queue to start p50 {worker['queue_to_start_p50_ms']} ms, overhead p50 "
                  f"{worker['overhead_p50_ms']} ms ({worker['jobs']} jobs)", file=sys.stderr)
        finally:
            s3.kill()
            clean_up(prefix + "-w")
    write_results({
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": cpu_model(), "isa": isa(), "cores": os.cpu_count(), "python": platform.python_version()},
        "enqueue": large, "small_submits": small, "dispatch": dispatch, "worker": worker,
    })
    print("wrote deploy/bench/load/LOAD.md", file=sys.stderr)


if __name__ == "__main__":
    main()
