"""Run with: python3 deploy/bench/faults/report.py   (`make faults` runs it after the fault tests)

Gathers the per-fault tallies that `scheduler/tests/faults.rs` wrote into this folder
(`{fault}.json`) into FAULTS.md. Standard library only.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = [
    ("fault", "fault"), ("injections", "injections"), ("jobs", "jobs"), ("succeeded", "succeeded"),
    ("failed_with_reason", "failed, with reason"), ("cancelled", "cancelled"), ("dead_lettered", "dead-lettered"),
    ("stuck_requests", "stuck requests"), ("lost_jobs", "lost jobs"), ("failed_without_reason", "failed, no reason"),
    ("stored_objects", "stored images"), ("images_of_succeeded_jobs", "images of succeeded jobs"), ("seconds", "seconds"), ("checks", "fault's own checks"),
]


def cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key.replace('_', ' ')} {count}" for key, count in value.items())
    return str(value)


def main() -> None:
    tallies = [json.loads(path.read_text()) for path in sorted(HERE.glob("*.json"))]
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    rows = ["| " + " | ".join(cell(tally.get(key, "")) for key, _ in COLUMNS) + " |" for tally in tallies]
    (HERE / "FAULTS.md").write_text(f"""# Faults injected while a backlog is in flight, counted

Written by `make faults` (the ignored tests of `scheduler/tests/faults.rs`, then `report.py`): real
RabbitMQ, Redis and s3s-fs on loopback, one worker (`max_attempts` 5, back-off from 300 ms), the tiny
test model at 6 steps (2 for `s3-gone`, whose jobs all run their five attempts). Per injection a
two-job request is submitted, the fault is injected once a job runs, and at the end every request
must have ended with one stored image per succeeded job. RabbitMQ and Redis restarts use a node and
a server of the test's own (Redis with an append-only file, `appendfsync everysec`).

- `poison-message`: a message that is no runnable job is published straight onto the jobs queue
  (not JSON, a schema version from the future, a job of a request never accepted, in turn); each
  must be dead-lettered with its reason while the real jobs go on.
- `webhook-down`: every request has a callback URL; per injection the receiver answers 503 until
  it has refused that request's callback, then comes back, and the scheduler's retry (6 attempts
  from 200 ms, doubling) must deliver it; at the end every request has been called back.
- `worker-hang`: the worker is built with fault injection (`--features failpoints`,
  `FAILPOINTS=worker-step=1*pause`): each worker process hangs in the first step of the first job it
  runs on a first attempt. Its watchdog (`worker.stall_timeout_secs` = 2) hands the job back as a
  failed attempt and exits; the test starts a new worker as a supervisor would.

{header}
{rule}
""" + "\n".join(rows) + "\n")
    print(f"wrote {HERE / 'FAULTS.md'} ({len(tallies)} faults)")


if __name__ == "__main__":
    main()
