# Docstreams: `make run` and `make test` do all set-up on a fresh machine
# (Python 3.11, Java 17, Maven): a virtualenv, the Kafka jars from Maven Central.

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
HOME_DIR ?= .docstreams
CORPUS   ?= ../shared/corpus
JOB      ?= sample
KAFKA_LIBS := $(HOME_DIR)/broker/libs
PYTEST_ARGS ?=
# make chaos: seed, documents, worker kills by the harness, broker restarts, pause cycles
SEED     ?= 1
DOCS     ?= 100
KILLS    ?= 5
BROKER_RESTARTS ?= 1
PAUSES   ?= 3
export DOCSTREAMS_CORPUS ?= $(abspath $(CORPUS))

.PHONY: help setup run test unit integration chaos lint typecheck clean broker-stop

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(KAFKA_LIBS)/.complete: tools/kafka/pom.xml
	mkdir -p $(KAFKA_LIBS)
	mvn -q -B -f tools/kafka/pom.xml \
	  org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
	  -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_LIBS))
	touch $@

setup: $(VENV)/.installed $(KAFKA_LIBS)/.complete  ## Virtualenv + Kafka jars (idempotent)

run: setup  ## The main job on the sample corpus (all of CORPUS/real and CORPUS/bad), local broker
	@test -d $(CORPUS) || { echo "corpus not found at $(CORPUS); set CORPUS=..."; exit 2; }
	$(VENV)/bin/docstreams run $(CORPUS)/real $(CORPUS)/bad --job $(JOB) \
	  --passwords samples/passwords.json

test: setup  ## Unit tests, then integration tests against a real broker
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)
	$(PY) -m pytest tests/integration -q $(PYTEST_ARGS)

unit: $(VENV)/.installed  ## Unit tests only (no broker)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

integration: setup  ## Integration tests only
	$(PY) -m pytest tests/integration -q $(PYTEST_ARGS)

chaos: setup  ## kill -9 workers, restart the broker, pause/resume; check exactly once (SEED DOCS KILLS)
	$(PY) -m tests.chaos.harness --seed $(SEED) --docs $(DOCS) --kills $(KILLS) \
	  --broker-restarts $(BROKER_RESTARTS) --pauses $(PAUSES) --kafka-libs $(abspath $(KAFKA_LIBS))

lint: $(VENV)/.installed  ## ruff
	$(VENV)/bin/ruff check streams tests benchmarks

typecheck: $(VENV)/.installed  ## mypy
	$(VENV)/bin/mypy streams

broker-stop:  ## Stop the local broker
	$(VENV)/bin/docstreams broker stop

clean: broker-stop  ## Remove local state (broker data, blobs, outputs) but keep the jars
	find $(HOME_DIR) -mindepth 1 -maxdepth 1 ! -name broker -exec rm -rf {} +
	rm -rf $(HOME_DIR)/broker/data $(HOME_DIR)/broker/logs
