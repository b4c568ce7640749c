# headrecon front door. `make demo` and `make test` each create .venv when missing, install into it, and run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The torch pair that works on our CPU machines (a CUDA build that also runs on CPU); see README.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out
export HF_HUB_OFFLINE := 1
export ORT_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-fast lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The synthetic SHeaP demo: procedural FLAME (+ preview), synthetic clips, training on CPU, report + samples.
demo: install
	$(BIN)/headrecon demo --out $(DEMO_OUT) --trainer.default_root_dir $(DEMO_OUT)
	@echo "demo: see $(DEMO_OUT)/report.md, $(DEMO_OUT)/samples.png, $(DEMO_OUT)/procedural_head.png, TensorBoard logs in $(DEMO_OUT)/logs"

test: install lint
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check headrecon tests
	$(BIN)/ruff format --check headrecon tests

format: install
	$(BIN)/ruff format headrecon tests
	$(BIN)/ruff check --fix headrecon tests

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
