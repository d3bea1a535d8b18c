# One virtualenv, created on first use; every target below installs into it first.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: install run test test-all demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: install          ## the embedded stack in the foreground (Ctrl-C stops it)
	$(BIN)/ievents up

test: install         ## the whole suite against real components (slow fault/load runs excluded)
	$(BIN)/python -m pytest

test-all: install     ## also the long fault and load suites
	$(BIN)/python -m pytest -m ''

demo: install
	$(BIN)/ievents demo --events 20000 --json

clean:
	rm -rf $(VENV) data
