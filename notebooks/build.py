"""Write the research notebooks from the cell sources below (so they stay reviewable as code),
and optionally execute them in place: ``python notebooks/build.py [--execute]``.

Each notebook reads ``CACHEPART_NB_SIZE`` (``small``, the default, or ``full``) and writes its
tables and figures under ``CACHEPART_RESULTS`` (default: ``results/`` at the repository root).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
from pathlib import Path

import pandas as pd

SIZE = os.environ.get("CACHEPART_NB_SIZE", "small")
HERE = Path.cwd()
ROOT = Path(os.environ.get("CACHEPART_ROOT", HERE.parent if HERE.name == "notebooks" else HERE))
RESULTS = Path(os.environ.get("CACHEPART_RESULTS", ROOT / "results"))
RESULTS.mkdir(parents=True, exist_ok=True)
pd.set_option("display.width", 160)
print(f"size={SIZE}, results in {RESULTS}")"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01_methods"] = [
    ("md", """\
# 01 The methods compared

Every method on the same problems: the exact ones (the ILP on each installed backend, the dynamic
program, the parametric search) must agree to the last bit on the bottleneck; the paper's greedy
and the two naive baselines are measured against that optimum. Random chains carry capacity and
transfer costs (activations vary twentyfold, so a later cut can cost more than an earlier one);
zoo models carry the roofline latencies of an H100 SXM."""),
    ("code", SETUP),
    ("code", """\
from solver import SolveOptions, compare, compare_table, random_problem

sizes = [(20, 4), (60, 8), (120, 12)] if SIZE == "small" else [(50, 8), (200, 16), (1000, 64)]
seeds = range(3) if SIZE == "small" else range(10)
rows = []
for n, k in sizes:
    for seed in seeds:
        problem = random_problem(seed, n, max_stages=k)
        table = compare_table(problem, compare(problem, options=SolveOptions(time_limit_s=30)))
        table["n"], table["K"], table["seed"] = n, k, seed
        rows.append(table)
random_table = pd.concat(rows, ignore_index=True)
random_table.to_csv(RESULTS / "methods_random.csv", index=False)
summary = random_table.groupby(["n", "method"]).agg(
    ratio_to_best=("ratio_to_best", "mean"), worst_ratio=("ratio_to_best", "max"),
    solve_s=("solve_s", "median"), optimal=("status", lambda s: (s == "optimal").mean()))
summary"""),
    ("code", """\
exact = random_table[random_table["method"].str.startswith(("ilp", "dp", "parametric"))]
spread = exact.groupby(["n", "K", "seed"])["max_stage_latency_s"].agg(lambda v: v.max() - v.min())
print("largest disagreement between exact methods:", spread.max())
assert spread.max() == 0.0"""),
    ("code", """\
from solver import Workload, load_model, problem_from_graph

zoo = ["gpt2", "llama2-7b", "mixtral-8x7b", "resnet50"] if SIZE == "small" else \\
    ["gpt2", "gpt2-xl", "llama2-7b", "llama2-70b", "mixtral-8x7b", "llama3.1-405b", "resnet50"]
rows = []
for name in zoo:
    graph = load_model(name, Workload(batch=8, seq_len=2048), granularity="op").graph
    problem = problem_from_graph(graph, 80 * 10**9, 16)
    table = compare_table(problem, compare(problem, options=SolveOptions(time_limit_s=30)))
    table["model"] = name
    rows.append(table)
zoo_table = pd.concat(rows, ignore_index=True)
zoo_table.to_csv(RESULTS / "methods_zoo.csv", index=False)
zoo_table.pivot_table(index="model", columns="method", values="ratio_to_best")"""),
    ("code", """\
from solver.analysis import plot_solve_times

timing = random_table.groupby(["method", "n"], as_index=False)["solve_s"].median()
path = plot_solve_times(timing.rename(columns={"solve_s": "seconds"}),
                        RESULTS / "methods_solve_time.png")
print(path)"""),
    ("md", """\
The paper's greedy minimises the number of devices, not the bottleneck: on the zoo at 80 GB it
often packs the whole model on a few devices and leaves the rest idle, so its bottleneck is many
times the optimum. Equal layer counts and weight-balanced stages come closer but ignore the
latency of each layer and the cost of each cut."""),
]

NOTEBOOKS["02_paper"] = [
    ("md", """\
# 02 The paper's experiment

The paper's setting as stated: a dense 16-layer model (hidden 4096, 32 heads x 128, MLP 16384,
BF16, declared 30B parameters), batch 128 x sequence 10000, 16 H100 SXM in two nodes of 8, the
baseline TP=8 x PP=2, and its claims of 12,800 -> 15,360 tokens/s and 0.078 -> 0.065 ms per token.
Every layout below runs through the same cost model (a roofline per operation class with the
H100's fitted efficiencies and kernel overhead, README "Calibration"), the same cluster links and
the same GPipe simulator."""),
    ("code", SETUP),
    ("code", """\
from solver.experiments import PAPER_CLAIMS, run_paper

methods = ("greedy", "dp", "ilp")
stated = run_paper("paper-dense-16l", methods=methods)
rebuilt = run_paper("paper-dense-30b", methods=methods)
rows = []
for report in (stated, rebuilt):
    for s in report.scenarios:
        rows.append({"model": report.model, **{k: v for k, v in vars(s).items() if k != "note"}})
table = pd.DataFrame(rows)
table.to_csv(RESULTS / "paper_layouts.csv", index=False)
table[["model", "name", "devices", "stages", "bottleneck_s", "tokens_per_s",
       "steady_tokens_per_s", "tpot_paper_ms", "bubble_fraction"]]"""),
    ("code", """\
for report in (stated, rebuilt):
    print(report.model)
    for line in report.contradictions:
        print(" -", line)"""),
    ("code", """\
import json

(RESULTS / "paper.json").write_text(json.dumps(stated.to_dict(), indent=2))
claims = pd.DataFrame([
    {"layout": "baseline TP=8 x PP=2", "paper tokens/s": PAPER_CLAIMS["baseline_tokens_per_s"],
     "predicted (stated model)": stated.scenario("baseline TP=8 x PP=2").tokens_per_s,
     "predicted (30B rebuilt)": rebuilt.scenario("baseline TP=8 x PP=2").tokens_per_s},
    {"layout": "layer-wise", "paper tokens/s": PAPER_CLAIMS["layerwise_tokens_per_s"],
     "predicted (stated model)": stated.scenario("layer-wise HBM (ilp)").tokens_per_s,
     "predicted (30B rebuilt)": rebuilt.scenario("layer-wise HBM (ilp)").tokens_per_s},
])
claims"""),
    ("md", """\
Reading: no layer of this model fits an H100's 50 MiB L2 (one block's weights alone are 384 MiB,
and one sequence's activation at 10,000 tokens is 78 MiB), so the paper's "each partition in
L2" cannot be what was measured; the layer-wise layouts above keep the layers in HBM. The
declared 30B parameters are 3.2B by the stated dimensions, and the paper's TPOT is the reciprocal
of its throughput. Whether layer-wise pipelining beats TP=8 x PP=2 depends on what is measured:
for one batch of 16 micro-batches the 16-stage pipeline pays a bubble of about half its time, so
it is barely ahead for the stated model and behind for the 30B reconstruction, while a pipeline
kept full favours it in both. Neither reading reproduces the claimed 12,800 -> 15,360 tokens/s,
which is 6 to 49 times below what the cost model predicts for this prefill (6 to 9 times for
the 30B reconstruction, 42 to 49 times for the model as stated)."""),
]

NOTEBOOKS["03_capacity_frontier"] = [
    ("md", """\
# 03 The capacity frontier

How many devices does each zoo model need when every stage must fit a memory tier of an H100
SXM: its shared memory in total (`smem`), its L2 (`l2`, 50 MiB), or its HBM (`hbm`, 80 GiB)?
Greedy packing gives the fewest devices for a capacity (the reach of each start only grows with
the start), so the numbers are exact for the additive memory model. A missing number means some
single layer does not fit the tier however many devices are used: at that granularity, the
tier cannot hold the model."""),
    ("code", SETUP),
    ("code", """\
from models.zoo import zoo_names
from solver import Workload, frontier_table

if SIZE == "small":
    models = ["tiny-llama", "gpt2", "resnet50", "vit-b16", "llama2-7b", "paper-dense-16l"]
    dtypes = ["bf16", "int4"]
else:
    models = zoo_names()
    dtypes = ["bf16", "fp8", "int4"]
workload = Workload(batch=1, seq_len=512)  # one sequence of 512 tokens in flight per stage
table = frontier_table(models, ["smem", "l2", "hbm"], dtypes, workload=workload)
table.to_csv(RESULTS / "capacity_frontier.csv", index=False)
table.pivot_table(index=["model", "granularity"], columns=["tier", "dtype"],
                  values="devices_needed", aggfunc="min")"""),
    ("code", """\
from solver.analysis import plot_devices_needed

block = table[(table["granularity"] == "op") & (table["dtype"] == "bf16")]
path = plot_devices_needed(block.dropna(subset=["devices_needed"]), RESULTS / "capacity_frontier.png")
print(path)"""),
    ("md", """\
What the table says: a 7B decoder cannot be held in on-chip memory at block or operator
granularity: a single operator (an MLP's three matrices, the LM head) is several times larger
than the 50 MiB L2, even in int4. Only the small vision models fit on-chip tiers. Splitting a
matrix across devices (tensor parallelism) is what brings a layer under an on-chip capacity."""),
    ("code", """\
largest = table.groupby(["model", "dtype"])["largest_layer_bytes"].min() / 2**20
largest.rename("smallest possible largest layer (MiB)").to_frame()"""),
]


NOTEBOOKS["04_engines"] = [
    ("md", """\
# 04 Engines: their own split against the best split they can be given

vLLM, SGLang and TensorRT-LLM each split a model's decoder blocks over the pipeline ranks when
told nothing (n // P each, the remainder to the ranks before the last, the last ranks or the
first ranks), keep the embedding with the first rank's blocks and the head with the last's, and
keep part of each device for themselves (vLLM 90%; SGLang 88% down to 79% by TP size).
Megatron splits the blocks evenly (the embedding and the loss may also be stages of their own
in its layout); DeepSpeed's default `parameters` method balances parameter bytes over
[embed, blocks..., head]. Here, for
each model, device count and engine: the engine's default split, the engine-shaped latency
optimum (`solve --engine E`) and the engine-shaped KV-capacity optimum (`solve --engine E
--objective kv-capacity`), all evaluated by the same formulas on H100 SXM devices. The workload
is decode: 64 sequences at a 4,096-token context, micro-batches of 8; `kv_capacity_tokens` is
the KV cache the tightest stage's free memory holds beyond that (negative: the split does not
fit)."""),
    ("code", SETUP),
    ("code", """\
from solver import Workload
from solver.analysis import engine_rows, engine_table

models = ["llama3-8b", "mixtral-8x7b", "llama3-70b"]
devices = [2, 4, 8]
engines = ["vllm", "sglang", "trtllm", "megatron", "deepspeed"]
workload = Workload(batch=64, seq_len=4096, phase="decode", micro_batch=8)
rows = [row for model in models for p in devices for engine in engines
        for row in engine_rows(model, engine, p, workload=workload)]
table = engine_table(rows)
table.to_csv(RESULTS / "engines.csv", index=False)
table[["model", "engine", "devices", "plan", "blocks_per_stage", "fits", "tokens_per_s",
       "kv_capacity_tokens", "speedup_vs_default", "kv_vs_default"]]"""),
    ("md", """\
What to look for. A default split that does not fit (`fits` False) leaves no engine-shaped plan
when the optima are missing too: the engine needs more devices or tensor parallelism. Where the
latency optimum differs from the default, it shortens the bottleneck by moving blocks off the
first and last ranks (they also carry the embedding and the head), and the middle ranks' extra
blocks cost KV tokens: with tens of GiB free on every rank, a stage's KV capacity is about its
free memory over its block count, so the even split is what the KV objective chooses. DeepSpeed's
parameter balance lands on the latency optimum here (a decode step's time follows the weights
it reads), and then the KV objective holds more tokens than it. The summary below counts, per
model and engine, how often each optimum beats the default on its own objective."""),
    ("code", """\
faster = table[table["plan"] == "latency"].groupby(["model", "engine"]).agg(
    cases=("devices", "size"),
    faster_than_default=("speedup_vs_default", lambda s: int((s > 1 + 1e-9).sum())),
    best_speedup=("speedup_vs_default", "max"),
    least_kv_ratio=("kv_vs_default", "min"))
roomier = table[table["plan"] == "kv-capacity"].groupby(["model", "engine"]).agg(
    more_kv_than_default=("kv_vs_default", lambda s: int((s > 1 + 1e-9).sum())),
    best_kv_ratio=("kv_vs_default", "max"))
faster.join(roomier)"""),
    ("md", """\
## Training: Megatron's even split against the optimum, Llama-3-70B on 16 H100

One step of 64 sequences of 4,096 tokens, micro-batches of one sequence, 1F1B over up to 16
pipeline stages (one H100 SXM each, no tensor or data parallelism; every cut priced at NVLink:
training plans do not take a two-node cluster yet, so the cut between the nodes is not priced
at InfiniBand), under each precision (mixed: bf16
weights and gradients with fp32 master weights and Adam state, 16 bytes a parameter; bf16: 8)
and activation recomputation (Korthikanti et al. 2022; with fused attention, selective
recompute saves nothing more). Megatron splits the 80 blocks evenly (5 a stage, the embedding
on the first and the head on the last); the optimum is `solve --phase train --engine
megatron`. `fits` False is an out-of-memory at the step's peak."""),
    ("code", """\
from solver.analysis import TRAIN_COLUMNS, train_rows

cases = [("mixed", "none"), ("mixed", "full"), ("bf16", "selective"), ("bf16", "full")]
train = []
for precision, recompute in cases:
    wl = Workload(batch=64, micro_batch=1, seq_len=4096, phase="train", precision=precision,
                  recompute=recompute)
    train += train_rows("llama3-70b", 16, wl, engine="megatron")
training = pd.DataFrame([vars(r) for r in train])
training[TRAIN_COLUMNS].to_csv(RESULTS / "engines_training.csv", index=False)
training[["plan", "precision", "recompute", "blocks_per_stage", "fits",
          "max_stage_memory_bytes", "step_s", "tokens_per_s", "bubble_fraction", "mfu"]]"""),
    ("code", """\
# memory per stage (GiB) where both fit: 1F1B's first stage keeps 16 micro-batches' stashes,
# the last one
fit = training[(training["precision"] == "bf16") & (training["recompute"] == "full")]
pd.DataFrame({row.plan: pd.Series([round(b / 2**30, 1) for b in row.stage_memory_bytes])
              for row in fit.itertuples()}).T  # the optimum may use fewer stages"""),
    ("md", """\
Reading it: at 16 bytes a parameter the model state nearly fills these 16 devices, and no split
leaves room for the stages' buffers and stashes (a 70B model needs its optimizer state sharded
over data-parallel ranks, or fewer bytes a parameter); in bf16 with full recomputation both
fit, and the optimum moves blocks off the first stage (the embedding and the most stashes) and
off the last (the LM head's forward and backward). Its bottleneck is a stage of six blocks,
which 14 stages reach as well as 16: the tie goes to the fewest stages, which leaves two
devices free, shrinks the bubble and shortens the step."""),
    ("md", """\
Handing a plan to the engine: `cachepart export` prints the engine's knob for the plan (here the
environment variable and flags vLLM reads)."""),
    ("code", """\
from solver.cli import main

plan_path = RESULTS / "llama3-8b_vllm_8.json"
assert main(["solve", "llama3-8b", "--devices", "8", "--capacity", "hbm", "--engine", "vllm",
             "--phase", "decode", "--batch", "64", "--micro-batch", "8", "--seq", "4096",
             "-q", "-o", str(plan_path)]) == 0
assert main(["export", str(plan_path), "--to", "vllm"]) == 0"""),
]


def build(execute: bool = False) -> list[Path]:
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        path = HERE / f"{name}.ipynb"
        if execute:
            from nbclient import NotebookClient

            NotebookClient(nb, timeout=600, kernel_name="python3",
                           resources={"metadata": {"path": str(HERE)}}).execute()
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="run them and keep the outputs")
    args = parser.parse_args()
    os.environ.setdefault("CACHEPART_NB_SIZE", "small")
    for p in build(args.execute):
        print(p)
