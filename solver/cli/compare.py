"""``cachepart compare``: every method on one problem, one table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..algorithms.registry import METHODS
from ..core.errors import InvalidInputError
from ..core.units import format_bytes
from .args import Progress, add_problem_args, csv_items, options_from_args, problem_from_args, warn
from .exit_codes import ExitCode
from .solve import ENGINE_NAMES

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="run every method and print one table")
    add_problem_args(p)
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated methods (default all: {','.join(METHODS)})")
    p.add_argument("--engine", choices=ENGINE_NAMES, default=None,
                   help="compare over the splits this engine can take (as solve --engine), with "
                        "the engine's own default split as a row")
    p.add_argument("--csv", metavar="PATH", help="also save the table as CSV")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..analysis.compare import compare, compare_table, unsupported
    from ..core.status import Status

    methods = csv_items(args.methods, "methods")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InvalidInputError(f"unknown method {unknown[0]!r} (known: {', '.join(METHODS)})",
                                field="methods")
    _, problem, _ = problem_from_args(args)
    default = None
    if args.engine is not None:
        from ..analysis.engines import default_partition
        from ..engines import engine_problem, get_engine

        problem = engine_problem(problem, problem.names, get_engine(args.engine))
        default = default_partition(problem, args.engine)
    skipped = unsupported(problem, methods)
    if skipped:
        extensions = ", ".join(sorted(e.value for e in problem.extensions))
        warn(f"{', '.join(skipped)}: do not model {extensions}; left out")
    refused: list[tuple[str, str]] = []
    with Progress(sys.stderr, "compare") as progress:
        answers = compare(problem, methods, options_from_args(args, progress=progress), refused)
    for label, reason in refused:
        warn(f"{label}: left out ({reason})")
    if default is not None:
        answers.append((default.method, default))
    table = compare_table(problem, answers)
    fleet = problem.fleet
    where = f"cluster {fleet.name} ({fleet.placement} placement)" if fleet is not None else \
        f"capacity {format_bytes(problem.capacity_bytes)}"
    print(f"{problem.n} layers, {problem.stage_limit if fleet else problem.max_stages} devices, "
          f"{where} ({problem.memory_model.value})")
    shown = table.copy()
    shown["min_headroom_bytes"] = [format_bytes(v) if pd.notna(v) else "-"
                                   for v in shown["min_headroom_bytes"]]
    shown = shown.rename(columns={"min_headroom_bytes": "min_headroom"})
    with pd.option_context("display.max_colwidth", 70, "display.width", 200):
        print(shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    if args.csv:
        try:
            Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.csv, index=False)
        except OSError as exc:
            raise InvalidInputError(f"cannot write {args.csv} ({exc.strerror or exc})",
                                    field="csv") from None
        print(f"table written to {args.csv}")
    if all(p.status is Status.INFEASIBLE for _, p in answers):
        from ..analysis.suggest import Situation, infeasible_message, suggest_fixes

        fixes = suggest_fixes(Situation.from_args(args, problem))  # no model kept: no rebuild
        print(f"cachepart: infeasible: {infeasible_message(answers[0][1].diagnosis, fixes)}",
              file=sys.stderr)
        return ExitCode.INFEASIBLE
    return ExitCode.OK
