"""Turning a backend's result into an answer: what every extended formulation decides alike.

- No solution and no warm start: INFEASIBLE when the backend says so, else a SolverError (exit 4:
  nothing within the time limit).
- Otherwise the answer is the better of the backend's plan and the warm start, re-evaluated in
  floating point by the caller's ``decode``.
- With an exact optimum to certify against (tensor parallelism: the exact DP; clusters: the
  exact searches), the bound is that optimum and the answer is OPTIMAL only when the backend
  proved it and it reaches the optimum: a time-limited ILP stays FEASIBLE, with gap 0 and
  ``certified_by_exact_search`` in its record when the answer is the proven optimum all the same.
- Without one (tiered residency), the bound is the backend's, made valid for its resolution, and
  the answer is OPTIMAL when the backend proved it and it is within ``TOLERANCE`` (relative) of
  that bound: a MIP proves optimality only to its feasibility tolerance (1e-6 of the time unit),
  and CP-SAT to the rounding of its scaled coefficients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core.errors import SolverError
from ...core.feasibility import diagnose
from ...core.partition import Partition, relative_gap
from ...core.problem import Problem
from ...core.status import Status
from ..base import SolveOptions
from .backends import IlpBackend
from .model import MilpResult

__all__ = ["TOLERANCE", "Decided", "infeasible", "no_solution", "settle"]

TOLERANCE = 1e-5
"""Relative distance to a valid bound within which a backend's proof counts as optimal, where
no exact certificate exists."""


@dataclass(frozen=True)
class Decided:
    """A plan of a formulation: its cuts, bottleneck, and the extension's typed decisions
    (``Partition`` fields such as ``tp_degrees`` or ``resident``)."""

    bounds: tuple[int, ...]
    objective: float
    fields: Mapping[str, Any] = field(default_factory=dict)


def no_solution(backend: IlpBackend, options: SolveOptions, result: MilpResult) -> SolverError:
    return SolverError(f"ilp ({backend.name}): no solution within {options.time_limit_s:g} s "
                       f"(backend status {result.status})")


def infeasible(problem: Problem, backend: IlpBackend, info: dict[str, Any],
               otherwise: str) -> Partition:
    """The INFEASIBLE answer, with the problem's diagnosis (or ``otherwise``)."""
    return Partition((), Status.INFEASIBLE, None, None, "ilp", backend=backend.name,
                     diagnosis=diagnose(problem) or otherwise, info=info)


def settle(result: MilpResult, *, backend: IlpBackend, options: SolveOptions,
           decode: Callable[[np.ndarray], Decided], warm: Decided | None, floor: float,
           on_infeasible: Callable[[], Partition], info: dict[str, Any],
           exact: float | None = None) -> Partition:
    """The answer ``result`` gives, by the rules of the module doc."""
    candidates = [] if result.values is None else [decode(result.values)]
    if warm is not None:
        candidates.append(warm)
    if not candidates:
        if result.infeasible:
            return on_infeasible()
        raise no_solution(backend, options, result)
    answer = min(candidates, key=lambda c: c.objective)  # the backend's plan on a tie
    proven = result.values is not None and result.proven
    if exact is not None:
        bound = exact
        reached = relative_gap(answer.objective, exact) == 0.0
        optimal = proven and reached
        if reached and not proven:  # said in the record, so a reader of FEASIBLE, gap 0 knows
            info["certified_by_exact_search"] = True
    else:
        bound = max(floor, result.bound_s) if result.bound_s is not None else floor
        gap = relative_gap(answer.objective, min(bound, answer.objective))
        optimal = proven and gap is not None and gap <= TOLERANCE
    info["returned"] = "backend" if answer is candidates[0] and result.values is not None \
        else "warm start"
    return Partition(answer.bounds, Status.OPTIMAL if optimal else Status.FEASIBLE,
                     answer.objective, min(bound, answer.objective), "ilp",
                     backend=backend.name, info=info, **answer.fields)
