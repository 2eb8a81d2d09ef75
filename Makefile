# Two commands set everything up on a fresh machine with Python 3.11:
#   make demo   run the example pipeline end to end through Airflow; last line = published dir
#   make test   run the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The embedded Airflow: SQLite metadata DB + LocalExecutor, all inside the project (git-ignored).
# (A LocalExecutor that imports TensorFlow once for all task processes: plugins/savedmodel_executor.py)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR := plugins.savedmodel_executor.TensorFlowLocalExecutor
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN ?= sqlite:///$(AIRFLOW_HOME)/airflow.db
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := True
# Airflow imports airflow_local_settings from here: on SQLite, transactions that write take the lock
# at BEGIN, so no command fails with "database is locked" (see tools/sqlite_transactions.py).
export PYTHONPATH := $(CURDIR)/tools/airflow_settings$(if $(PYTHONPATH),:$(PYTHONPATH))
export TF_CPP_MIN_LOG_LEVEL := 2
# `airflow standalone` starts its components as `airflow ...` subprocesses found on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: help venv system-packages airflow-home data demo test soak bench bench-scale lint airflow versions rebuild-registry clean

help:
	@echo "make demo     run the example pipeline end to end (prints the published version dir last)"
	@echo "make demo PIPELINE=diabetes_keras   the Keras regression example instead"
	@echo "make test     run the test suite"
	@echo "make airflow  start Airflow locally, health-checked (UI on http://127.0.0.1:8080, admin/admin; approver/approver answers approvals)"
	@echo "make versions PIPELINE=digits_softmax   list a model's versions, labels and accuracy"
	@echo "make rebuild-registry PIPELINE=digits_softmax   rebuild a damaged registry from the version dirs"
	@echo "make soak     the reliability suite with 500 crash trials, then the cluster faults (about 15 minutes)"
	@echo "make bench    benchmarks (table on stdout, JSON in build/bench.json)"
	@echo "make bench-scale   training at scale: RSS 100 k vs 10 M examples, throughput, cores (~15 min)"
	@echo "make lint     ruff"

# The virtual environment is rebuilt only when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --python $(BIN)/python -r requirements.txt -r requirements-dev.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -r requirements-nodeps.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

venv: $(STAMP)

airflow-home: venv
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)

data: venv
	$(BIN)/python scripts/generate_data.py

demo: airflow-home
	@$(BIN)/python scripts/demo.py $(PIPELINE)

# Debian packages the tests run (Chromium, docker-compose, PostgreSQL, Redis); a no-op when present.
system-packages:
	@scripts/system_packages.sh

test: venv system-packages lint
	$(BIN)/python -m pytest

# The reliability suite, longer: 500 SIGKILL trials and fresh random fuzz cases (make test uses a
# fixed set, so CI is reproducible); figures in test-artifacts/crash-results.json. Then the cluster
# faults again (make test runs them too): the Celery stack's worker, scheduler, PostgreSQL and Redis
# killed or restarted mid-run (tests/e2e/test_celery_faults.py), and the multi-host cluster's worker
# killed or cut off mid-upload to a bucket (tests/multihost/).
soak: venv system-packages
	HYPOTHESIS_PROFILE=explore CRASH_TRIALS=500 CRASH_TRIALS_BUCKET=200 $(BIN)/python -m pytest tests/reliability -q
	@cat test-artifacts/crash-results.json
	$(BIN)/python -m pytest -q tests/e2e/test_celery_faults.py tests/multihost

bench: venv
	$(BIN)/python -m bench.run --quick

# Training at scale (docs/performance.md): data generated once into build/scale-data/ (~3.6 GB).
bench-scale: venv
	$(BIN)/python -m bench.scale

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Local Airflow: api-server, scheduler, dag-processor and triggerer, health-checked, on
# http://localhost:8080 (loopback only; AIRFLOW_PORT=8081 make airflow picks another port).
# Logins admin / admin and approver / approver (answers stable approvals). Ctrl-C stops every component.
airflow: airflow-home data
	$(BIN)/python -m tools.local_airflow

PIPELINE ?= digits_softmax
versions: venv
	@$(BIN)/python -m include.registry.cli versions $(PIPELINE)

# A damaged registry (runs and `make versions` name the file): rebuilt from the version dirs on
# disk, keeping the labels and entries that still read (docs/runbook.md#a-damaged-registry-rebuild-it).
rebuild-registry: venv
	@$(BIN)/python -m include.registry.cli rebuild $(PIPELINE)

clean:
	rm -rf .airflow build data
