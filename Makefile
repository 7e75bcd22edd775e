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
KSERVE_VENV := .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.built
PEERS_STAMP := $(VENV)/.bench-peers
AIRFLOW_VERSION := 3.3.2
# pip prints a warning per package for find-links folders that do not exist on this machine.
# The braces keep grep's "nothing left" from failing the step while pipefail still reports pip's own failure.
PIP_FILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTEST_ARGS ?=

export TF_USE_LEGACY_KERAS := 1

.PHONY: help venvs run test test-fast bench clean up down status browser monitoring servers

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

# Extras: postgres (psycopg2: Airflow on PostgreSQL) and celery (the Celery provider with celery[redis]) for
# `make up BACKEND=postgres`; their versions are pinned in the constraints file like the rest.
$(AIRFLOW_STAMP): constraints/airflow-py311.txt
	@test -x "$(PY311)" || { echo "error: no Python 3.11 under $(PYENV_ROOT)/versions (install one: pyenv install 3.11)" >&2; exit 1; }
	@echo "building $(AIRFLOW_VENV) (Airflow $(AIRFLOW_VERSION), Python 3.11)"
	rm -rf $(AIRFLOW_VENV)
	$(PY311) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q -U pip 2>&1 | $(PIP_FILTER)
	$(AIRFLOW_VENV)/bin/pip install -q -c constraints/airflow-py311.txt 'apache-airflow[celery,postgres]==$(AIRFLOW_VERSION)' 2>&1 | $(PIP_FILTER)
	touch $@

venvs: $(TFX_STAMP) $(AIRFLOW_STAMP)  ## build both environments (only what changed)

run: $(TFX_STAMP) $(AIRFLOW_STAMP)  ## one nightly cycle through Airflow on the bundled data (seeds data if absent)
	@test -n "$$(ls -d data/incoming/*/ 2>/dev/null)" || $(VENV)/bin/mlops data seed
	$(VENV)/bin/mlops airflow run

test: $(TFX_STAMP) $(AIRFLOW_STAMP) browser monitoring servers  ## the whole test suite, what CI runs (fails when no test ran)
	status=0; $(VENV)/bin/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$status

# The markers come from the fixtures a test uses (tests/conftest.py, FIXTURE_MARKERS; pytest.ini).
FAST_MARKERS := not pipeline and not airflow and not browser

test-fast: $(TFX_STAMP) monitoring servers  ## the tests that run no pipeline, no Airflow and no browser (needs only .venv; a few minutes)
	status=0; $(VENV)/bin/python -m pytest -m "$(FAST_MARKERS)" $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$status

BENCHES ?= pipeline_vs_stock airflow_overhead serving_latency validation_throughput alert_loop lineage_query batch_scoring

# bench/serving_latency.py's peers (issue 25): FastAPI + uvicorn in .venv (bench/requirements-peers.txt, under the TFX
# constraints: nothing pinned moves), KServe in its own .venv-kserve (no kserve release resolves inside them). A KServe
# environment that fails to build does not stop the benchmarks: the serving benchmark runs without that peer and
# writes why (the failing line of .venv-kserve/build.log) into bench/RESULTS.md.
bench: $(TFX_STAMP) $(AIRFLOW_STAMP) $(PEERS_STAMP) /usr/bin/h2load  ## benchmarks side by side with baselines (BENCHES="..." picks); writes bench/RESULTS.md
	$(MAKE) --no-print-directory $(KSERVE_STAMP) || echo "warning: $(KSERVE_VENV) was not built (log: $(KSERVE_VENV)/build.log); bench/serving_latency.py runs without the KServe peer and says why" >&2
	for name in $(BENCHES); do $(VENV)/bin/python bench/$$name.py; done

$(PEERS_STAMP): $(TFX_STAMP) bench/requirements-peers.txt
	$(VENV)/bin/pip install -q -c constraints/tfx-py310.txt -r bench/requirements-peers.txt 2>&1 | $(PIP_FILTER)
	touch $@

# KServe's Python model server with the TFX environment's TensorFlow (2.16.2, which loads the pushed SavedModel and its
# tf.Transform graph), on Python 3.11 like .venv-airflow; pins in constraints/kserve-py311.txt. pip's output goes to
# build.log, which stays when the build fails.
$(KSERVE_STAMP): constraints/kserve-py311.txt
	@test -x "$(PY311)" || { echo "error: no Python 3.11 under $(PYENV_ROOT)/versions (install one: pyenv install 3.11)" >&2; exit 1; }
	@echo "building $(KSERVE_VENV) (KServe + tensorflow-cpu, Python 3.11): 1-2 minutes"
	rm -rf $(KSERVE_VENV)
	$(PY311) -m venv $(KSERVE_VENV)
	{ $(KSERVE_VENV)/bin/pip install -U pip && \
	  $(KSERVE_VENV)/bin/pip install -c constraints/kserve-py311.txt kserve tensorflow-cpu && \
	  $(KSERVE_VENV)/bin/python -c "import kserve, tensorflow as tf; print('kserve + tensorflow', tf.__version__, 'ready')"; \
	} > $(KSERVE_VENV)/build.log 2>&1 || { tail -20 $(KSERVE_VENV)/build.log >&2; exit 1; }
	tail -1 $(KSERVE_VENV)/build.log
	touch $@

# Airflow's services for a project home (default: this repository): api-server on
# 127.0.0.1:$(AIRFLOW_PORT) (default 8080), scheduler, dag-processor, triggerer, plus the model server
# (`mlops serve`, REST 127.0.0.1:8501, gRPC 8500); pid files in var/airflow/run/, logs in var/log/. UNPAUSE=1 also unpauses nightly_retrain.
# Then the monitoring stack (monitoring/stack.py): Prometheus, Alertmanager, Pushgateway and the alert
# webhook on 127.0.0.1 (9090, 9093, 9091, 9095 when free), state in var/monitoring/. AUTO_ROLLBACK=1 lets
# a firing rollback alert trigger the model_rollback DAG, AUTO_ROLLBACK=0 stops that (unset: as the running
# webhook does; off when it starts).
# BACKEND=postgres: Airflow's database on PostgreSQL, the CeleryExecutor with Redis as broker and one
# `airflow celery worker`, ML Metadata on MariaDB, the mlmd_writers pool widened (pipelines/db_servers.py;
# state in var/db/). Default sqlite: LocalExecutor, SQLite, var/metadata.sqlite.
MLOPS_HOME ?=
AIRFLOW_PORT ?=
UNPAUSE ?=
AUTO_ROLLBACK ?=
BACKEND ?=
MLOPS_AT := $(VENV)/bin/mlops $(if $(MLOPS_HOME),--home $(MLOPS_HOME))

up: $(TFX_STAMP) $(AIRFLOW_STAMP) monitoring $(if $(filter postgres,$(BACKEND)),servers)  ## start Airflow (UI on 127.0.0.1:8080, login admin), the model server (REST 8501, gRPC 8500) and Prometheus/Alertmanager/Pushgateway/webhook in the background; AIRFLOW_PORT=, MLOPS_HOME=, UNPAUSE=1, AUTO_ROLLBACK=1, BACKEND=postgres
	$(MLOPS_AT) airflow up $(if $(BACKEND),--backend $(BACKEND)) $(if $(AIRFLOW_PORT),--port $(AIRFLOW_PORT)) $(if $(filter 1 yes true,$(UNPAUSE)),--unpause) $(if $(filter 1 yes true,$(AUTO_ROLLBACK)),--auto-rollback)$(if $(filter 0 no false,$(AUTO_ROLLBACK)),--no-auto-rollback)

down:  ## stop what `make up` started (and the warm worker); MLOPS_HOME=
	@if [ -x $(VENV)/bin/mlops ]; then $(MLOPS_AT) airflow down; else echo "no $(VENV): nothing can be running"; fi

status:  ## which Airflow services, the model server and the monitoring stack run, and where
	@$(MLOPS_AT) airflow status || true

# Headless Chromium and its WebDriver for the Airflow UI test (Debian packages); nothing to do
# when both are installed.
CHROMIUM_BINS := /usr/bin/chromium /usr/bin/chromedriver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(CHROMIUM_BINS) &:
	@echo "installing Debian's chromium and chromium-driver (for the Airflow UI test)"
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver

# h2load (nghttp2's load generator): bench/serving_latency.py's native REST and gRPC client.
/usr/bin/h2load:
	@echo "installing Debian's nghttp2-client (h2load, for bench/serving_latency.py)"
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends nghttp2-client

browser: $(CHROMIUM_BINS)  ## headless Chromium + chromedriver for the UI test (apt-get, once)

# Prometheus (with promtool), Alertmanager (with amtool) and the Pushgateway (Debian packages) for the
# monitoring stack of `make up` and its tests; nothing to do when all five binaries are installed.
MONITORING_BINS := /usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/bin/amtool /usr/bin/prometheus-pushgateway

$(MONITORING_BINS) &:
	@echo "installing Debian's prometheus, prometheus-alertmanager and prometheus-pushgateway (for the monitoring stack)"
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus prometheus-alertmanager prometheus-pushgateway

monitoring: $(MONITORING_BINS)  ## Prometheus, Alertmanager, Pushgateway and their checkers (apt-get, once)

# MariaDB (ML Metadata), PostgreSQL 15 (Airflow's database) and Redis (Celery's broker), Debian packages, for
# `make up BACKEND=postgres` and its tests; nothing to do when their binaries are installed. No service starts
# on install here (no service manager); pipelines/db_servers.py starts each as a plain process per home.
SERVER_BINS := /usr/sbin/mariadbd /usr/bin/mariadb-install-db /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/postgres /usr/bin/redis-server

$(SERVER_BINS) &:
	@echo "installing Debian's mariadb-server, postgresql and redis-server (for make up BACKEND=postgres)"
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends mariadb-server postgresql redis-server

servers: $(SERVER_BINS)  ## MariaDB, PostgreSQL 15 and Redis for make up BACKEND=postgres (apt-get, once)

clean:  ## remove environments and all runtime state (var/, pushed models); keeps data/
	rm -rf $(VENV) $(AIRFLOW_VENV) $(KSERVE_VENV) var serving/models .pytest_cache
