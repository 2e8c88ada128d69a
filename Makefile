# The two commands of the README:
#   make repro   set up .venv from requirements.lock, then `dvc repro` on params.yaml
#   make test    set up .venv, then the whole test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test bench lint lock ui clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest

# Training speed against the tutorial's script, and end-to-end times (several minutes).
bench: setup
	python benchmarks/run.py

lint: setup
	ruff check pipeline tests benchmarks
	ruff format --check pipeline tests benchmarks

# Re-pin every dependency (exact versions and hashes) after editing pyproject.toml.
lock: setup
	pip-compile --quiet --generate-hashes --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

# MLflow's UI opens on its GenAI view unless told otherwise; the project's runs are model training.
ui: setup
	@echo "MLflow UI: http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning"
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean-venv:
	rm -rf $(VENV)
