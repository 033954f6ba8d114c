# The benchmark targets, included by the top-level Makefile: run them from the repository root
# (`make bench`, `make bench-throughput`, ...). Each writes its results into its own folder under
# deploy/bench/; deploy/bench/README.md says what each measures and holds the headline numbers.
# `setup` and `fixtures-env` are the top-level Makefile's.

.PHONY: bench-load bench bench-winograd bench-winograd-unet bench-throughput bench-samplers bench-attention bench-session \
	bench-openvino bench-providers bench-startup bench-precision bench-overlap gpu-payload

## The speed benchmark: the worker against diffusers' ONNX pipeline and PyTorch eager on the paper's
## Table 6 model (random weights), per stage, with floors → deploy/bench/speed/RESULTS.md. About 15 minutes.
## The worker runs as the fleet's default one (execution_provider = "auto"), with OpenVINO installed
## and the model prepared (unet/winograd/), so that auto has every CPU candidate to measure.
bench: setup fixtures-env
	bash deploy/setup.sh --openvino
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	test -e .cache/models/table6/unet/winograd/model.onnx || .venv-fixtures/bin/python deploy/export/prepare_model.py --model .cache/models/table6
	.venv-fixtures/bin/python deploy/bench/speed/bench.py $(BENCH_ARGS)

## The same benchmark with the worker on the Winograd rewrite of the Table 6 U-Net
## (deploy/export/winograd.py: 3x3 convolutions as ai.rapid::WinogradConv); the peers keep the plain export.
## WINOGRAD_MIN_SIZE=8 also rewrites the 8x8 level (faster, about 3 GB more memory).
WINOGRAD_MIN_SIZE ?= 16
WINOGRAD_MODEL = .cache/models/table6-winograd$(if $(filter 16,$(WINOGRAD_MIN_SIZE)),,$(WINOGRAD_MIN_SIZE))
bench-winograd: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	test -e $(WINOGRAD_MODEL)/unet/model.onnx || .venv-fixtures/bin/python deploy/export/winograd.py \
		--model .cache/models/table6 --out $(WINOGRAD_MODEL) --min-size $(WINOGRAD_MIN_SIZE)
	.venv-fixtures/bin/python deploy/bench/speed/bench.py --worker-model $(WINOGRAD_MODEL) $(BENCH_ARGS)

## The fleet's own overhead on loopback: jobs enqueued/s, submit latency, dispatches/s (no worker), then
## queue-to-start latency and overhead per job with one worker → deploy/bench/load/LOAD.md. About 3 minutes.
bench-load: setup services
	cargo build --release -p rapid-scheduler -p rapid-worker
	python3 deploy/bench/load/load.py $(LOAD_ARGS)

## Images per hour of one worker under a backlog, cross-request batching off and on
## → deploy/bench/throughput/THROUGHPUT.md. About 10 minutes.
bench-throughput: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	cargo build --release -p rapid-scheduler
	python3 deploy/bench/throughput/throughput.py $(THROUGHPUT_ARGS)

## Images per second with each job's marking, encoding and upload after its generation and beside
## the next one's (worker.overlap_finishing 0 and 1), on the bundled model at 1024 px
## → deploy/bench/overlap/OVERLAP.md. About 5 minutes.
bench-overlap: setup
	cargo build --release -p rapid-scheduler
	python3 deploy/bench/overlap/overlap.py $(OVERLAP_ARGS)

## One U-Net call with plain, ONNX Runtime-fused and ai.rapid::FlashAttention attention on the
## Table 6 model → deploy/bench/attention/attention.json (ATTENTION.md is its hand-written reading).
bench-attention: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	bash deploy/bench/attention/attention.sh

## One U-Net call as exported and with ai.rapid::WinogradConv convolutions (deploy/export/winograd.py)
## on the Table 6 model → deploy/bench/winograd/winograd.json (speed/NOTES.md reads it).
bench-winograd-unet: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	bash deploy/bench/winograd/winograd.sh

## ONNX Runtime session options, thread counts and arena settings, one at a time, on the Table 6
## U-Net, VAE and an ESRGAN tile → deploy/bench/session/session.json (SESSION.md reads it). About 10 minutes.
bench-session: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	.venv-fixtures/bin/python deploy/bench/session/session_sweep.py

## The U-Net and ESRGAN on OpenVINO's execution provider against the CPU provider of the same build,
## in a virtual environment of its own (the onnxruntime-openvino wheel replaces onnxruntime)
## → deploy/bench/openvino/openvino.json. About 3 minutes after a 450 MB install.
bench-openvino: fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	test -x .venv-openvino/bin/python || python3 -m venv .venv-openvino
	.venv-openvino/bin/pip install --quiet --disable-pip-version-check onnxruntime-openvino==1.24.1 numpy==2.4.6
	.venv-openvino/bin/python deploy/bench/openvino/openvino.py

## One worker image per execution-provider configuration (CPU, OpenVINO, CPU with ESRGAN on OpenVINO;
## tiled and whole; U-Net and ESRGAN on OpenVINO), taking turns → deploy/bench/providers/providers.json.
## About 15 minutes.
bench-providers: setup fixtures-env
	bash deploy/setup.sh --openvino
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	python3 deploy/bench/providers/providers.py

## Worker start-up: session creation and warm-up, with and without the session cache → deploy/bench/startup/startup.json
bench-startup: setup fixtures-env
	bash deploy/setup.sh --openvino
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	python3 deploy/bench/startup/startup.py

## The worker in fp32 against bf16 (worker.precision) on OpenVINO, Table 6 model: time per stage and how
## far the image moves → deploy/bench/precision/precision.json (PRECISION.md reads it). Needs a CPU with
## avx512_bf16 or amx_bf16. About 6 minutes on a 2-core Xeon with AMX.
bench-precision: setup fixtures-env
	bash deploy/setup.sh --openvino
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	.venv-fixtures/bin/python deploy/bench/precision/precision.py

## Issue 4's GPU check, in two halves. Here: what a GPU machine without Rust, diffusers or network
## needs, into .gpu/ (under 64 MiB). There: `bash deploy/bench/gpu/gpu.sh` (CUDA kernel tests, the worker
## on the CUDA provider in fp32 and fp16, PyTorch eager on the same GPU); then, here,
## `python3 deploy/bench/gpu/gpu_report.py RESULTS_DIR` → deploy/bench/gpu/GPU.md.
gpu-payload: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	bash deploy/bench/gpu/gpu_payload.sh

## Fewer-step samplers against 50-step PNDM on the same seeds (tiny models) → deploy/bench/samplers/SAMPLERS.md.
## About 10 minutes.
bench-samplers: setup
	cargo build --release -p rapid-worker
	.venv/bin/python deploy/bench/samplers/samplers.py
