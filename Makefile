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
	$(BIN)/lint-imports --no-cache

# BENCHMARKS.md's figures (about 2 h on 2 cores): calibrate the judge on GSM8K 1000-1011, compare
# the modes on GSM8K 0-29, sweep the threshold on GSM8K 0-9, then write the tables and plots into
# BENCHMARKS.md. Finished runs are kept: after a Ctrl-C the same command resumes.
BENCH := --dataset gsm8k --token-budget 1024 --max-step-tokens 256
benchmarks: install
	$(BIN)/specreason calibrate $(BENCH) --concurrency 6 --offset 1000 --limit 12
	$(BIN)/specreason bench $(BENCH) --concurrency 8 --limit 30 \
	  --modes base small spec spec:t=7,score=expected
	$(BIN)/specreason bench $(BENCH) --concurrency 8 --limit 10 --out benchmarks/results/gsm8k-sweep \
	  --modes base spec:t=3,score=expected spec:t=5,score=expected spec:t=7,score=expected \
	  spec:t=9,score=expected
	$(BIN)/specreason bench-report benchmarks/results/gsm8k --into BENCHMARKS.md
	$(BIN)/specreason bench-report benchmarks/results/gsm8k-sweep --into BENCHMARKS.md

serve: install
	$(BIN)/specreason serve start

stop:
	$(BIN)/specreason serve stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
