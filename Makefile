# One virtualenv, created on first use; every target below installs into it first.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: install run test test-all demo bench clean

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

bench: install        ## the end-to-end benchmark behind docs/performance.md (about 10 minutes)
	$(BIN)/ievents bench e2e --events 500000 --workers 1,2 --rate 3000 --rate-seconds 60 \
	    --chart docs/performance.png --json > docs/performance.json

clean:
	rm -rf $(VENV) data
