# Two entry points: `make demo` and `make test`. Each builds its own virtual environment,
# installing the CPU build of torch first so nothing pulls a multi-GB CUDA build.
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e ".[dev,onnx,openvino,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pkdgan demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: $(STAMP) lint
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV)
