"""Run by deploy/fuzz/run.sh: counts the requests of a Schemathesis run from its HAR report, checks
every 4xx body against the API's error shape ({"error": {"code", "message", "field"?}}), and writes
the results file. Exits non-zero when any response was a 5xx, any 4xx body was off-shape, the
scheduler panicked, or Schemathesis reported a failure."""

import argparse
import collections
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

ROUTES = [
    ("/v1/requests/{id}/events", re.compile(r"^/v1/requests/[^/]+/events$")),
    ("/v1/requests/{id}", re.compile(r"^/v1/requests/[^/]+$")),
]


def route(path: str) -> str:
    return next((name for name, pattern in ROUTES if pattern.match(path)), path)


def error_shaped(text: str) -> bool:
    try:
        body = json.loads(text)
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
        and error["message"] != ""
        and isinstance(error.get("field", ""), str)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--har", type=Path, required=True)
    parser.add_argument("--junit", type=Path, required=True)
    parser.add_argument("--scheduler-log", type=Path, required=True)
    parser.add_argument("--seconds", type=int, required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--schemathesis-exit", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    entries = json.loads(args.har.read_text())["log"]["entries"]
    per_operation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    off_shape = []
    for entry in entries:
        operation = f'{entry["request"]["method"]} {route(urlparse(entry["request"]["url"]).path)}'
        status = entry["response"]["status"]
        per_operation[operation][status] += 1
        text = entry["response"].get("content", {}).get("text", "")
        if 400 <= status < 500 and not error_shaped(text):
            off_shape.append(f"{operation} → {status}: {text[:200]!r}")

    suites = ET.parse(args.junit).getroot()
    cases = list(suites.iter("testcase"))
    failed = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    panics = args.scheduler_log.read_text(errors="replace").count("panicked")
    total = sum(sum(c.values()) for c in per_operation.values())
    server_errors = sum(n for c in per_operation.values() for status, n in c.items() if status >= 500)

    lines = [
        "# Fuzzing the running API from its OpenAPI document",
        "",
        "Regenerate with `make fuzz` (`deploy/fuzz/run.sh`; `FUZZ_EXAMPLES` per operation, here "
        f"{args.examples}). Schemathesis 4.32.5 (`deploy/fuzz/requirements.txt`) against `rapid-scheduler serve` "
        "on real RabbitMQ, Redis and s3s-fs, phases examples, coverage and fuzzing, seed 1, every check "
        "but `use_after_free` (DELETE cancels; the request stays readable) and `positive_data_acceptance` "
        "(the schema gives types, not the planner's ranges). The counts come from the run's HAR report; "
        "the error-shape check is this project's own (`summarize.py`).",
        "",
        f"- requests: **{total}** in {args.seconds} s",
        f"- 5xx responses: **{server_errors}**",
        f"- 4xx bodies not in the error shape: **{len(off_shape)}**",
        f"- scheduler panics: **{panics}**",
        f"- Schemathesis operations: {len(cases)}, failed: **{len(failed)}** (exit {args.schemathesis_exit})",
        "",
        "| operation | requests | statuses |",
        "|---|---:|---|",
    ]
    for operation in sorted(per_operation):
        counts = per_operation[operation]
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
        lines.append(f"| `{operation}` | {sum(counts.values())} | {statuses} |")
    if failed or off_shape:
        lines += ["", "## Failures", ""] + [f"- {name}" for name in failed] + [f"- {line}" for line in off_shape[:50]]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"fuzz: {total} requests, {server_errors} 5xx, {len(off_shape)} off-shape 4xx, {panics} panics, "
          f"{len(failed)} failed operations -> {args.out}")
    if server_errors or off_shape or panics or failed or args.schemathesis_exit:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
