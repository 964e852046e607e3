# Two commands for a fresh machine (2 cores, no GPU): `make demo` and `make test`.
# Both install what is missing first: the graph's environment (.venv), the vLLM server environment
# and the two models ($SPECREASON_HOME, default ~/.cache/specreason-graph; servers/setup-cpu.sh).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
QUESTION ?= --dataset gsm8k --id 0

.PHONY: install servers demo test unit lint serve stop clean

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

serve: install
	$(BIN)/specreason serve start

stop:
	$(BIN)/specreason serve stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
