# Run with: make demo | make test | make lint
# Every target installs what it needs first (deploy/setup.sh is idempotent and quick when done).

CARGO ?= cargo
DEMO_MODEL ?= tests/fixtures/models/tiny-sd-clip
DEMO_OUT ?= out/demo.png

.PHONY: setup demo test lint fixtures

setup:
	bash deploy/setup.sh

## The main job on the bundled small model: one marked image in out/.
demo: setup
	@mkdir -p $(dir $(DEMO_OUT))
	$(CARGO) run --release --quiet -p rapid-worker -- generate \
		--model $(DEMO_MODEL) --prompt "a red silk evening dress with gold embroidery, studio photo" \
		--seed 7 --steps 20 --width 64 --height 64 --out $(DEMO_OUT) --timings out/demo-timings.json
	@echo "image written to $(DEMO_OUT) (per-stage timings in out/demo-timings.json)"

## Every test, plus formatting and lints (what CI runs).
test: setup lint
	$(CARGO) test --workspace --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

## Regenerate the tiny models and diffusers references (needs torch + diffusers; see tests/fixtures/README.md).
fixtures:
	.venv-fixtures/bin/python tests/fixtures/make_models.py
	.venv-fixtures/bin/python tests/fixtures/samplers/make_sampler_fixtures.py
