"""Run with `python3 -m unittest deploy/sim/test_simulate.py` (stdlib only, a few seconds).

The simulator against cases with a known answer: single-server queues (M/M/1, M/D/1), two
priority classes on one server (Cobham's formula for non-preemptive priorities), several servers
(Erlang C), and the KEDA/HPA replica rule.
"""

from __future__ import annotations

import math
import random
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import simulate as sim  # noqa: E402

# A fixed fleet: no autoscaling (min = max), no start-up, so queueing theory applies.
FAST = sim.WorkerKind(name="test", service_s=1.0, ready_s=0.0, pod_start_s=0.0, service_source="",
                      ready_source="", max_interactive=1, max_batch=0)


def fixed(servers: int, ready_jobs: int = 16) -> sim.Candidate:
    pool = sim.PoolSettings(min_replicas=servers, max_replicas=servers, value=1,
                            trigger=sim.TRIGGER_READY_AND_INTERACTIVE)
    off = sim.PoolSettings(min_replicas=0, max_replicas=0, value=1, trigger=sim.TRIGGER_BATCH_LANES)
    return sim.Candidate(name="fixed", interactive=pool, batch=off, dispatch_ready_jobs=ready_jobs)


def poisson_trace(rates: dict[int, float], n: int, service, seed: int) -> tuple[sim.Trace, list[float]]:
    """`n` single-job requests, Poisson arrivals, class by rate; returns the trace and service times."""
    rng = random.Random(seed)
    total = sum(rates.values())
    trace, services, t = sim.Trace(), [], 0.0
    classes, weights = list(rates), list(rates.values())
    for _ in range(n):
        t += rng.expovariate(total)
        cls = rng.choices(classes, weights=weights)[0]
        trace.add_request(t, cls, 0, 1, rng)
        services.append(service(rng, cls))
    return trace, services


def mean_waits(trace: sim.Trace, services: list[float], cand: sim.Candidate, warmup: int = 2000) -> dict[int, float]:
    fleet = sim.Fleet(trace, FAST, cand, horizon=trace.arrival[-1], fixed_service=services)
    fleet.run()
    sums, counts = {}, {}
    for j in range(warmup, len(trace)):
        c = trace.cls[j]
        sums[c] = sums.get(c, 0.0) + fleet.start[j] - trace.arrival[j]
        counts[c] = counts.get(c, 0) + 1
    return {c: sums[c] / counts[c] for c in sums}


class QueueingTheory(unittest.TestCase):
    N = 150_000

    def test_mm1_mean_wait(self):
        lam, mu = 0.6, 1.0
        trace, services = poisson_trace({sim.INTERACTIVE: lam}, self.N, lambda r, c: r.expovariate(mu), seed=1)
        got = mean_waits(trace, services, fixed(1))[sim.INTERACTIVE]
        rho = lam / mu
        want = rho / (mu - lam)  # Wq of M/M/1 = 1.5
        self.assertAlmostEqual(got, want, delta=0.06 * want)

    def test_md1_mean_wait(self):
        lam, s = 0.7, 1.0
        trace, services = poisson_trace({sim.INTERACTIVE: lam}, self.N, lambda r, c: s, seed=2)
        got = mean_waits(trace, services, fixed(1))[sim.INTERACTIVE]
        rho = lam * s
        want = rho * s / (2 * (1 - rho))  # Pollaczek-Khinchine, deterministic service: 1.1667
        self.assertAlmostEqual(got, want, delta=0.05 * want)

    def test_two_priority_classes_non_preemptive(self):
        # Cobham (1954): W_1 = W0 / (1 - rho_1), W_2 = W0 / ((1 - rho_1)(1 - rho_1 - rho_2)),
        # W0 = sum(lambda_i E[S_i^2]) / 2. Exponential service of mean 1: E[S^2] = 2.
        l1, l2 = 0.3, 0.4
        trace, services = poisson_trace({sim.INTERACTIVE: l1, sim.BATCH: l2}, self.N,
                                        lambda r, c: r.expovariate(1.0), seed=3)
        # The ready queue unbounded, so every waiting job is in the priority queue: strict priority.
        # (With a small dispatch_ready_jobs a batch job already in it can go before an interactive
        # job still in its lane, as in the fleet.)
        got = mean_waits(trace, services, fixed(1, ready_jobs=10**9))
        w0 = (l1 * 2 + l2 * 2) / 2
        want1 = w0 / (1 - l1)
        want2 = w0 / ((1 - l1) * (1 - l1 - l2))
        self.assertAlmostEqual(got[sim.INTERACTIVE], want1, delta=0.06 * want1)
        self.assertAlmostEqual(got[sim.BATCH], want2, delta=0.06 * want2)

    def test_mmc_erlang_c(self):
        c, lam, mu = 3, 2.4, 1.0
        trace, services = poisson_trace({sim.INTERACTIVE: lam}, self.N, lambda r, _: r.expovariate(mu), seed=4)
        got = mean_waits(trace, services, fixed(c))[sim.INTERACTIVE]
        a = lam / mu
        rho = a / c
        top = a**c / math.factorial(c) / (1 - rho)
        p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
        want = p_wait / (c * mu - lam)  # Erlang C: 1.079
        self.assertAlmostEqual(got, want, delta=0.07 * want)


class ReplicaRule(unittest.TestCase):
    def test_queue_length_rule(self):
        self.assertEqual(sim.keda_desired_replicas(0, 4, 1, 10), 1)
        self.assertEqual(sim.keda_desired_replicas(1, 4, 0, 10), 1)
        self.assertEqual(sim.keda_desired_replicas(8, 4, 0, 10), 2)
        self.assertEqual(sim.keda_desired_replicas(9, 4, 0, 10), 3)
        self.assertEqual(sim.keda_desired_replicas(1000, 4, 0, 10), 10)

    def test_hpa_tolerance(self):
        # 10 messages, value 2, 5 replicas: ratio 1.0 -> no change.
        self.assertEqual(sim.hpa_metric_replicas(10, 2, 5), 5)
        # 10.8 / (2 * 5) = 1.08, within 10% -> no change; 11.2 -> 1.12 -> ceil(5.6) = 6.
        self.assertEqual(sim.hpa_metric_replicas(10.8, 2, 5), 5)
        self.assertEqual(sim.hpa_metric_replicas(11.2, 2, 5), 6)
        self.assertEqual(sim.hpa_metric_replicas(0, 2, 5), 0)

    def test_stabilization(self):
        hist = [(0, 8), (15, 2), (30, 3)]
        # Scale-down window 300: the highest recommendation in it (8) holds.
        self.assertEqual(sim.stabilize(hist, 30, 8, up_window=0, down_window=300), 8)
        # Window 10: only the newest (3) counts.
        self.assertEqual(sim.stabilize(hist, 30, 8, up_window=0, down_window=10), 3)
        # Scale-up is immediate without a scale-up window.
        self.assertEqual(sim.stabilize([(0, 1), (15, 6)], 15, 1, up_window=0, down_window=300), 6)

    def test_scale_up_limit(self):
        self.assertEqual(sim.scale_up_limit(1), 5)  # +4 pods beats +100%
        self.assertEqual(sim.scale_up_limit(10), 20)  # +100% beats +4 pods

    def test_scale_to_zero_after_cooldown(self):
        """200 batch jobs at t=0 on a pool at zero: KEDA activates it at its first poll, the HPA
        scales to ceil(200 / 50) = 4, and the pool returns to zero no sooner than the cooldown
        after the lanes empty."""
        trace = sim.Trace()
        trace.add_request(0.5, sim.BATCH, 0, 200, random.Random(0))
        kind = sim.WorkerKind(name="t", service_s=2.0, ready_s=5.0, pod_start_s=0.0, service_source="",
                              ready_source="", max_interactive=1, max_batch=10)
        cand = sim.Candidate(
            name="t",
            interactive=sim.PoolSettings(min_replicas=0, max_replicas=0, value=1,
                                         trigger=sim.TRIGGER_READY_AND_INTERACTIVE),
            batch=sim.PoolSettings(min_replicas=0, max_replicas=10, value=50, trigger=sim.TRIGGER_BATCH_LANES,
                                   polling_s=30, cooldown_s=300, down_window_s=300),
            dispatch_ready_jobs=1,
        )
        fleet = sim.Fleet(trace, kind, cand, horizon=3000.0, fixed_service=[2.0] * 200)
        fleet.run()
        pool = fleet.pools[sim.BATCH]
        self.assertEqual(pool.max_seen, 4)
        first = min(w.created for w in pool.all)
        self.assertAlmostEqual(first, 2.0)  # the batch pool's first KEDA poll (at 2, 32, ...)
        self.assertTrue(all(f > 0 for f in fleet.finish))
        # Zero again at the first poll at least cooldownPeriod after the last poll that saw work.
        last_gone = max(w.gone_at for w in pool.all)
        self.assertGreaterEqual(last_gone, pool.last_active + 300)
        self.assertLess(last_gone, pool.last_active + 300 + 30)
        self.assertEqual(len(pool.live), 0)
        self.assertEqual(fleet.pools[sim.INTERACTIVE].all, [])


class Trace(unittest.TestCase):
    def test_deterministic_for_a_seed(self):
        a, b = sim.make_trace(7), sim.make_trace(7)
        self.assertEqual(a.arrival[:500], b.arrival[:500])
        self.assertEqual(len(a), len(b))
        self.assertNotEqual(sim.make_trace(8).arrival[:50], a.arrival[:50])

    def test_inputs_match_the_measurement_files(self):
        """The service and start-up times quoted in KINDS still match the files they cite."""
        import json

        root = Path(__file__).resolve().parents[2]
        gpu = json.loads((root / "deploy/bench/gpu/gpu.json").read_text())
        row = gpu["runs"][2]["rows"]["worker fp16-fused"]
        self.assertAlmostEqual(sim.KINDS["gpu-h100"].service_s * 1000, row["pipeline_ms"], delta=1.0)
        walls = [r["command_wall"] - row["pipeline_ms"] for r in row["runs"]]
        self.assertAlmostEqual(sim.KINDS["gpu-h100"].ready_s * 1000, sum(walls) / len(walls), delta=50)
        startup = json.loads((root / "deploy/bench/startup/startup.json").read_text())
        self.assertAlmostEqual(sim.KINDS["cpu-table6"].ready_s * 1000, startup["results"]["cpu"]["ready"], delta=50)
        text = (root / "deploy/bench/throughput/THROUGHPUT.md").read_text()
        self.assertIn("| cpu | 1 | 4 | [1, 1, 1, 1] |", text)
        self.assertIn("| 62.5 |", text)
        self.assertAlmostEqual(sim.KINDS["cpu-table6"].service_s, 3600 / 62.5, delta=0.05)
        timings = (root / "training/RESULTS.md").read_text()
        for stage in ("text_encoder 2 ms", "unet_total 116 ms", "vae 13 ms", "upscale 92 ms", "mark 3 ms",
                      "encode 8 ms"):
            self.assertIn(stage, timings)


if __name__ == "__main__":
    unittest.main()
