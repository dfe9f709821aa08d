# Two entry points: `make demo` (the main job on a built-in default) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@date +%s > .setup-start
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[torch,dev,hf]'
	@echo $$(( $$(date +%s) - $$(cat .setup-start) )) > $(VENV)/.setup-seconds; rm -f .setup-start
	touch $(STAMP)

DEMO_PLAN := results/demo-tiny-llama.plan.json
DEMO_ENGINE_PLAN := results/demo-llama3-8b-vllm.plan.json
DEMO_CKPT := results/demo-tiny-hf-llama
DEMO := paper-dense-16l --batch 128 --seq 10000 --dtype bf16 --device h100-sxm --devices 16

demo: $(STAMP)
	@echo "Set-up: $$(cat $(VENV)/.setup-seconds 2>/dev/null || echo '?') s to create .venv and install (once; later runs reuse it)."
	@echo
	@echo "1. Llama-3-8B decode on 8 H100s, only the splits vLLM can take: the exact methods agree,"
	@echo "   the paper's greedy fills one device and vLLM's own even split is slower than the optimum"
	@echo "   (the head reads its whole matrix every token)."
	$(VENV)/bin/cachepart compare llama3-8b --batch 8 --micro-batch 1 --seq 4096 --devices 8 \
		--capacity hbm --engine vllm --phase decode
	@echo
	@echo "2. The optimum handed to vLLM, in the format vLLM reads:"
	$(VENV)/bin/cachepart solve llama3-8b --batch 8 --micro-batch 1 --seq 4096 --devices 8 \
		--capacity hbm --engine vllm --phase decode -q -o $(DEMO_ENGINE_PLAN)
	$(VENV)/bin/cachepart export $(DEMO_ENGINE_PLAN) --to vllm
	@echo
	@echo "3. The paper's experiment as stated, and what does not hold in it:"
	$(VENV)/bin/cachepart paper
	@echo
	@echo "   The same model against the H100's 50 MiB L2 (exit code 3 expected: infeasible):"
	@$(VENV)/bin/cachepart solve $(DEMO) --capacity l2; test $$? -eq 3
	@echo
	@echo "4. A plan small enough for this CPU, run on 2 gloo ranks and checked against one process:"
	$(VENV)/bin/cachepart solve tiny-llama --batch 4 --micro-batch 2 --seq 16 --dtype fp32 \
		--devices 2 --capacity 800kB --method ilp -o $(DEMO_PLAN)
	$(VENV)/bin/cachepart run $(DEMO_PLAN) --nproc 2 --verify
	@echo
	@echo "5. A tiny Hugging Face checkpoint with seeded random weights, built here (nothing is fetched),"
	@echo "   planned on 2 devices, run on 2 CPU ranks with its own weights against transformers,"
	@echo "   then 8 tokens generated greedily through the stages:"
	$(PY) examples/tiny_checkpoint.py llama $(DEMO_CKPT)
	$(VENV)/bin/cachepart solve $(DEMO_CKPT) --batch 4 --micro-batch 2 --seq 16 --dtype fp32 \
		--devices 2 --capacity 150kB -o $(DEMO_CKPT).plan.json
	$(VENV)/bin/cachepart run $(DEMO_CKPT).plan.json --checkpoint $(DEMO_CKPT) --verify --generate 8

test: $(STAMP)
	$(VENV)/bin/ruff check solver models tests benchmarks notebooks/build.py examples
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_solvers.py
	$(PY) benchmarks/bench_scaling.py
	$(PY) benchmarks/bench_variants.py
	$(PY) benchmarks/bench_cluster.py
	$(PY) benchmarks/bench_startup.py

clean:
	rm -rf $(VENV) build *.egg-info
