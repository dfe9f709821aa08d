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
from solver.footprint import Workload
from solver.frontier import frontier_table

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
from solver.plots import plot_devices_needed

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
