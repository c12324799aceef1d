# The two set-up commands of the README:  `make serve`  and  `make test`.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls GBs of CUDA wheels
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/memsvc serve

lint: install
	$(BIN)/ruff check memsvc storage api evals tests benchmarks

typecheck: install
	$(BIN)/mypy memsvc

test: install lint typecheck
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/write_recall.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
