"""``cachepart plot plan.json``: memory, latency and Gantt chart of a plan as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import InvalidInputError
from ..core.files import check_output_path
from .exit_codes import ExitCode

__all__ = ["FORMATS", "register"]

FORMATS = (".png", ".pdf", ".svg")
MAX_GANTT = 1024
"""Bars beyond this make a chart nobody can read, and a slow one."""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plot", help="draw a plan: memory, latency, pipeline Gantt chart")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")
    p.add_argument("--output", "-o", default=None, help="PNG path (default: PLAN with .png)")
    p.add_argument("--microbatches", type=int, default=None,
                   help="micro-batches in the Gantt chart (default: from the workload)")
    p.set_defaults(handler=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from ..analysis.plots import plot_plan
    from ..plan import load_plan

    if args.output is not None and not args.output.strip():
        raise InvalidInputError("empty path", field="output")
    out = Path(args.output or str(args.plan).removesuffix(".json") + ".png")
    check_output_path(str(out), "output")  # before the work, and no folder is made
    if out.suffix.lower() not in FORMATS:
        raise InvalidInputError(f"{str(out)!r}: the figure format comes from the file name's "
                                f"ending, one of {', '.join(FORMATS)}", field="output")
    if args.microbatches is not None and not 1 <= args.microbatches <= MAX_GANTT:
        raise InvalidInputError(f"must be in 1..{MAX_GANTT} for a chart, got {args.microbatches}",
                                field="microbatches")
    plan = load_plan(args.plan)
    try:
        path = plot_plan(plan, out, args.microbatches)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{args.plan}: {exc}") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot write {out} ({exc.strerror or exc})",
                                field="output") from None
    print(f"figure written to {path}")
    return ExitCode.OK
