"""The ``cachepart`` command line. Exit codes: 0 plan written or shown; 2 bad input;
3 infeasible (with a one-line diagnosis); 4 solver failure."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from .algorithms import DEFAULT_TIME_LIMIT_S, ILP_BACKENDS, METHODS, ProgressEvent, SolveOptions
from .compare import compare, compare_table
from .errors import CachepartError, InvalidInputError, SolverError
from .plan import Plan, build_plan, load_plan
from .problem import MemoryModel, Problem
from .solve import solve
from .sources import load_model
from .status import Status
from .units import format_bytes, parse_bytes

__all__ = ["EXIT_BAD_INPUT", "EXIT_INFEASIBLE", "EXIT_OK", "EXIT_SOLVER", "main"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_SOLVER = 0, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"cachepart: error: {message} (see --help)\n")


class _Progress:
    """Prints the latest best objective and bound to stderr, once a second, after one second."""

    def __init__(self, stream: TextIO, label: str, enabled: bool = True) -> None:
        self.stream, self.label, self.enabled = stream, label, enabled
        self.latest: ProgressEvent | None = None
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __call__(self, event: ProgressEvent) -> None:
        self.latest = event

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            event, elapsed = self.latest, time.perf_counter() - self.start
            best = "-" if event is None or event.objective is None else f"{event.objective:.6g} s"
            bound = "-" if event is None or event.bound is None else f"{event.bound:.6g} s"
            print(f"[{self.label} {elapsed:5.1f}s] best {best}  bound {bound}",
                  file=self.stream, flush=True)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _add_problem_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="chain JSON file (design.md format)")
    p.add_argument("--devices", "-k", type=int, required=True, metavar="K",
                   help="devices available: the most stages a plan may use")
    p.add_argument("--capacity", "-c", required=True, metavar="C",
                   help="bytes per device: a count (52428800) or with a unit (50MiB, 48MB, 80GB)")
    p.add_argument("--memory-model", choices=[m.value for m in MemoryModel],
                   default=MemoryModel.ADDITIVE.value,
                   help="additive: sum of weights+activations+buffers (the paper's, default); "
                        "peak: weights plus the largest live input+output+buffer")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, metavar="S",
                   help=f"seconds each solve may take (default {DEFAULT_TIME_LIMIT_S:g}); a "
                        "time-limited ILP answer is reported as feasible with its gap")
    p.add_argument("--seed", type=int, default=0, help="solver random seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="solver threads (default 2)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cachepart", description=(
        "Partition a model's layers into contiguous stages, one per device, so each stage fits "
        "the device's memory and the slowest stage is as fast as possible."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("solve", help="solve one partition and write the plan JSON")
    _add_problem_args(p)
    p.add_argument("--method", "-m", choices=list(METHODS), default="ilp",
                   help="partitioning method (default ilp)")
    p.add_argument("--solver", choices=list(ILP_BACKENDS), default="cpsat",
                   help="ILP backend (default cpsat)")
    p.add_argument("--output", "-o", metavar="PLAN", help="write the plan JSON here")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or table")

    p = sub.add_parser("compare", help="run every method and print one table")
    _add_problem_args(p)
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated methods (default all: {','.join(METHODS)})")
    p.add_argument("--csv", metavar="PATH", help="also save the table as CSV")

    p = sub.add_parser("show", help="print a plan JSON as a per-stage table")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")
    return parser


def _problem(args: argparse.Namespace) -> tuple[Any, Problem]:
    graph = load_model(args.model)
    capacity = parse_bytes(args.capacity, "--capacity")
    if args.devices < 1:
        raise InvalidInputError(f"--devices: must be >= 1, got {args.devices}")
    if args.workers < 1:
        raise InvalidInputError(f"--workers: must be >= 1, got {args.workers}")
    return graph, Problem.from_graph(graph, capacity, args.devices, args.memory_model)


def _options(args: argparse.Namespace, **extra: Any) -> SolveOptions:
    return SolveOptions(time_limit_s=args.time_limit, seed=args.seed, workers=args.workers,
                        **extra)


def _stage_table(plan: Plan) -> str:
    rows = []
    for st in plan.stages:
        first, last = st.layers[0], st.layers[-1]
        rows.append({
            "stage": st.index,
            "layers": first if first == last else f"{first} .. {last}",
            "count": len(st.layers),
            "memory": format_bytes(st.memory_bytes),
            "headroom": format_bytes(st.headroom_bytes),
            "compute_s": st.compute_s,
            "transfer_s": st.transfer_in_s,
            "latency_s": st.latency_s,
        })
    bottleneck = plan.objective["max_stage_latency_s"]
    sol = plan.solver
    gap = "" if sol.gap is None else f", gap {sol.gap:.2%}"
    tps = plan.predicted.get("tokens_per_s")
    lines = [
        f"model {plan.model.name}: {plan.model.num_layers} layers on {len(plan.stages)} of "
        f"{plan.hardware.devices} devices, capacity {format_bytes(plan.hardware.capacity_bytes)} "
        f"({plan.hardware.memory_model})",
        pd.DataFrame(rows).to_string(index=False),
        f"bottleneck {bottleneck:.6g} s (stage {plan.objective['bottleneck_stage']}); "
        f"{plan.method}{'/' + sol.backend if sol.backend else ''} {sol.status.value}{gap} "
        f"in {sol.wall_s:.3g} s",
    ]
    if tps is not None:
        lines.append(f"predicted {tps:,.0f} tokens/s at steady state")
    return "\n".join(lines)


def _cmd_solve(args: argparse.Namespace) -> int:
    graph, problem = _problem(args)
    with _Progress(sys.stderr, args.method, enabled=not args.quiet) as progress:
        options = _options(args, backend=args.solver, progress=progress)
        part = solve(problem, args.method, options)
    if part.status is Status.INFEASIBLE:
        print(f"cachepart: infeasible: {part.diagnosis}", file=sys.stderr)
        return EXIT_INFEASIBLE
    plan = build_plan(graph, problem, part, time_limit_s=args.time_limit)
    if args.output:
        plan.save(args.output)
    if not args.quiet:
        print(_stage_table(plan))
        if args.output:
            print(f"plan written to {args.output}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    _, problem = _problem(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InvalidInputError(f"--methods: unknown method {unknown[0] if unknown else ''!r} "
                                f"(known: {', '.join(METHODS)})")
    with _Progress(sys.stderr, "compare") as progress:
        answers = compare(problem, methods, _options(args, progress=progress))
    table = compare_table(problem, answers)
    print(f"{problem.n} layers, {problem.max_stages} devices, capacity "
          f"{format_bytes(problem.capacity_bytes)} ({problem.memory_model.value})")
    shown = table.copy()
    shown["min_headroom_bytes"] = [format_bytes(v) if pd.notna(v) else "-"
                                   for v in shown["min_headroom_bytes"]]
    shown = shown.rename(columns={"min_headroom_bytes": "min_headroom"})
    with pd.option_context("display.max_colwidth", 70, "display.width", 200):
        print(shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"table written to {args.csv}")
    if all(p.status is Status.INFEASIBLE for _, p in answers):
        return EXIT_INFEASIBLE
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    print(_stage_table(load_plan(args.plan)))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed in one line
        return int(exc.code or 0)
    handlers = {"solve": _cmd_solve, "compare": _cmd_compare, "show": _cmd_show}
    try:
        return handlers[args.command](args)
    except InvalidInputError as exc:
        print(f"cachepart: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SolverError as exc:
        print(f"cachepart: solver error: {exc}", file=sys.stderr)
        return EXIT_SOLVER
    except CachepartError as exc:
        print(f"cachepart: error: {exc}", file=sys.stderr)
        return EXIT_SOLVER


if __name__ == "__main__":
    sys.exit(main())
