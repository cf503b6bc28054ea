# CoreC: every entry point. `make demo` and `make test` install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# make workers: WORKERS processes serving QUEUES (the seed's five channels, and Celery's
# default queue `celery` where a plain client's send_task lands, by default).
WORKERS ?= 2
# AUTOSCALE=max,min: the pool grows to max processes under load and shrinks to min when
# idle (`celery worker --autoscale`), instead of a fixed WORKERS; empty means fixed.
AUTOSCALE ?=
QUEUES  ?= generic,security,analysis,alerts,generation,celery
NODE    ?= corec-$(shell hostname)-%n@%h
LOGLEVEL ?= INFO
FLOWER_PORT ?= 5555
# Flower speaks plain HTTP: loopback unless told otherwise (FLOWER_ADDRESS=0.0.0.0 behind TLS).
FLOWER_ADDRESS ?= 127.0.0.1
FLOWER_MAX_TASKS ?= 10000

.PHONY: all install lock deps-latest demo test lint bench workers beat flower services-up services-down clean

all: lint test

# Installs come from the committed lock (exact versions with hashes): what a fresh
# machine runs does not change with the day it was installed. A changed lock rebuilds
# the venv from scratch, so nothing outside the lock survives in it; a changed
# setup.cfg only reinstalls CoreC itself. `make lock` regenerates both locks.
LOCK     := requirements/dev.txt
LINT_PATHS := corec_tasks plugins tests benchmarks requirements celeryconfig.py beat_schedule.py \
	deploy/flower
VENVSTAMP := $(VENV)/.lock-stamp

$(VENVSTAMP): $(LOCK)
	@test -n "$(PYTHON)" || { echo "python3.11 not found"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	@touch $(VENVSTAMP)

$(STAMP): $(VENVSTAMP) setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python requirements/check_freeze.py $(LOCK)
	@touch $(STAMP)

install: $(STAMP)

# Regenerate the locks from setup.cfg: the newest versions its bounds allow, with hashes.
# The runtime lock (what the Dockerfile installs) first; dev adds the test and lint tools
# at the same versions. Upgrading one package only: make lock LOCK_ARGS="-P redis".
LOCK_ARGS ?=
PIP_COMPILE = $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock: install
	$(PIP_COMPILE) --build-deps-for wheel -o requirements/runtime.txt setup.cfg
	$(PIP_COMPILE) --extra dev --build-deps-for editable -c requirements/runtime.txt \
		-o requirements/dev.txt setup.cfg

# Off the required path: a throw-away venv with the newest versions setup.cfg allows,
# then lint and the unit tests, so a breaking upstream release is seen before the lock
# is bumped. Prints what differs from the lock.
LATEST ?= .venv-latest
deps-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet -e '.[dev]'
	-$(LATEST)/bin/python requirements/check_freeze.py $(LOCK)
	$(LATEST)/bin/ruff check $(LINT_PATHS)
	$(LATEST)/bin/mypy
	$(LATEST)/bin/python -m pytest tests/unit -q $(PYTEST_ARGS)
	rm -rf $(LATEST)
	@echo "deps-latest: lint and unit tests pass on the newest versions; make lock to take them"

demo: install
	$(BIN)/corec demo $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks $(if $(ONLY),--only $(ONLY))

# Without REDIS_URL/DATABASE_URL this node runs on the embedded servers (one-node use).
_ensure_servers: install
	@if [ -z "$$REDIS_URL" ] || [ -z "$$DATABASE_URL" ]; then $(BIN)/corec services up; fi
	$(BIN)/corec db upgrade

workers: _ensure_servers
	$(BIN)/celery -A corec_tasks worker $(if $(AUTOSCALE),--autoscale $(AUTOSCALE),--concurrency $(WORKERS)) -Q $(QUEUES) \
		-n $(NODE) --loglevel $(LOGLEVEL)

beat: _ensure_servers
	$(BIN)/celery -A corec_tasks beat --loglevel $(LOGLEVEL)

# deploy/flower/flowerconfig.py turns Flower's task-apply API off (403) unless
# COREC_FLOWER_TASK_API=1: Flower would otherwise send any task for whoever has its password.
flower: install
	@test -n "$$FLOWER_BASIC_AUTH" || { echo "set FLOWER_BASIC_AUTH=user:password first"; exit 1; }
	$(BIN)/celery -A corec_tasks flower --address=$(FLOWER_ADDRESS) --port=$(FLOWER_PORT) \
		--basic-auth="$$FLOWER_BASIC_AUTH" --max_tasks=$(FLOWER_MAX_TASKS) \
		--conf=$(CURDIR)/deploy/flower/flowerconfig.py

services-up: install
	$(BIN)/corec services up

services-down: install
	$(BIN)/corec services down

clean:
	-@test -x $(BIN)/corec && $(BIN)/corec services down
	rm -rf .corec .pytest_cache .mypy_cache .ruff_cache *.egg-info
