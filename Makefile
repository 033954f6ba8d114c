# Run with: make demo | make test | make lint | make generate | make demo-grid
# Every target installs what it needs first (deploy/setup.sh and deploy/test-services.sh are
# idempotent and quick once done).

CARGO ?= cargo
DEMO_MODEL ?= models/rapid-mini
GENERATE_OUT ?= out/generate.png

.PHONY: setup services demo demo-grid generate test lint fixtures fixtures-env bench bench-winograd bench-winograd-unet bench-throughput bench-samplers bench-attention bench-session bench-openvino bench-providers bench-startup bench-precision gpu-payload

setup:
	bash deploy/setup.sh

services:
	bash deploy/test-services.sh

## The main job on the embedded default: the whole fleet in one process (no servers) takes the
## sample fashion design request, and prints the paths of the marked images it left in out/standalone/.
demo: setup
	$(CARGO) build --release --quiet -p rapid-scheduler
	./target/release/rapid-scheduler standalone --config deploy/standalone.toml --listen 127.0.0.1:0 \
		--submit examples/fashion-design.json

## The README's picture: the demo's fashion request and two menus (English, Chinese) through the
## embedded default, laid out with their prompts in deploy/demo/grid.png.
demo-grid: setup
	$(CARGO) build --release --quiet -p rapid-scheduler
	.venv/bin/python deploy/demo/grid.py

## One image straight from the engine, with per-stage timings.
generate: setup
	@mkdir -p $(dir $(GENERATE_OUT))
	$(CARGO) run --release --quiet -p rapid-worker -- generate \
		--model $(DEMO_MODEL) --prompt "a red silk evening dress with gold embroidery, studio photo" \
		--seed 7 --steps 20 --width 64 --height 64 --out $(GENERATE_OUT) --timings out/generate-timings.json

## Every test, plus formatting and lints (what CI runs). The fleet tests need RabbitMQ, Redis and
## s3s-fs, which `services` starts or installs.
test: setup services lint
	bash deploy/setup.sh --openvino   # the OpenVINO build of ONNX Runtime, for worker/engine/tests/openvino.rs
	python3 -m unittest discover -s training/tests   # the data set's vocabulary against the knowledge graph (stdlib only)
	$(CARGO) test --workspace --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

## Python with torch, diffusers, onnx and pykeen for fixtures, exports and benchmarks (once; large).
fixtures-env:
	test -x .venv-fixtures/bin/python || python3 -m venv .venv-fixtures
	.venv-fixtures/bin/pip install --quiet --disable-pip-version-check -r deploy/requirements-fixtures.txt
	# invisible-watermark's declared dependencies would pull its RivaGAN extras; its DWT code needs none.
	.venv-fixtures/bin/pip install --quiet --disable-pip-version-check --no-deps invisible-watermark==0.2.0

## The speed benchmark: the worker against diffusers' ONNX pipeline and PyTorch eager on the paper's
## Table 6 model (random weights), per stage, with floors → deploy/bench/RESULTS.md. About 15 minutes.
bench: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	.venv-fixtures/bin/python deploy/bench/bench.py $(BENCH_ARGS)

## The same benchmark with the worker on the Winograd rewrite of the Table 6 U-Net
## (deploy/export/winograd.py: 3x3 convolutions as ai.rapid::WinogradConv); the peers keep the plain export.
## WINOGRAD_MIN_SIZE=8 also rewrites the 8x8 level (faster, about 3 GB more memory).
WINOGRAD_MIN_SIZE ?= 16
WINOGRAD_MODEL = .cache/models/table6-winograd$(if $(filter 16,$(WINOGRAD_MIN_SIZE)),,$(WINOGRAD_MIN_SIZE))
bench-winograd: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	test -e $(WINOGRAD_MODEL)/unet/model.onnx || .venv-fixtures/bin/python deploy/export/winograd.py \
		--model .cache/models/table6 --out $(WINOGRAD_MODEL) --min-size $(WINOGRAD_MIN_SIZE)
	.venv-fixtures/bin/python deploy/bench/bench.py --worker-model $(WINOGRAD_MODEL) $(BENCH_ARGS)

## Images per hour of one worker under a backlog, cross-request batching off and on
## → deploy/bench/THROUGHPUT.md. About 10 minutes.
bench-throughput: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	cargo build --release -p rapid-scheduler
	python3 deploy/bench/throughput.py $(THROUGHPUT_ARGS)

## One U-Net call with plain, ONNX Runtime-fused and ai.rapid::FlashAttention attention on the
## Table 6 model → deploy/bench/attention.json (ATTENTION.md is its hand-written reading).
bench-attention: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	bash deploy/bench/attention.sh

## One U-Net call as exported and with ai.rapid::WinogradConv convolutions (deploy/export/winograd.py)
## on the Table 6 model → deploy/bench/winograd.json (NOTES.md reads it).
bench-winograd-unet: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	bash deploy/bench/winograd.sh

## ONNX Runtime session options, thread counts and arena settings, one at a time, on the Table 6
## U-Net, VAE and an ESRGAN tile → deploy/bench/session.json (SESSION.md reads it). About 10 minutes.
bench-session: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	.venv-fixtures/bin/python deploy/bench/session_sweep.py

## The U-Net and ESRGAN on OpenVINO's execution provider against the CPU provider of the same build,
## in a virtual environment of its own (the onnxruntime-openvino wheel replaces onnxruntime)
## → deploy/bench/openvino.json. About 3 minutes after a 450 MB install.
bench-openvino: fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	test -x .venv-openvino/bin/python || python3 -m venv .venv-openvino
	.venv-openvino/bin/pip install --quiet --disable-pip-version-check onnxruntime-openvino==1.24.1 numpy==2.4.6
	.venv-openvino/bin/python deploy/bench/openvino.py

## One worker image per execution-provider configuration (CPU, OpenVINO, CPU with ESRGAN on OpenVINO;
## tiled and whole; U-Net and ESRGAN on OpenVINO), taking turns → deploy/bench/providers.json.
## About 15 minutes.
bench-providers: setup fixtures-env
	bash deploy/setup.sh --openvino
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	python3 deploy/bench/providers.py

## Worker start-up: session creation and warm-up, with and without the session cache → deploy/bench/startup.json
bench-startup: setup fixtures-env
	bash deploy/setup.sh --openvino
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	python3 deploy/bench/startup.py

## The worker in fp32 against bf16 (worker.precision) on OpenVINO, Table 6 model: time per stage and how
## far the image moves → deploy/bench/precision.json (PRECISION.md reads it). Needs a CPU with
## avx512_bf16 or amx_bf16. About 6 minutes on a 2-core Xeon with AMX.
bench-precision: setup fixtures-env
	bash deploy/setup.sh --openvino
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	.venv-fixtures/bin/python deploy/bench/precision.py

## Issue 4's GPU check, in two halves. Here: what a GPU machine without Rust, diffusers or network
## needs, into .gpu/ (under 64 MiB). There: `bash deploy/bench/gpu.sh` (CUDA kernel tests, the worker
## on the CUDA provider in fp32 and fp16, PyTorch eager on the same GPU); then, here,
## `python3 deploy/bench/gpu_report.py RESULTS_DIR` → deploy/bench/GPU.md.
gpu-payload: setup fixtures-env
	test -e .cache/models/table6/unet/model.onnx || .venv-fixtures/bin/python deploy/export/export_table6.py
	bash deploy/bench/gpu_payload.sh

## Fewer-step samplers against 50-step PNDM on the same seeds (tiny models) → deploy/bench/SAMPLERS.md.
## About 10 minutes.
bench-samplers: setup
	cargo build --release -p rapid-worker
	.venv/bin/python deploy/bench/samplers.py

## Regenerate the tiny models and diffusers references (needs torch + diffusers; see tests/fixtures/README.md),
## then their knowledge-enabled copies (TransE on knowledge/graphs/domain.tsv).
fixtures: fixtures-env
	.venv-fixtures/bin/python tests/fixtures/make_models.py
	.venv-fixtures/bin/python tests/fixtures/samplers/make_sampler_fixtures.py
	bash tests/fixtures/make_knowledge_models.sh
	.venv-fixtures/bin/python deploy/export/fuse_attention.py --model tests/fixtures/models/tiny-sd-clip \
		--out tests/fixtures/models/tiny-sd-clip-flash --fused rapid
	.venv-fixtures/bin/python deploy/export/winograd.py --model tests/fixtures/models/tiny-sd-clip \
		--out tests/fixtures/models/tiny-sd-clip-winograd --min-size 1
