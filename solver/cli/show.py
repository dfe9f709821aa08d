"""``cachepart show plan.json``: a plan as a per-stage table."""

from __future__ import annotations

import argparse

from .exit_codes import ExitCode

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("show", help="print a plan JSON as a per-stage table")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..plan import load_plan, verify_plan
    from .solve import stage_table

    plan = load_plan(args.plan)
    verify_plan(plan, args.plan)
    print(stage_table(plan))
    return ExitCode.OK
