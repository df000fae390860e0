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

.PHONY: setup venv java chromium dagster-home redis demo test ui clean

setup: venv java dagster-home redis

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

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

dagster-home:
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

redis: venv
	@echo "redis: $$($(BIN)/intent redis up)"

demo: setup
	$(BIN)/intent demo

test: setup chromium
	$(BIN)/dg check defs
	$(BIN)/pytest

ui: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

clean:
	-$(BIN)/intent serve stop-endpoint
	-$(BIN)/intent redis down
	rm -rf $(INTENT_HOME)
