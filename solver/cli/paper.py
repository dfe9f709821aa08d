"""``cachepart paper``: the paper's 16 x H100 experiment, reproduced, with its contradictions."""

from __future__ import annotations

import argparse
import json

from .args import csv_items
from .exit_codes import ExitCode
from .tables import format_table

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("paper", help="reproduce the paper's 16 x H100 experiment")
    p.add_argument("--model", default="paper-dense-16l",
                   help="paper-dense-16l (as stated, default) or paper-dense-30b (30B rebuilt)")
    p.add_argument("--micro-batch", type=int, default=8,
                   help="sequences per micro-batch of the batch of 128 (default 8: 16 micro-batches)")
    p.add_argument("--methods", default="greedy,dp,ilp", help="layer-wise methods to run")
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from ..experiments.paper import PAPER_CLAIMS, run_paper

    methods = csv_items(args.methods, "methods")
    report = run_paper(args.model, args.micro_batch, methods, time_limit_s=args.time_limit)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return ExitCode.OK
    wl = report.workload
    print(f"{report.model}: {report.params_computed:,} parameters computed"
          + (f" ({report.params_declared:,} declared)" if report.params_declared else ""))
    print(f"workload: batch {wl['batch']} x seq {wl['seq_len']} {wl['phase']}, micro-batch "
          f"{wl['micro_batch']}; cluster {report.cluster['name']}")
    print(f"L2-resident deployment ({report.l2_capacity_bytes:,} B per device): "
          f"{'feasible' if report.l2_feasible else 'infeasible'}")
    rows = []
    for s in report.scenarios:
        rows.append({"layout": s.name, "devices": s.devices, "stages": s.stages,
                     "bottleneck_ms": None if s.bottleneck_s is None else s.bottleneck_s * 1e3,
                     "tokens/s (batch)": s.tokens_per_s, "tokens/s (steady)": s.steady_tokens_per_s,
                     "TPOT paper ms": s.tpot_paper_ms, "bubble": s.bubble_fraction,
                     "status": s.status})
    rows.append({"layout": "paper: baseline", "tokens/s (batch)": PAPER_CLAIMS["baseline_tokens_per_s"],
                 "TPOT paper ms": PAPER_CLAIMS["baseline_tpot_ms"], "status": "claimed"})
    rows.append({"layout": "paper: layer-wise", "tokens/s (batch)": PAPER_CLAIMS["layerwise_tokens_per_s"],
                 "TPOT paper ms": PAPER_CLAIMS["layerwise_tpot_ms"], "status": "claimed"})
    print(format_table(rows, float_format=lambda v: f"{v:,.4g}", left=("layout",)))
    print("\nWhat does not hold:")
    for line in report.contradictions:
        print(f"- {line}")
    return ExitCode.OK
