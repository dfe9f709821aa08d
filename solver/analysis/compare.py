"""Run every method on one problem and tabulate the answers side by side."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from ..algorithms import ILP_BACKENDS, METHODS, SolveOptions, solve
from ..core.errors import InvalidInputError, SolverError
from ..core.partition import Partition, evaluate
from ..core.problem import Problem
from ..core.status import Status

__all__ = ["COMPARE_COLUMNS", "compare", "compare_table", "unsupported"]

COMPARE_COLUMNS = ["method", "stages", "max_stage_latency_s", "ratio_to_best",
                   "min_headroom_bytes", "status", "gap", "solve_s", "note"]


def compare(problem: Problem, methods: Sequence[str] | None = None,
            options: SolveOptions | None = None,
            skipped: list[tuple[str, str]] | None = None) -> list[tuple[str, Partition]]:
    """Solve with each method (the ILP once per installed backend); labelled answers. A method
    that does not model the problem's extensions, or refuses its size (the DP's table, the exact
    cluster searches), is left out and, with ``skipped``, listed there with its reason."""
    options = options or SolveOptions()
    answers: list[tuple[str, Partition]] = []
    refusals: list[InvalidInputError] = []
    for name in methods or list(METHODS):
        if name in METHODS and METHODS[name].refusal(problem) is not None:
            continue
        runs = [(f"ilp/{b}", dataclasses.replace(options, backend=b))
                for b, spec in ILP_BACKENDS.items() if spec.available()] \
            if name == "ilp" else [(name, options)]
        for label, opts in runs:
            try:
                answers.append((label, solve(problem, name, opts)))
            except InvalidInputError as exc:
                if exc.field != "method":
                    raise
                refusals.append(exc)
                if skipped is not None:
                    skipped.append((label, exc.reason))
    if not answers and refusals:
        # Nothing ran: the user's own choice of methods is the error, so say why.
        raise refusals[0]
    if not answers:
        raise SolverError("no method could run (no ILP backend installed?)")
    return answers


def unsupported(problem: Problem, methods: Sequence[str] | None = None) -> list[str]:
    """The methods compare() leaves out: they do not model the problem's extensions."""
    return [name for name in methods or list(METHODS)
            if name in METHODS and METHODS[name].refusal(problem) is not None]


def compare_table(problem: Problem, answers: list[tuple[str, Partition]]) -> pd.DataFrame:
    """One row per answer: quality against the best found, headroom, status and solve time."""
    feasible = [p.objective for _, p in answers if p.objective is not None]
    best = min(feasible) if feasible else None
    rows = []
    for label, part in answers:
        headroom = None
        if part.status is not Status.INFEASIBLE:
            headroom = min(c.capacity_bytes - c.memory_bytes for c in evaluate(
                problem, part.bounds, tp_degrees=part.tp_degrees, resident=part.resident,
                ranks=part.ranks))
        rows.append({
            "method": label,
            "stages": part.num_stages if part.status is not Status.INFEASIBLE else None,
            "max_stage_latency_s": part.objective,
            "ratio_to_best": (part.objective / best if part.objective is not None and best
                              else None),
            "min_headroom_bytes": headroom,
            "status": part.status.value,
            "gap": part.gap,
            "solve_s": part.wall_s,
            "note": part.diagnosis or "",
        })
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)
