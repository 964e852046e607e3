# Two commands for a fresh machine (2 cores, no GPU): `make demo` and `make test`.
# Both install what is missing first: the graph's environment (.venv), the vLLM server environment
# and the two models ($SPECREASON_HOME, default ~/.cache/specreason-graph; servers/setup-cpu.sh).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
QUESTION ?= --dataset gsm8k --id 0

.PHONY: install servers servers-gpu demo test unit serverenv integration system standard postgres postgres-stop \
  unit-latest-openai lint serve stop clean benchmarks benchmarks-specdecode

install: $(VENV)/.installed servers

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

servers:
	bash servers/setup-cpu.sh

# The GPU configs' server environment (CUDA vLLM 0.32.0 at $SPECREASON_HOME/vllm-gpu) and the models of
# GPU_CONFIG (servers/$(GPU_CONFIG).toml) in the Hugging Face cache; refuses where no NVIDIA GPU is present.
GPU_CONFIG ?= gpu-qwq32b-r1-1.5b
servers-gpu: $(VENV)/.installed
	bash servers/setup-gpu.sh --config $(GPU_CONFIG)

# A real SpecReason answer from the two local vLLM servers (started, then stopped again): the CPU
# default, servers/cpu.toml, whose base server speculates with the small model as its draft model.
demo: install
	$(BIN)/specreason ask $(QUESTION)

# Every tier in one process (the vLLM servers start once, each configuration once; started if not
# running, stopped at the end): what CI runs after `make lint`. README.md, "Tests", gives each tier's cost.
test: install postgres
	$(BIN)/python -m pytest

# The tiers one at a time. unit: scripted models, no process, no server (seconds; no server
# environment needed). serverenv: the plugin and vLLM's parser in the server environment.
# integration: the real vLLM servers. system: langgraph dev, PostgreSQL, the CLI and launcher as processes.
unit: $(VENV)/.installed
	$(BIN)/python -m pytest tests/unit_tests

serverenv: install
	$(BIN)/python -m pytest tests/serverenv_tests

integration: install
	$(BIN)/python -m pytest tests/integration_tests

system: install postgres
	$(BIN)/python -m pytest tests/system_tests

# LangChain's standard chat-model integration tests (langchain-tests) on ChatSpecReason against the
# real servers, about 12 minutes: kept out of `make test`; CI runs them as a step of their own.
standard: install
	$(BIN)/python -m pytest -m langchain_standard tests/integration_tests/test_chat_standard_real.py

# The PostgreSQL server of the system tests: installs Debian's postgresql if missing (root), starts a
# loopback-only throwaway cluster on 127.0.0.1:8132 unless it answers (tests/postgres.sh).
postgres:
	bash tests/postgres.sh start

postgres-stop:
	bash tests/postgres.sh stop

# The unit tests that go through the openai client, again with the newest openai release
# pyproject.toml allows (everything else pinned): a release that changes the client's errors or types
# shows here before it reaches a user. The environment is kept; each run only upgrades openai.
LATEST := .venv-latest-openai
OPENAI_TESTS := $(addprefix tests/unit_tests/test_,models.py async.py preflight.py graph.py judges.py \
  durable.py cli.py bench.py prompt_sets_bench.py)
$(LATEST)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(LATEST)
	grep -v '^openai==' constraints.txt > $(LATEST)/constraints.txt
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet -c $(LATEST)/constraints.txt -e ".[dev]"
	touch $@

unit-latest-openai: $(LATEST)/.installed
	$(LATEST)/bin/python -m pip install --quiet -c $(LATEST)/constraints.txt --upgrade "openai[aiohttp]"
	$(LATEST)/bin/python -m pytest -p no:cacheprovider $(OPENAI_TESTS)

# What CI checks before any test: ruff over every Python file, mypy over the package, graphs/ and benchmarks/,
# the import layers (pyproject.toml), and that langgraph.json loads.
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy specreason_graph graphs
	$(BIN)/mypy --explicit-package-bases benchmarks
	$(BIN)/lint-imports --no-cache --no-logo
	@out=$$(LANGGRAPH_CLI_NO_ANALYTICS=1 $(BIN)/langgraph validate 2>&1); echo "$$out"; \
	  case "$$out" in *"is valid"*) ;; *) exit 1;; esac; case "$$out" in *arning*) exit 1;; esac

# BENCHMARKS.md's headline figures (hours on 2 cores; finished runs are kept: after a Ctrl-C the
# same command resumes). 1. calibrate: every judge on every draft of GSM8K 1000-1019, steps labelled
# by rollouts, the judge chosen (benchmarks/results/calibration-judges-gsm8k/choice.json). 2. the
# held-out comparison at ONE run in flight on GSM8K 0-39 and MATH500 level 1 (30 problems), which
# calibration never saw: the paper's one-request baselines, the paper's judge and the calibrated
# one, and both models step by step through the graph (what stepping costs); the GSM8K
# report also checks the cost model (fitted on the loaded run of benchmarks/results/gsm8k) against
# the measured times. 3. the tables into BENCHMARKS.md.
BUDGET := --token-budget 1024 --max-step-tokens 256
BENCH := --dataset gsm8k $(BUDGET)
CALIBRATION := benchmarks/results/calibration-judges-gsm8k
MODES := base small spec:judge=score,t=7,score=greedy,name=paper-judge spec:name=calibrated-judge
STEP_MODES := base-steps small-steps
benchmarks: install
	$(BIN)/specreason calibrate $(BENCH) --concurrency 4 --offset 1000 --limit 20 --out $(CALIBRATION) \
	  --into BENCHMARKS.md
	$(BIN)/specreason bench $(BENCH) --concurrency 1 --limit 40 --out benchmarks/results/gsm8k-judges \
	  --calibration $(CALIBRATION)/choice.json --modes $(MODES) $(STEP_MODES)
	$(BIN)/specreason bench-report benchmarks/results/gsm8k-judges --gpu cpu-1-in-flight \
	  --cost-check benchmarks/results/gsm8k --into BENCHMARKS.md
	$(BIN)/specreason bench --dataset math500 --levels 1 $(BUDGET) --concurrency 1 --limit 30 \
	  --out benchmarks/results/math500-judges --calibration $(CALIBRATION)/choice.json --modes $(MODES) $(STEP_MODES)
	$(BIN)/specreason bench-report benchmarks/results/math500-judges --gpu cpu-1-in-flight --into BENCHMARKS.md

# The paper's SpecDecode rows (BENCHMARKS.md, hours on 2 cores; resumable like the above). The plain
# and the speculating base server do not fit in memory together, so blocks of 5 problems alternate
# (ABAB): A = the rows above on servers/cpu-plain.toml, B = SpecDecode and SpecReason + SpecDecode with
# both judges on the default servers/cpu.toml; each bench starts its servers and stops them at its end. The
# report gives the drift between the A and B segments (blocks of 10 up to GSM8K 19 drifted by up to a
# quarter between A and B; 5 halves the time between them). Then the greedy check: base-only and SpecDecode
# at temperature 0, whose answers must be the same text.
SD_MODES_A := base small spec:judge=score,t=7,score=greedy,name=paper-judge spec:name=calibrated-judge
SD_MODES_B := specdecode specreason+specdecode:judge=score,t=7,score=greedy,name=paper-judge+specdecode \
  specreason+specdecode:name=calibrated-judge+specdecode
SD_BLOCKS := 0 5 10 15 20 25 30 35
SD := --concurrency 1 --limit 5 --calibration $(CALIBRATION)/choice.json
benchmarks-specdecode: install
	for at in $(SD_BLOCKS); do \
	  $(BIN)/specreason bench $(BENCH) $(SD) --offset $$at --out benchmarks/results/gsm8k-specdecode \
	    --modes $(SD_MODES_A) && \
	  $(BIN)/specreason bench $(BENCH) $(SD) --offset $$at --out benchmarks/results/gsm8k-specdecode \
	    --modes $(SD_MODES_B) || exit 1; \
	done
	for at in 0 5 10 15 20 25; do \
	  $(BIN)/specreason bench --dataset math500 --levels 1 $(BUDGET) $(SD) --offset $$at \
	    --out benchmarks/results/math500-specdecode --modes $(SD_MODES_A) && \
	  $(BIN)/specreason bench --dataset math500 --levels 1 $(BUDGET) $(SD) --offset $$at \
	    --out benchmarks/results/math500-specdecode --modes $(SD_MODES_B) || exit 1; \
	done
	for at in 0 10; do for modes in specdecode base; do \
	  $(BIN)/specreason bench $(BENCH) --concurrency 1 --offset $$at --limit 10 --temperature 0 \
	    --out benchmarks/results/gsm8k-specdecode-greedy --modes $$modes || exit 1; \
	done; done
	$(BIN)/specreason bench-report benchmarks/results/gsm8k-specdecode --gpu cpu-1-in-flight --into BENCHMARKS.md
	$(BIN)/specreason bench-report benchmarks/results/math500-specdecode --gpu cpu-1-in-flight --into BENCHMARKS.md
	$(BIN)/specreason bench-report benchmarks/results/gsm8k-specdecode-greedy --gpu cpu-1-in-flight --into BENCHMARKS.md

serve: install
	$(BIN)/specreason serve start

stop:
	$(BIN)/specreason serve stop

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .mypy_cache .ruff_cache
