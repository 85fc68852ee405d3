# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing
# and installs the package with the CPU constraints (torch==2.13.0: the local CPU wheel, not a
# multi-GB CUDA build). GPU users: `pip install .` instead.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo-out

.PHONY: demo test man bench clean-demo

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "icechart needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints-cpu.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	@bash scripts/demo.sh $(DEMO)

test: $(STAMP)
	$(BIN)/python -m ruff check icechart tests benchmarks scripts
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

man: $(STAMP)
	$(BIN)/python scripts/gen_man.py man

bench: $(STAMP)
	$(BIN)/python benchmarks/predict_scene.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/score_scale.py

clean-demo:
	rm -rf $(DEMO)
