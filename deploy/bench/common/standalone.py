"""One `rapid-scheduler standalone` fleet for a benchmark: started on a free port, one request run to
its end through the HTTP API, stopped. Standard library only (throughput/, overlap/)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

API_KEY = "bench-key"
FINAL = ("succeeded", "partial", "failed", "cancelled")


def key_hash(scheduler: Path) -> str:
    """The tenant entry's `api_key_sha256` for API_KEY."""
    return subprocess.run([scheduler, "hash-key", API_KEY], check=True, capture_output=True, text=True).stdout.strip()


def call(port: int, method: str, path: str, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fleet(scheduler: Path, config_path: Path, port: int, log_path: Path, start_timeout_s: float = 300):
    """A standalone fleet on `port` (which the config listens on), ready; stopped on exit."""
    with open(log_path, "w") as log:
        process = subprocess.Popen([scheduler, "standalone", "--config", config_path],
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RAPID_LOG": "info"})
        try:
            deadline = time.time() + start_timeout_s
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
                    break
                except OSError:
                    if process.poll() is not None or time.time() > deadline:
                        sys.exit(f"the standalone fleet did not start; see {log_path}")
                    time.sleep(0.5)
            yield
        finally:
            process.terminate()
            process.wait(timeout=60)


def run_request(port: int, body: dict, poll_s: float = 1.0):
    """Submits one generation request, waits for its end; its view and its event log."""
    request_id = call(port, "POST", "/v1/generations", body)["request_id"]
    while True:
        view = call(port, "GET", f"/v1/requests/{request_id}")
        if view["status"] in FINAL:
            break
        time.sleep(poll_s)
    events = call(port, "GET", f"/v1/requests/{request_id}/events")["events"]
    return view, events


def backlog(scheduler: Path, config_path: Path, port: int, log_path: Path, body: dict, label: str,
            poll_s: float = 1.0, start_timeout_s: float = 300):
    """One fleet, one request of a backlog run to success (or exit naming `label`): the request's
    view, its jobs' `succeeded` events, and the seconds from the first job's start to the last
    job's success, the rate's denominator."""
    with fleet(scheduler, config_path, port, log_path, start_timeout_s):
        view, events = run_request(port, body, poll_s)
    if view["status"] != "succeeded":
        sys.exit(f"{label}: the request ended {view['status']}: {json.dumps(view)[:2000]}")
    succeeded = [e for e in events if e["kind"]["type"] == "succeeded"]
    started = min(e["at_ms"] for e in events if e["kind"]["type"] == "started")
    seconds = (max(e["at_ms"] for e in succeeded) - started) / 1e3
    return view, succeeded, seconds
