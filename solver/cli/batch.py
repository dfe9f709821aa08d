"""``cachepart batch``: solve every combination of models, device counts, capacities and
methods in parallel worker processes, resumably, into DIR/results.csv and results.parquet."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..core.errors import InvalidInputError
from ..hardware.footprint import DTYPE_BYTES, Workload
from .args import csv_items
from .exit_codes import ExitCode

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("batch", help="solve a sweep of combinations into DIR/results.*")
    p.add_argument("--sweep", metavar="YAML", help="a sweep file (instead of the lists below)")
    p.add_argument("--models", help="comma-separated MODELs (zoo names or files)")
    p.add_argument("--devices", help="comma-separated device counts, e.g. 4,8,16")
    p.add_argument("--capacities", help="comma-separated capacities: tiers (hbm,l2) or sizes")
    p.add_argument("--methods", default="greedy,dp,ilp", help="comma-separated methods")
    p.add_argument("--device", default="h100-sxm")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--phase", choices=["prefill", "decode"], default="prefill")
    p.add_argument("--dtype", choices=list(DTYPE_BYTES), default="bf16")
    p.add_argument("--granularity", choices=["block", "op"], default="block")
    p.add_argument("--memory-model", choices=["additive", "peak"], default="additive")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per solve")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(handler=_run)
    return p


def _sweep(args: argparse.Namespace) -> Any:
    from ..analysis.batch import Sweep, load_sweep

    if args.sweep:
        given = [n for n in ("models", "devices", "capacities") if getattr(args, n)]
        if given:
            raise InvalidInputError("give either --sweep or the lists, not both", field=given[0])
        return load_sweep(args.sweep)
    missing = [n for n in ("models", "devices", "capacities") if not getattr(args, n)]
    if missing:
        raise InvalidInputError("required unless --sweep is given", field=missing[0])
    try:
        devices = tuple(int(v) for v in csv_items(args.devices, "devices"))
    except ValueError:
        raise InvalidInputError(f"expected whole numbers like 4,8,16, got {args.devices!r}",
                                field="devices") from None
    workload = Workload(batch=args.batch, seq_len=args.seq, phase=args.phase,
                        weight_dtype=args.dtype, activation_dtype=args.dtype)
    return Sweep(models=csv_items(args.models, "models"), devices=devices,
                 capacities=csv_items(args.capacities, "capacities"),
                 methods=csv_items(args.methods, "methods"), device=args.device, workload=workload,
                 granularity=args.granularity, memory_model=args.memory_model,
                 time_limit_s=args.time_limit)


def _run(args: argparse.Namespace) -> int:
    from ..analysis.batch import run_sweep

    sweep = _sweep(args)
    if args.workers < 1:
        raise InvalidInputError(f"must be >= 1, got {args.workers}", field="workers")
    last = [0.0]

    def progress(done: int, total: int, elapsed: float) -> None:
        now = time.perf_counter()
        if args.quiet or (now - last[0] < 0.5 and done != total):
            return
        last[0] = now
        width = 30
        filled = int(width * done / total) if total else width
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:6.1f}s",
              end="" if done != total else "\n", file=sys.stderr, flush=True)

    table = run_sweep(sweep, args.out, workers=args.workers, progress=progress)
    counts = table["status"].value_counts().to_dict()
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    print(f"{len(table)} solves ({summary}) written to {args.out}/results.csv and results.parquet")
    return ExitCode.OK
