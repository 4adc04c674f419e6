# Tocsin's front door. `make up` runs the platform locally, `make test` runs every test.
# Both install what they need by themselves (venv, Kafka jars from Maven Central, Debian's
# redis-server) on a machine with Python 3.11, Java 17, Maven and apt.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BASE ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/tocsin/v1/*.proto)
PROTO_OUT := libs/common
PYTEST_ARGS ?=
PACKAGES := libs/common/tocsin_common services/alert-ingest/tocsin_ingest services/correlation/tocsin_correlation \
  services/escalation/tocsin_escalation services/notification/tocsin_notification services/api/tocsin_api \
  clients/cli/tocsin_cli services/insight/tocsin_insight

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv proto proto-check api-spec api-spec-check lint up down status test test-unit test-integration infra-test-up infra-test-down fetch clean bench test-failure fuzz insight-replay screenshots

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt libs/common/pyproject.toml services/*/pyproject.toml clients/*/pyproject.toml
	@test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e libs/common -e services/alert-ingest -e services/correlation -e services/escalation -e services/notification -e services/api \
	  -e services/insight -e clients/cli
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv with the pinned dependencies and the packages (editable)

proto: $(STAMP)  ## generate Python code from protos/ into libs/common/tocsin/v1
	$(PY) tools/genproto.py --out $(PROTO_OUT)

proto-check: $(STAMP)  ## fail when the generated code is stale against protos/
	$(PY) tools/genproto.py --check --out $(PROTO_OUT)

api-spec: $(STAMP)  ## write the REST API's OpenAPI 3.1 document (docs/openapi.json) from the code
	$(PY) tools/apispec.py

api-spec-check: $(STAMP)  ## fail when docs/openapi.json is stale against services/api
	$(PY) tools/apispec.py --check

lint: $(STAMP)  ## ruff over all the code, mypy over services/, libs/, clients/, tools/ and bench/
	$(VENV)/bin/ruff check services libs clients tools tests bench
	$(VENV)/bin/mypy $(PACKAGES) tools bench

fetch: $(STAMP)  ## fetch the Kafka broker jars, install redis-server, postgresql, chromium and chromium-driver (done by up/test too)
	$(PY) tools/devstack.py fetch

up: $(STAMP)  ## run Kafka, Redis, PostgreSQL and the six services locally (stop with make down)
	$(PY) tools/devstack.py up --profile dev

down:  ## stop exactly what make up started
	@if [ -x $(PY) ]; then $(PY) tools/devstack.py down --profile dev; else python3 tools/devstack.py down --profile dev; fi

status:  ## what make up started, and whether it still runs
	@python3 tools/devstack.py status --profile dev

infra-test-up: $(STAMP)
	$(PY) tools/devstack.py fetch
	$(PY) tools/devstack.py down --profile test
	$(PY) tools/devstack.py infra-up --profile test --fresh

infra-test-down:
	@python3 tools/devstack.py down --profile test

# insight's facts recomputed: a new generation filled by replaying incidents.events,
# notifications.status and changes from their beginning while the current one keeps
# serving; it serves once complete (docs/insight-service.md). Against `make up`'s stack, or
# another's with PROFILE=...
PROFILE ?= dev
insight-replay: $(STAMP)  ## recompute insight's facts by replaying the topics into a new generation
	@eval "$$($(PY) tools/devstack.py env --profile $(PROFILE))"; \
	  TOCSIN_CONFIG=$${TOCSIN_CONFIG:-config/tocsin.example.yaml} $(PY) -m tocsin_insight replay

test-unit: $(STAMP)  ## unit tests only (no Kafka, no Redis)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# The whole suite against its own Kafka, Redis and PostgreSQL (ports and data apart from make up's),
# always torn down, exiting with pytest's status. The failure suite runs last (it crashes
# the stack's Kafka and Redis), with a short load: 20 alerts/s, a crash every 3 s.
test: $(STAMP)  ## run every test, bringing up and tearing down its own Kafka, Redis and Postgres
	$(MAKE) --no-print-directory infra-test-up
	@status=0; \
	  eval "$$($(PY) tools/devstack.py env --profile test)"; \
	  $(PY) -m pytest tests/unit tests/integration tests/failure -q -rfE $(PYTEST_ARGS) || status=$$?; \
	  $(MAKE) --no-print-directory infra-test-down; \
	  exit $$status

# The console's screenshots (every page, light and dark, desktop and phone width) and the
# public status page's into docs/images/, taken by their browser tests against the test
# profile's own stack.
screenshots: $(STAMP)  ## regenerate the console's and status page's screenshots in docs/images (chromium, headless)
	$(MAKE) --no-print-directory infra-test-up
	@status=0; \
	  eval "$$($(PY) tools/devstack.py env --profile test)"; \
	  TOCSIN_SCREENSHOTS_DIR=$(CURDIR)/docs/images $(PY) -m pytest tests/integration/test_console_pages.py \
	    "tests/integration/test_status_page.py::test_the_public_page_in_the_browser_is_accessible_and_photographed" \
	    -q -rfE || status=$$?; \
	  $(MAKE) --no-print-directory infra-test-down; \
	  exit $$status

# Benchmarks on a stack of their own (bench profile): JSON (and a PNG chart) under
# bench/results/. Numbers depend on the machine: compare ratios measured in one run.
# The pipeline bench alone takes about 8 minutes: a warm-up until the broker is steady, 3
# repetitions of every rate for Tocsin and Alertmanager, a two-worker phase; e.g.
# BENCH_ARGS="--reps 1 --two-worker-rates ''" for a quicker look, "--baseline REV" to set
# another revision's services beside these (bench/results/README.md).
BENCH_ARGS ?=
bench: $(STAMP)  ## run the benchmarks (pipeline vs Alertmanager 0.25, and per stage); JSON in bench/results
	$(PY) tools/devstack.py down --profile bench
	$(PY) tools/devstack.py infra-up --profile bench --fresh
	@status=0; mkdir -p bench/results; \
	  eval "$$($(PY) tools/devstack.py env --profile bench)"; \
	  $(PY) bench/pipeline_bench.py --out bench/results/pipeline.json --chart bench/results/pipeline.png $(BENCH_ARGS) || status=$$?; \
	  for b in bench/*_bench.py; do \
	    [ "$$b" = bench/pipeline_bench.py ] && continue; \
	    name=$$(basename $$b _bench.py); \
	    $(PY) -m bench.$${name}_bench --out bench/results/$$name.json || status=$$?; \
	  done; \
	  $(PY) -m bench.notification_bench --notification-workers 2 \
	    --out bench/results/notification_2workers.json || status=$$?; \
	  $(PY) tools/devstack.py down --profile bench; \
	  exit $$status

# SPEC §9 under failure: SIGKILL each service, Redis and the broker under load. `make test`
# runs it with a short load; this is the failure suite alone with the long load (60
# alerts/s, a crash every 10 s), on its own Kafka and Redis like `make test`.
test-failure: $(STAMP)  ## the failure suite with a long load (crashes under load); prints the counts it checked
	$(MAKE) --no-print-directory infra-test-up
	@status=0; \
	  eval "$$($(PY) tools/devstack.py env --profile test)"; \
	  TOCSIN_FAILURE_RATE=$${TOCSIN_FAILURE_RATE:-60} TOCSIN_FAILURE_GAP_SECONDS=$${TOCSIN_FAILURE_GAP_SECONDS:-10} \
	  $(PY) -m pytest tests/failure -q -rfE $(PYTEST_ARGS) || status=$$?; \
	  $(MAKE) --no-print-directory infra-test-down; \
	  exit $$status

# The property tests of every parser (ingest's formats, gRPC requests, alerts.raw records, the
# config loader, silence matchers) with FUZZ_SCALE times the examples `make test` runs;
# hypothesis prints how many inputs each test tried.
FUZZ_SCALE ?= 50
fuzz: $(STAMP)  ## a longer property-test campaign over every parser; prints the inputs tried
	TOCSIN_FUZZ_SCALE=$(FUZZ_SCALE) $(PY) -m pytest tests/unit/test_ingest_fuzz.py \
	  tests/unit/test_fuzz_config_matchers.py -q -p no:cacheprovider --hypothesis-show-statistics

clean:  ## remove run folders (not the venv or the Kafka jar cache)
	rm -rf .run
