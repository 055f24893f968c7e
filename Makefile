# Every target creates or reuses .venv and installs what it needs; only Python (>= 3.10) and pip are assumed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.featviz-installed
PYTEST_ARGS ?= -n 2

.PHONY: chromium venv test test-slow lint demo bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	touch $(STAMP)

venv: $(STAMP)

# The report's browser test needs Debian's headless Chromium; installed when missing and apt is usable (root).
chromium:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	fi

test: $(STAMP) chromium
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pytest_featviz tests benchmarks examples
	$(VENV)/bin/ruff format --check pytest_featviz tests benchmarks examples
	$(VENV)/bin/mypy

# The demo: the example suite passes against its committed goldens, then runs again with a deliberate preprocessing
# bug (FEATVIZ_DEMO_BREAK=1 skips the ImageNet normalization). That second run is EXPECTED to fail its tests (exit
# status 1); the target only fails if it does not (the bug went unnoticed) or if pytest itself broke (status > 1).
demo: $(STAMP)
	@echo "== featviz demo 1/2: examples/ against the goldens committed under golden/examples/ (expect: all pass)"
	$(PY) -m pytest examples -p no:cacheprovider -q
	@echo
	@echo "== featviz demo 2/2: the same suite with FEATVIZ_DEMO_BREAK=1, i.e. the normalization step skipped"
	@echo "== (expect: every snapshot test FAILS with a feature drift; this failure is the point of the demo)"
	@FEATVIZ_DEMO_BREAK=1 $(PY) -m pytest examples -p no:cacheprovider -q --tb=short; status=$$?; \
	echo; \
	if [ $$status -ne 1 ]; then \
		echo "featviz demo: the drift run exited with status $$status, expected 1 (tests failed on drift)"; exit 1; \
	fi; \
	echo "featviz demo: the drift run failed as intended: the missing normalization was caught."; \
	echo "  What to look at:"; \
	echo "  - the failure messages above: 'drift starts at layer ...' names the first drifted layer in forward"; \
	echo "    order, then the worst channels with their SSIM against the threshold"; \
	echo "  - the report: featviz-report/index.html (golden / current / diff mosaics of every drifted layer)"; \
	echo "  - the goldens it compared with: golden/examples/ (one PNG mosaic per layer + snapshot.json)"; \
	echo "  Nothing under golden/ was changed: check mode never writes goldens."

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Performance figures of docs/performance.md (issue #6); about 6 minutes on 2 cores. Each script prints its ratios.
bench: $(STAMP)
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/ssim_speed.py
	$(PY) benchmarks/golden_size.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/detection.py
	$(PY) benchmarks/detection_text.py

clean:
	rm -rf featviz-report site dist build .pytest_cache .mypy_cache .ruff_cache
