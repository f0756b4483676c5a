# One entry point for people, the README and CI: `make help` lists the targets.
# Every target runs the venv's own programs (.venv/bin/...): no need to activate it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# make run: which entry point, and extra `mlflow run` arguments, e.g.
#   make run ARGS="-P source=data -P max_evals=20"
#   make run ENTRY=predict ARGS="-P months=2021-04..2021-06"
ENTRY  ?= main
ARGS   ?=
TEST_JOBS ?= 2
# make ui: the tracking store to browse, where the UI listens, more `mlflow ui` options
STORE   ?= sqlite:///mlflow.db
UI_PORT ?= 5000
UI_ARGS ?=
# make data: which months to download, from where, into which folder
TAXI   ?= green
MONTHS ?= 2021-01..2021-03
SOURCE ?= https://d37ci6vzurychx.cloudfront.net/trip-data
DATA   ?= data
# make serve: which model, where (127.0.0.1 only by default: nothing outside this machine)
MODEL_URI  ?= models:/nyc-taxi-duration@champion
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 5001

.DEFAULT_GOAL := help
.PHONY: help install run serve test lint bench ui data clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(BIN)/.installed ## Create .venv with what the pipeline needs (no test or Spark tools)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# What the tests add: pytest, the servers they start, Playwright, and Spark for the Spark tests.
$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,spark]'
	@touch $@

# What lint adds: ruff, mypy and its stubs.
$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The steps' commands call `python`: the venv must come first on PATH, as if activated.
run: install ## Run the pipeline (or ENTRY=predict|promote|<step>) on the embedded store (sqlite:///mlflow.db)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mlflow run . -e $(ENTRY) --env-manager local $(ARGS)

# `mlflow models serve` starts `uvicorn` from PATH: the venv comes first here too.
serve: install ## Serve the champion as a REST API (mlflow models serve) on 127.0.0.1:5001
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL_URI)" \
	  --env-manager local -h $(SERVE_HOST) -p $(SERVE_PORT)

# make test: test files run in parallel (pytest-xdist), each file whole on one worker, since a
# file's tests share the servers and stores it starts, in the order tests/conftest.py gives them
# (slowest kinds first). TEST_JOBS=0 runs them in one process, one after another.
test: $(BIN)/.installed-test ## Run the unit, integration, e2e, reliability and browser tests
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder $(ARGS)

lint: $(BIN)/.installed-dev ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install ## Benchmark against the course flow (prints a table)
	$(BIN)/python benchmarks/bench.py $(ARGS)

ui: install ## Open the MLflow UI on the embedded store; prints the link to the pipeline's runs
	$(BIN)/python -m taxi_duration.tools.ui --backend-store-uri $(STORE) --port $(UI_PORT) -- $(UI_ARGS)

data: install ## Download the default months (green 2021-01..03) into data/, for -P source=data
	$(BIN)/python -m taxi_duration.tools.data --taxi $(TAXI) --dest $(DATA) --source $(SOURCE) $(MONTHS)

clean: ## Remove the local store, artifacts and caches (not the venv, not data/)
	rm -rf mlflow.db mlruns .pytest_cache .mypy_cache .ruff_cache
