# Napalm Sky: `make run` starts a node on embedded defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PACKAGES := core adapters api signaling sfu turn recorder loadtest web napalmsky bench

.PHONY: run test lint check install install-dev clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Napalm Sky needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	@echo "napalmsky: first run: creating $(VENV) and installing dependencies (1-3 minutes; later runs start at once)"
	@$(PYTHON) -m venv $(VENV) || { echo "python venv failed: on Debian run 'apt-get install python3-venv'"; exit 1; }
	@$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "napalmsky: installing the service into $(VENV) (about a minute)"
	@$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	@echo "napalmsky: installing the service and its test tools into $(VENV) (1-3 minutes)"
	@$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	@$(BIN)/napalmsky serve

test: install-dev
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy --strict $(PACKAGES)

check: lint test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
