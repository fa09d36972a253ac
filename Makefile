# ioc — two commands do everything: `make run` and `make test` (see README).
SHELL := /bin/bash
VENV := .venv
IOC := $(VENV)/bin/ioc
PY := $(VENV)/bin/python

# Real open data of the city, when the shared folder is beside the project (tests, benchmarks).
IOC_DATA_DIR ?= $(if $(wildcard ../shared/data/hcmc/wards_2025.geojson.gz),$(abspath ../shared/data/hcmc),)
export IOC_DATA_DIR

.PHONY: setup run test bench lint db-start db-stop clean help

help:
	@echo "make run    set up (first time: installs PostGIS, .venv, demo city) and serve on :8000"
	@echo "make test   the same set-up, then the whole test suite"
	@echo "make setup  the idempotent set-up both use"
	@echo "make bench  benchmarks against the peer servers (not part of the tests)"
	@echo "           BENCH_ARGS=live: upserts/s, commit-to-SSE latency, tiles under updates"
	@echo "           BENCH_ARGS=\"tiles --quick\": the tile benchmark, shorter"

setup:
	@scripts/setup.sh

# The demo city comes alive: `ioc simulate` feeds its live layers through the write API beside
# the server, with an admin key it creates (and revokes) for itself, and stops with the server.
# Only layers the demo generator filled are fed; IOC_SIMULATE=0 serves without it.
IOC_SIMULATE ?= 1

run: setup
	@if [ "$(IOC_SIMULATE)" = 0 ]; then exec $(IOC) serve; fi; \
	$(IOC) simulate --own-key >var/simulate.log 2>&1 & sim=$$!; \
	trap 'kill -TERM $$sim 2>/dev/null; wait $$sim' EXIT INT TERM; \
	echo "ioc simulate feeds the live layers (var/simulate.log; IOC_SIMULATE=0 turns it off)"; \
	$(IOC) serve

test:
	@IOC_SETUP_FOR=test scripts/setup.sh
	$(PY) -m pytest $(PYTEST_ARGS)

bench:
	@IOC_SETUP_FOR=bench scripts/setup.sh
	$(PY) -m bench $(BENCH_ARGS)

lint:
	@IOC_SETUP_FOR=lint scripts/setup.sh
	$(VENV)/bin/ruff check ioc layers tiles api tests bench
	$(VENV)/bin/ruff format --check ioc layers tiles api tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

db-start:
	$(IOC) db start

db-stop:
	$(IOC) db stop

clean:
	rm -rf .venv .pytest_cache tiles/cache
