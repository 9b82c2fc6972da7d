# The two commands the README opens with: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run serve test lint superuser bench-registration bench-push soak audit clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-test.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@ $(VENV)/.run-installed

## Set up and run the service on the embedded defaults (SQLite, in-memory live feed):
## web (admin, API, websocket) on 127.0.0.1:8000 and the AMQP consumer.
## Another address: `make run PORT=8001` (or HOST=..., PORT=... in the environment).
run: $(VENV)/.run-installed
	bin/run

## Production (DEBUG off, settings from the environment or .env; README, "Production"): migrate,
## collect static files, then daphne on HOST:PORT (default 127.0.0.1:8000) and the consumer.
serve: $(VENV)/.run-installed
	bin/serve

## Set up and run the whole test suite (ruff, lint-imports, mypy, then pytest).
test: $(VENV)/.test-installed
	bin/test

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	DEBUG=1 $(BIN)/mypy

## An admin user: asks on the terminal, or takes DJANGO_SUPERUSER_USERNAME/EMAIL/PASSWORD.
superuser: $(VENV)/.run-installed
	bin/superuser

bench-registration: $(VENV)/.test-installed
	$(BIN)/python -m bench.registration

bench-push: $(VENV)/.test-installed
	$(BIN)/python -m bench.push

## Fault-injection soak (docs/reliability.md): the consumer against a cut broker connection, SIGKILL,
## a PostgreSQL restart (private instance), misbehaving APNs/FCM fakes, two consumers. Loopback, < 10 min.
soak: $(VENV)/.test-installed
	$(BIN)/python -m soak

## Checks the pinned dependencies for known vulnerabilities (needs network; kept out of CI).
audit: $(VENV)/.test-installed
	$(BIN)/pip install -q pip-audit && $(BIN)/pip-audit -r requirements.txt -r requirements-test.txt

clean:
	rm -rf $(VENV) data/test .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
