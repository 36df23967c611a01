# The two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv if missing and installs everything first; nothing is done by hand.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmbert-installed

.PHONY: demo test setup lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[test]" -r requirements/test.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/no-deps.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mmbert demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_models.py

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
