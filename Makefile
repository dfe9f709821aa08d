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

DEMO := paper-dense-16l --batch 128 --seq 10000 --dtype bf16 --device h100-sxm --devices 16

demo: $(STAMP)
	$(VENV)/bin/cachepart compare $(DEMO) --capacity hbm
	@echo
	@echo "The same model against the H100's 50 MiB L2 (exit code 3 expected: infeasible):"
	@$(VENV)/bin/cachepart solve $(DEMO) --capacity l2; test $$? -eq 3

test: $(STAMP)
	$(VENV)/bin/ruff check solver models tests benchmarks notebooks/build.py examples
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_solvers.py

clean:
	rm -rf $(VENV) build *.egg-info
