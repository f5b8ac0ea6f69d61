# Two commands do all the set-up on a fresh machine:
#   make train   installs what is missing, then trains FixMatch on the built-in digits
#   make test    installs what is missing, then runs `ruff check .` and the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: install train lint test test-slow test-full test-packaging benchmark-digits clean

# Reinstall only when the dependencies change (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/ssl-train $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -m "not slow" -q

# The tests too long for every change (the wheel, the C++ example, a killed and resumed sweep, ...); CI runs them.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-full: $(STAMP)
	$(BIN)/python -m pytest -q

# Builds the wheel, installs it into a fresh venv outside the checkout and runs every command from there.
test-packaging: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/test_packaging.py

benchmark-digits: $(STAMP)
	$(BIN)/python scripts/benchmark_digits.py $(ARGS)

clean:
	rm -rf runs multirun .pytest_cache
