# The two commands of the README:
#   make repro   set up .venv from requirements.lock, then `dvc repro` on params.yaml
#   make test    set up .venv, then lint, types and the whole test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test test-fast bench bench-sweep lint types docs plots lock ui clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

repro: setup
	dvc repro

test: lint types
	python -m pytest

# Everything but the end-to-end tests (which run the real pipeline): about 3 minutes.
test-fast: lint types
	python -m pytest -m "not e2e"

# Training speed against the tutorial's script, and end-to-end times (several minutes).
bench: setup
	python benchmarks/run.py

lint: setup
	ruff check pipeline tests benchmarks
	ruff format --check pipeline tests benchmarks

types: setup
	mypy pipeline

# The figures the documents quote, rewritten from the outputs (the tests check them).
docs: setup
	aepipe docs

# DVC's plots page, readable offline: make plots (workspace against the last commit), or
# make plots REVS="main <experiment>".
plots: setup
	aepipe plots $(REVS)

# The same 2 x 3 sweep through DVC's queue and through `aepipe sweep` on Ray (several minutes).
bench-sweep: setup
	python benchmarks/sweep.py --default-cell

# Re-pin every dependency (exact versions and hashes) after editing pyproject.toml.
lock: setup
	pip-compile --quiet --generate-hashes --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

# MLflow's UI opens on its GenAI view unless told otherwise; the project's runs are model training.
PORT ?= 5000
ui: setup
	@echo "MLflow UI: http://127.0.0.1:$(PORT)/#/experiments/1?workflowType=machine_learning"
	@[ "$(PORT)" = 5000 ] || echo "(for run links on this port: export AEPIPE_UI=http://127.0.0.1:$(PORT))"
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(PORT)

clean-venv:
	rm -rf $(VENV)
