# Every target creates or reuses .venv and installs what it needs; only Python (>= 3.10) and pip are assumed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.featviz-installed
PYTEST_ARGS ?=

.PHONY: venv test test-slow lint demo bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pytest_featviz tests benchmarks examples
	$(VENV)/bin/ruff format --check pytest_featviz tests benchmarks examples
	$(VENV)/bin/mypy

clean:
	rm -rf featviz-report site dist build .pytest_cache .mypy_cache .ruff_cache
