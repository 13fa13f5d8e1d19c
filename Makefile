# Parley: `make run` serves it, `make test` tests it. Both work on a bare machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test fuzz lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python -m config.server -b $(HOST) -p $(PORT) --proxy-headers config.asgi:application

# The tests run on real PostgreSQL and Redis; these defaults are the local services.
test: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
test: export REDIS_URL ?= redis://127.0.0.1:6379/0
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest

# Schemathesis against a live daphne (scratch database) with a signed-in user: no 5xx,
# every response as the OpenAPI schema says. Audio/video attachments use ffmpeg
# (Debian: `apt-get install ffmpeg`; .ci/run installs it).
fuzz: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
fuzz: export REDIS_URL ?= redis://127.0.0.1:6379/0
fuzz: $(STAMP)
	$(BIN)/python .ci/api_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles
