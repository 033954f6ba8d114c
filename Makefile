# Run with: make demo | make test | make lint | make generate | make demo-grid | make fuzz | make fair-share |
#           make faults
# Benchmarks (make bench, make bench-throughput, ...): deploy/bench/bench.mk, included at the end;
# deploy/bench/README.md says what each measures.
# Every target installs what it needs first (deploy/setup.sh and deploy/test-services.sh are
# idempotent and quick once done).

CARGO ?= cargo
DEMO_MODEL ?= models/rapid-mini
GENERATE_OUT ?= out/generate.png

.PHONY: setup services demo demo-grid generate test lint fixtures fixtures-env fuzz fair-share faults prepare-model

setup:
	bash deploy/setup.sh

## Adds the U-Net rewrites a worker on execution_provider = "auto" measures (unet/winograd/) to a
## model directory: make prepare-model MODEL=models/rapid-mini
prepare-model: fixtures-env
	@test -n "$(MODEL)" || { echo "usage: make prepare-model MODEL=<model directory>" >&2; exit 2; }
	.venv-fixtures/bin/python deploy/export/prepare_model.py --model $(MODEL)

services:
	bash deploy/test-services.sh

## The main job on the embedded default: the whole fleet in one process (no servers) takes the
## sample fashion design request, and prints the paths of the marked images it left in out/standalone/.
demo: setup
	$(CARGO) build --release --quiet -p rapid-scheduler
	./target/release/rapid-scheduler standalone --config deploy/standalone.toml --listen 127.0.0.1:0 \
		--submit examples/fashion-design.json

## Schemathesis against the running scheduler, from its own /openapi.json: deploy/fuzz/RESULTS.md.
fuzz: services
	bash deploy/fuzz/run.sh

## Issue 19's faults, each injected RAPID_FAULTS times (default 100) while a backlog is in flight,
## counted: deploy/bench/faults/FAULTS.md. Tens of minutes; not part of `make test`.
faults: setup services
	# Fault injection compiled in for the hung-worker fault (inert unless FAILPOINTS is set);
	# `make test` builds the plain worker again.
	$(CARGO) build --release -p rapid-worker --features failpoints
	RAPID_FAULTS_RESULTS=$(CURDIR)/deploy/bench/faults $(CARGO) test --release -p rapid-scheduler --test faults \
		-- --ignored --nocapture --test-threads 1
	python3 deploy/bench/faults/report.py

## Two tenants on one worker, with and without fair share: deploy/bench/FAIR_SHARE.md.
fair-share: setup services
	RAPID_FAIR_SHARE_RESULTS=$(CURDIR)/deploy/bench/FAIR_SHARE.md $(CARGO) test --release -p rapid-scheduler \
		--test tenancy a_small_batch_behind -- --nocapture

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
	# A bounded Schemathesis pass over the running API (about 40 requests per operation); `make fuzz` runs 400.
	FUZZ_EXAMPLES=40 FUZZ_RESULTS=$$(mktemp) bash deploy/fuzz/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings
	# The GPU build (the CUDA flash-attention kernel) compiles without a GPU or CUDA toolkit; keep it so.
	$(CARGO) clippy -p rapid-engine --features cuda --all-targets --release -- -D warnings

## Python with torch, diffusers, onnx and pykeen for fixtures, exports and benchmarks (once; large).
fixtures-env:
	test -x .venv-fixtures/bin/python || python3 -m venv .venv-fixtures
	.venv-fixtures/bin/pip install --quiet --disable-pip-version-check -r deploy/requirements-fixtures.txt
	# invisible-watermark's declared dependencies would pull its RivaGAN extras; its DWT code needs none.
	.venv-fixtures/bin/pip install --quiet --disable-pip-version-check --no-deps invisible-watermark==0.2.0

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

include deploy/bench/bench.mk
