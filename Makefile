# Two entry points: `make demo` (the main job on a built-in default) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[torch,dev]'
	touch $(STAMP)

DEMO_MODEL := examples/paper-dense-16l.chain.json

demo: $(STAMP)
	$(VENV)/bin/cachepart compare $(DEMO_MODEL) --devices 16 --capacity 80GB
	@echo
	@echo "The same model against a 50 MB L2 cache (exit code 3 expected: infeasible):"
	@$(VENV)/bin/cachepart solve $(DEMO_MODEL) --devices 16 --capacity 50MB; test $$? -eq 3

test: $(STAMP)
	$(VENV)/bin/ruff check solver models tests benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_solvers.py

clean:
	rm -rf $(VENV) build *.egg-info
