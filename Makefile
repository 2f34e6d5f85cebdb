# Entry points: `make demo`, `make test` (everything; what CI runs) and `make test-fast` (unit
# and parity tests without end-to-end training, the lane to run after each edit). Each builds its own virtual environment,
# installing the CPU build of torch first so nothing pulls a multi-GB CUDA build.
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e ".[dev,onnx,openvino,ray,tracking]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pkdgan demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts

test: $(STAMP) lint
	$(VENV)/bin/pytest -q

test-fast: $(STAMP) lint
	$(VENV)/bin/pytest -q -m "not slow"

clean:
	rm -rf $(VENV)
