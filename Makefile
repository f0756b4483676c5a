# One entry point for people, the README and CI: `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra `mlflow run` arguments, e.g. make run ARGS="-P source=../shared/data -P max_evals=20"
ARGS   ?=
# make serve: which model, where (127.0.0.1 only by default: nothing outside this machine)
MODEL_URI  ?= models:/nyc-taxi-duration@champion
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 5001

.DEFAULT_GOAL := help
.PHONY: help install run serve test lint bench ui clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(BIN)/.installed ## Create .venv and install the project with its dev tools

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $@

# The steps' commands call `python`: the venv must come first on PATH, as if activated.
run: install ## Run the whole pipeline on the embedded store (sqlite:///mlflow.db)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mlflow run . -e main --env-manager local $(ARGS)

# `mlflow models serve` starts `uvicorn` from PATH: the venv comes first here too.
serve: install ## Serve the champion as a REST API (mlflow models serve) on 127.0.0.1:5001
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL_URI)" \
	  --env-manager local -h $(SERVE_HOST) -p $(SERVE_PORT)

test: install ## Run the unit, integration and e2e tests
	$(BIN)/pytest $(ARGS)

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install ## Benchmark against the course flow on ../shared/data (prints a table)
	$(BIN)/python benchmarks/bench.py $(ARGS)

ui: install ## Open the MLflow UI on the embedded store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean: ## Remove the local store, artifacts and caches (not the venv)
	rm -rf mlflow.db mlruns .pytest_cache .mypy_cache .ruff_cache
