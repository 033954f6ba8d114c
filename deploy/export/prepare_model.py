"""Run with: make prepare-model MODEL=DIR   (or .venv-fixtures/bin/python deploy/export/prepare_model.py --model DIR [--min-size 16])

Prepares a model directory for `execution_provider = "auto"`: adds the rewrites of its U-Net that
compute the same function faster on some CPUs, beside the export, for the worker to measure
(worker/engine/src/autotune.rs). Today that is one rewrite, `unet/winograd/` (the larger 3×3
convolutions as `ai.rapid::WinogradConv`, deploy/export/winograd.py). The export itself is left as
it is, so a worker that is not on `auto`, or a CPU where the rewrite is slower, runs it unchanged.

Run it once when a model is registered (a training job's last step, or by hand for a bundled
model): it takes the U-Net's load time plus one run of it. It writes into a temporary folder beside
the model and renames the result into place, so a failure leaves the model directory as it was.
Needs numpy, onnx and onnxruntime (`make fixtures-env`); the worker itself needs no Python.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", type=Path, required=True, help="model directory to prepare")
    parser.add_argument("--min-size", type=int, default=16,
                        help="smallest feature-map side the Winograd rewrite covers (winograd.py)")
    args = parser.parse_args()
    unet = args.model / "unet"
    if not (unet / "model.onnx").exists():
        sys.exit(f"{unet / 'model.onnx'} does not exist: --model must be a model directory (DESIGN.md)")
    target = unet / "winograd"
    with tempfile.TemporaryDirectory(prefix=".prepare-", dir=unet) as work:
        rewritten = Path(work) / "model"
        result = subprocess.run([sys.executable, str(HERE / "winograd.py"), "--model", str(args.model),
                                 "--out", str(rewritten), "--min-size", str(args.min_size)])
        if result.returncode != 0:
            sys.exit(f"the Winograd rewrite of {unet / 'model.onnx'} failed; {args.model} is unchanged")
        staged = Path(work) / "winograd"
        shutil.move(str(rewritten / "unet"), staged)
        # A rewrite made before is replaced whole: moved aside first, so that no moment has half
        # of each.
        old = Path(work) / "old"
        if target.exists():
            target.rename(old)
        staged.rename(target)
    print(f"{target}: prepared; a worker on execution_provider = \"auto\" measures it at its next start")


if __name__ == "__main__":
    main()
