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

.PHONY: all install demo test lint bench workers beat flower services-up services-down clean

all: lint test

$(STAMP): setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "python3.11 not found"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/corec demo $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check corec_tasks plugins tests benchmarks celeryconfig.py beat_schedule.py
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

flower: install
	@test -n "$$FLOWER_BASIC_AUTH" || { echo "set FLOWER_BASIC_AUTH=user:password first"; exit 1; }
	$(BIN)/celery -A corec_tasks flower --address=$(FLOWER_ADDRESS) --port=$(FLOWER_PORT) \
		--basic-auth="$$FLOWER_BASIC_AUTH" --max_tasks=$(FLOWER_MAX_TASKS)

services-up: install
	$(BIN)/corec services up

services-down: install
	$(BIN)/corec services down

clean:
	-@test -x $(BIN)/corec && $(BIN)/corec services down
	rm -rf .corec .pytest_cache .mypy_cache .ruff_cache *.egg-info
