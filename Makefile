# The two front-door commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test install install-dev lint format migrate messages worker beat clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make run` needs only the app; `make test` adds the test tools.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

messages: install
	$(BIN)/python manage.py compile_catalogues --settings=config.settings_test

migrate: install
	$(BIN)/python manage.py migrate --noinput

## Serve the demo on http://127.0.0.1:$(PORT) (SQLite, in-process tasks, console e-mail
## unless DATABASE_URL / CELERY_BROKER_URL / EMAIL_URL say otherwise).
run: export DEBUG ?= 1
run: install messages migrate
	$(BIN)/python manage.py seed_demo --port $(PORT)
	@if [ -n "$$DATABASE_URL" ] && [ -n "$$CELERY_BROKER_URL" ]; then \
		PORT=$(PORT) $(BIN)/honcho start -f Procfile.dev; \
	else \
		$(BIN)/python manage.py runserver 127.0.0.1:$(PORT); \
	fi

## Run the whole suite. Integration tests need DATABASE_URL (PostgreSQL) and
## CELERY_BROKER_URL (Redis); without them they are reported as skipped.
test: install-dev messages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

worker: install
	$(BIN)/celery -A config worker -Q default,execution,notifications --loglevel INFO

beat: install
	$(BIN)/celery -A config beat --loglevel INFO --schedule var/celerybeat-schedule

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
