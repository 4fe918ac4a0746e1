# Entry points for a fresh machine: `make demo` (the main job), `make test` (the whole suite, what CI
# runs) and `make test-fast` (every test that starts no process: the edit loop).
# Each creates .venv, installs torch and then the project with its dev extra. A GPU machine keeps
# PyPI's CUDA build; for a CPU-only build from PyTorch's own index, run e.g.
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (machines that carry a local CPU wheel of torch $(TORCH_VERSION) pick it up without this).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

$(BIN)/megabyte: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# DeepSpeed compiles its CPU communication op (a shared-memory all-reduce for the ranks of one
# machine) on first use, about a minute: built here once per virtualenv, not inside a test.
$(VENV)/.cpu-comm-op: $(BIN)/megabyte
	DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.accelerator import get_accelerator; \
	get_accelerator().create_op_builder('ShareMemCommBuilder').load()"
	touch $@

.PHONY: setup demo test test-fast
setup: $(BIN)/megabyte

demo: setup
	$(BIN)/megabyte demo

test: setup $(VENV)/.cpu-comm-op
	DS_ACCELERATOR=cpu $(BIN)/python -m pytest -q tests

test-fast: setup
	DS_ACCELERATOR=cpu $(BIN)/python -m pytest -q -m "not slow" tests
