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

demo: install
	$(BIN)/headrecon assets procedural-flame --out $(DEMO_OUT)/flame --preview $(DEMO_OUT)/procedural_head.png
	@echo "demo: wrote $(DEMO_OUT)/flame (FLAME-format files) and $(DEMO_OUT)/procedural_head.png"

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
