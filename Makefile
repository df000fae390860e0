# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first:
# the virtualenv, Java 17 for Spark, the Dagster home, and a Redis (REDIS_URL, or one we start).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export INTENT_HOME ?= $(CURDIR)/.intent
export DAGSTER_HOME := $(INTENT_HOME)/dagster_home
export PYSPARK_PYTHON := $(CURDIR)/$(BIN)/python
export PYSPARK_DRIVER_PYTHON := $(CURDIR)/$(BIN)/python
export SPARK_LOCAL_IP ?= 127.0.0.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup venv lock java chromium promtool dagster-home redis demo test ui stack stack-down clean

setup: venv java dagster-home redis

# The virtualenv holds exactly what requirements.lock pins, and the project itself in editable mode
# (without resolving again; `pip check` then fails if pyproject.toml asks for what the lock lacks).
# It is built afresh when the lock or the interpreter changes: `make PYTHON=python3.13 test` makes
# a 3.13 venv in place of the current one.
PY_VERSION := $(shell $(PYTHON) -c 'import platform; print(platform.python_version())' 2>/dev/null)
venv: $(VENV)/.installed-$(PY_VERSION)
$(VENV)/.locked-$(PY_VERSION): requirements.lock
	@[ -n "$(PY_VERSION)" ] || { echo "no Python at PYTHON=$(PYTHON)"; exit 1; }
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -r requirements.lock
	touch $@
$(VENV)/.installed-$(PY_VERSION): $(VENV)/.locked-$(PY_VERSION) pyproject.toml
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $@

# Regenerate requirements.lock from pyproject.toml: one universal lock (every Python the project
# supports, every platform) with hashes, resolved by uv, which is installed into the venv for this.
# Pins already in the lock are kept when they still fit; `make lock LOCK_ARGS=--upgrade` moves all
# to the newest releases. The file is only replaced when it changes (a new lock rebuilds the venv).
UV_VERSION := 0.13.9
LOCK_ARGS ?=
lock:
	@[ -x $(BIN)/pip ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)
	[ ! -f requirements.lock ] || cp requirements.lock $(VENV)/requirements.lock.new
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command "make lock" --quiet $(LOCK_ARGS) \
		--output-file $(VENV)/requirements.lock.new
	@if cmp -s $(VENV)/requirements.lock.new requirements.lock; then \
		echo "requirements.lock: unchanged"; rm $(VENV)/requirements.lock.new; \
	else mv $(VENV)/requirements.lock.new requirements.lock; echo "requirements.lock: updated"; fi

# Spark 4 needs Java 17 or newer; install 17 from apt when there is none.
java:
	@major=$$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1); \
	if [ -z "$$major" ] || [ "$$major" -lt 17 ]; then \
		echo "installing Java 17 (found: $${major:-none})"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jre-headless; \
	fi

# The UI tests drive Debian's headless Chromium.
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# The alert-rule tests run Debian's promtool (the `prometheus` package ships it); the package's
# service is not wanted, only the tool, so recommends stay out.
promtool:
	@command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

dagster-home:
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

redis: venv
	@echo "redis: $$($(BIN)/intent redis up)"

demo: setup
	$(BIN)/intent demo

test: setup chromium promtool
	$(BIN)/dg check defs
	$(BIN)/pytest

# The production topology on this machine (docs/production.md); `make stack-down` stops it.
stack: venv java
	$(BIN)/intent stack up

stack-down: venv
	$(BIN)/intent stack down

ui: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

clean:
	-$(BIN)/python -c 'from tests.process_groups import sweep; sweep()'
	-$(BIN)/intent serve stop-endpoint
	-$(BIN)/intent redis down
	rm -rf $(INTENT_HOME)
