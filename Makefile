# The two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each creates its venv if missing and installs everything first; nothing is done by hand.
#   .venv       the demo's: torch==2.13.0 (requirements/constraints.txt), no torchvision
#   .venv-test  the suite's: torch==2.14.1 + torchvision==0.29.1 (requirements/constraints-test.txt) and
#               the vision extra, so that `mmbert extract` is tested too. torchvision only imports beside
#               the torch build it was made for, hence a second venv rather than moving the demo's torch.
VENV ?= .venv
TEST_VENV ?= .venv-test
PYTHON ?= python3
PY := $(VENV)/bin/python
TEST_PY := $(TEST_VENV)/bin/python
STAMP := $(VENV)/.mmbert-installed
TEST_STAMP := $(TEST_VENV)/.mmbert-installed

.PHONY: demo test setup setup-test lint bench bench-extract clean

setup: $(STAMP)

setup-test: $(TEST_STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[test]" -r requirements/test.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/no-deps.txt
	touch $(STAMP)

$(TEST_STAMP): pyproject.toml requirements/constraints-test.txt requirements/test.txt
	test -x $(TEST_PY) || $(PYTHON) -m venv $(TEST_VENV)
	$(TEST_PY) -m pip install --quiet --upgrade pip
	$(TEST_PY) -m pip install --quiet -c requirements/constraints-test.txt -e ".[test,vision]" -r requirements/test.txt
	$(TEST_PY) -m pip install --quiet --no-deps -r requirements/no-deps.txt
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(PY) -m mmbert demo

# MMBERT_REQUIRE_VISION=1: here a missing vision extra fails the run instead of skipping tests/vision.
test: $(TEST_STAMP)
	MMBERT_REQUIRE_VISION=1 $(TEST_PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_models.py

bench-extract: $(TEST_STAMP)
	$(TEST_PY) benchmarks/bench_extract.py

clean:
	rm -rf $(VENV) $(TEST_VENV) .pytest_cache build src/*.egg-info
