# Two commands for a fresh machine (2 cores, no GPU): `make demo` and `make test`.
# Both install what is missing first: the graph's environment (.venv), the vLLM server environment
# and the two models ($SPECREASON_HOME, default ~/.cache/specreason-graph; servers/setup-cpu.sh).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
QUESTION ?= --dataset gsm8k --id 0

.PHONY: install servers demo test unit lint serve stop clean benchmarks

install: $(VENV)/.installed servers

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

servers:
	bash servers/setup-cpu.sh

# A real SpecReason answer from the two local vLLM servers (started, then stopped again).
demo: install
	$(BIN)/specreason ask $(QUESTION)

# Unit tests (scripted models) and integration tests (real servers, started if not running).
test: install
	$(BIN)/python -m pytest

unit: $(VENV)/.installed
	$(BIN)/python -m pytest tests/unit_tests

lint: $(VENV)/.installed
	$(BIN)/ruff check specreason_graph graphs tests
	$(BIN)/mypy specreason_graph

# BENCHMARKS.md's figures: calibrate the judge on GSM8K 1000-1011, then compare the modes on GSM8K
# 0-29 (about 1.5 h on 2 cores). Finished runs are kept: run it again to resume after a Ctrl-C.
BENCH := --dataset gsm8k --token-budget 1024 --max-step-tokens 256 --concurrency 6
benchmarks: install
	$(BIN)/specreason calibrate $(BENCH) --offset 1000 --limit 12
	$(BIN)/specreason bench $(BENCH) --limit 30 --calibration \
	  benchmarks/results/calibration-gsm8k/calibration.json \
	  --modes base small spec spec:t=cal,score=expected
	$(BIN)/specreason bench-report benchmarks/results/gsm8k --into BENCHMARKS.md

serve: install
	$(BIN)/specreason serve start

stop:
	$(BIN)/specreason serve stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
