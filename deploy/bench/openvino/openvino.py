"""Run with: make bench-openvino   (or .venv-openvino/bin/python deploy/bench/openvino/openvino.py [--calls 5])

Would another CPU execution provider get closer to the floors than ONNX Runtime's own (MLAS)
kernels? This times the Table 6 U-Net call (batch 2, 32×32 latent) and a whole 256 → 1024 ESRGAN image
with OpenVINO's execution provider (oneDNN kernels, fp32 inference precision) and with the CPU
provider of the same `onnxruntime-openvino` build, 2 threads each, and checks that both give the
same numbers. It also times what OpenVINO's `cache_dir` (compiled graphs kept on disk) does to
session creation and the first call, cold and warm. It runs in its own virtual environment, because that wheel replaces the
`onnxruntime` one. The worker loads the same build's library with `execution_provider = "openvino"`
(`bash deploy/setup.sh --openvino`); deploy/bench/session/SESSION.md compares both.

Writes deploy/bench/openvino/openvino.json. Holds /tmp/rapid-bench.lock while timing.
"""

import argparse
import fcntl
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py
from machine import cpu_model, isa  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / ".cache/models/table6"
OPENVINO = {"device_type": "CPU", "precision": "FP32", "num_of_threads": "2"}
PROVIDERS = {"openvino": [("OpenVINOExecutionProvider", OPENVINO)], "cpu": ["CPUExecutionProvider"]}


def feeds():
    rng = np.random.default_rng(0)
    return {
        "unet": {
            "sample": rng.standard_normal((2, 4, 32, 32), dtype=np.float32),
            "timestep": np.full((2,), 981, dtype=np.int64),
            "encoder_hidden_states": rng.standard_normal((2, 32, 768), dtype=np.float32),
        },
        "upscaler": {"input": rng.random((1, 3, 256, 256), dtype=np.float32)},
    }


def timed(part, provider, feed, calls, providers=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    started = time.perf_counter()
    session = ort.InferenceSession(str(MODEL / part / "model.onnx"), options, providers=providers or PROVIDERS[provider])
    load_s = time.perf_counter() - started
    if provider.startswith("openvino") and session.get_providers()[0] != "OpenVINOExecutionProvider":
        sys.exit(f"openvino.py: OpenVINO did not take the {part}; providers: {session.get_providers()}")
    started = time.perf_counter()
    (output, *_) = session.run(None, feed)
    first_s = time.perf_counter() - started
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    ms = statistics.median(times) * 1e3
    print(f"{part:9} {provider:20} median {ms:8.0f} ms  min {min(times) * 1e3:8.0f} ms  load {load_s:5.1f} s  "
          f"first call {first_s:5.1f} s", flush=True)
    return {"ms": round(ms, 1), "min_ms": round(min(times) * 1e3, 1), "load_s": round(load_s, 1),
            "first_call_s": round(first_s, 2)}, output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        sys.exit("openvino.py: this onnxruntime has no OpenVINO provider; run it with .venv-openvino (make bench-openvino)")
    if not (MODEL / "unet/model.onnx").exists():
        sys.exit("openvino.py: no Table 6 model; run `make fixtures-env` and "
                 "`.venv-fixtures/bin/python deploy/export/export_table6.py`")
    lock = open("/tmp/rapid-bench.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    results = {}
    for part, feed in feeds().items():
        results[part] = {}
        outputs = {}
        for provider in PROVIDERS:
            results[part][provider], outputs[provider] = timed(part, provider, feed, args.calls)
        diff = float(np.abs(outputs["openvino"] - outputs["cpu"]).max())
        results[part]["max_abs_diff"] = diff
        print(f"{part:9} max |openvino - cpu| = {diff:.1e}", flush=True)
        with tempfile.TemporaryDirectory() as cache:
            cached = [("OpenVINOExecutionProvider", {**OPENVINO, "cache_dir": cache})]
            for state in ["cold", "warm"]:
                name = f"openvino, cache {state}"
                results[part][name], _ = timed(part, name, feed, 1, cached)
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "isa": isa(), "onnxruntime": ort.__version__, "calls": args.calls,
              "model": "Table 6, random weights", "threads": 2, "results": results}
    out = ROOT / "deploy/bench/openvino/openvino.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
