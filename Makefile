# ml-workflow-aws — every target bootstraps what it needs from a clean clone.
#   make demo    the whole pipeline on localaws
#   make test    ruff + the test suite
SHELL       := /bin/bash
PYTHON      ?= python3.11
VENV        := .venv
PY          := $(CURDIR)/$(VENV)/bin/python
STAMP       := $(VENV)/.installed
AIRFLOW_HOME_DIR := $(CURDIR)/.airflow

export AIRFLOW_HOME := $(AIRFLOW_HOME_DIR)
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv airflow-home chromium test lint demo up down bench lock clean

venv: $(STAMP)

# Re-installs whenever the lock file (or pyproject) is newer than the last install.
# --no-deps: the lock is complete, nothing is resolved at install time; pip check proves it.
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --no-deps -r requirements.lock 2>&1 | grep -v "is ignored" || true
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
	$(VENV)/bin/python -m pip check
	@touch $@

$(AIRFLOW_HOME_DIR)/airflow.db: $(STAMP)
	$(PY) scripts/airflow_home.py --home $(AIRFLOW_HOME_DIR)
	$(PY) -m airflow db migrate > /dev/null
	$(PY) -m airflow connections import --overwrite $(AIRFLOW_HOME_DIR)/connections.json > /dev/null
	@touch $@

airflow-home: $(AIRFLOW_HOME_DIR)/airflow.db

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/cfn-lint include/cloudformation/*.yaml

# Debian's chromium for the UI test (apt, where available; the test skips without it).
chromium:
	@bash scripts/install_chromium.sh

test: lint airflow-home chromium
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) scripts/demo.py

up: airflow-home
	$(PY) scripts/stack.py up

down:
	@if [ -x $(PY) ]; then $(PY) scripts/stack.py down; fi

bench: $(STAMP)
	$(PY) -m bench

# Regenerate requirements.lock from requirements.in (needs network to the package index).
# torch is appended by hand: its CPU build is taken by pip from a local wheel, not resolved.
lock: $(STAMP)
	$(VENV)/bin/python -m pip install --quiet "uv==0.13.9"
	$(VENV)/bin/uv pip compile requirements.in --python-version 3.11 --quiet -o requirements.lock
	printf '%s\n' "torch==2.13.0+cpu" "    # via requirements.in (CPU build; pip only)" >> requirements.lock

clean: down
	rm -rf $(VENV) $(AIRFLOW_HOME_DIR) .localaws .pytest_cache .ruff_cache
