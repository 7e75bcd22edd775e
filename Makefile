# Two environments (design.md, section 2): .venv = TFX 1.16 on Python 3.10 + this project;
# .venv-airflow = Apache Airflow 3 on Python 3.11. Each rebuilds only when its inputs change.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
PY310 ?= $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.10.*/bin/python3)))
PY311 ?= $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.11.*/bin/python3)))
VENV := .venv
AIRFLOW_VENV := .venv-airflow
TFX_STAMP := $(VENV)/.built
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.built
AIRFLOW_VERSION := 3.3.2
# pip prints a warning per package for find-links folders that do not exist on this machine.
# The braces keep grep's "nothing left" from failing the step while pipefail still reports pip's own failure.
PIP_FILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTEST_ARGS ?=

export TF_USE_LEGACY_KERAS := 1

.PHONY: help venvs run test bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(TFX_STAMP): setup.py constraints/tfx-py310.txt
	@test -x "$(PY310)" || { echo "error: no Python 3.10 under $(PYENV_ROOT)/versions (install one: pyenv install 3.10)" >&2; exit 1; }
	@echo "building $(VENV) (TFX 1.16, Python 3.10): about 2-3 minutes the first time"
	rm -rf $(VENV)
	$(PY310) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip 2>&1 | $(PIP_FILTER)
	$(VENV)/bin/pip install -q -c constraints/tfx-py310.txt -e '.[test]' 2>&1 | $(PIP_FILTER)
	$(VENV)/bin/python -c "import tfx, tfx_bsl, dill; print('tfx', tfx.__version__, 'ready')"
	touch $@

$(AIRFLOW_STAMP): constraints/airflow-py311.txt
	@test -x "$(PY311)" || { echo "error: no Python 3.11 under $(PYENV_ROOT)/versions (install one: pyenv install 3.11)" >&2; exit 1; }
	@echo "building $(AIRFLOW_VENV) (Airflow $(AIRFLOW_VERSION), Python 3.11)"
	rm -rf $(AIRFLOW_VENV)
	$(PY311) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q -U pip 2>&1 | $(PIP_FILTER)
	$(AIRFLOW_VENV)/bin/pip install -q -c constraints/airflow-py311.txt apache-airflow==$(AIRFLOW_VERSION) 2>&1 | $(PIP_FILTER)
	touch $@

venvs: $(TFX_STAMP) $(AIRFLOW_STAMP)  ## build both environments (only what changed)

run: $(TFX_STAMP) $(AIRFLOW_STAMP)  ## one nightly cycle through Airflow on the bundled data (seeds data if absent)
	@test -n "$$(ls -d data/incoming/*/ 2>/dev/null)" || $(VENV)/bin/mlops data seed
	$(VENV)/bin/mlops airflow run

test: $(TFX_STAMP) $(AIRFLOW_STAMP)  ## the whole test suite (fails when no test ran)
	status=0; $(VENV)/bin/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$status

bench: $(TFX_STAMP)  ## benchmarks, side by side with baselines; writes bench/RESULTS.md
	$(VENV)/bin/python bench/pipeline_vs_stock.py

clean:  ## remove environments and all runtime state (var/, pushed models); keeps data/
	rm -rf $(VENV) $(AIRFLOW_VENV) var serving/models .pytest_cache
