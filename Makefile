# Everything starts from a plain Python 3.11+: the virtualenv is made on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000

.PHONY: install run test lint format bench clean devstack security

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	DEBUG=$${DEBUG:-True} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-True} $(BIN)/python manage.py devstack --serve --port $(PORT)

devstack: $(STAMP)
	DEBUG=$${DEBUG:-True} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-True} $(BIN)/python manage.py devstack --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Canary sweep, fault injection and hostile input; the report is printed and kept in
# security-report.txt.
security: $(STAMP)
	$(BIN)/python -m pytest tests/security $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles bench-results.json
