"""``cachepart plot plan.json``: memory, latency and Gantt chart of a plan as a PNG."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInputError
from ..plan import load_plan

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot", help="draw a plan: memory, latency, pipeline Gantt chart")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")
    p.add_argument("--output", "-o", default=None, help="PNG path (default: PLAN with .png)")
    p.add_argument("--microbatches", type=int, default=None,
                   help="micro-batches in the Gantt chart (default: from the workload)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..plots import plot_plan

    try:
        plan = load_plan(args.plan)
        out = args.output or str(args.plan).removesuffix(".json") + ".png"
        path = plot_plan(plan, out, args.microbatches)
    except InvalidInputError as exc:
        print(f"cachepart: error: {exc}", file=sys.stderr)
        return 2
    print(f"figure written to {path}")
    return 0
