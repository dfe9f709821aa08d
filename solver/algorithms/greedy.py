"""The paper's greedy layer aggregation: fill a group until the next layer would not fit."""

from __future__ import annotations

from ..core.feasibility import lower_bound
from ..core.partition import Partition
from ..core.problem import Problem
from ..core.status import Status
from .base import SolveOptions

__all__ = ["greedy_bounds", "solve_greedy"]


def greedy_bounds(problem: Problem) -> tuple[int, ...]:
    """Boundaries of the greedy grouping under capacity alone (ignores K and latency)."""
    reach = problem.capacity_reach
    bounds = [0]
    while bounds[-1] < problem.n:
        start = bounds[-1]
        end = int(reach[start])
        if end <= start:
            raise ValueError(f"layer {start} does not fit alone")  # diagnose() runs first
        bounds.append(end)
    return tuple(bounds)


def solve_greedy(problem: Problem, options: SolveOptions) -> Partition:
    bounds = greedy_bounds(problem)
    lb = lower_bound(problem)
    if len(bounds) - 1 > problem.max_stages:
        return Partition((), Status.INFEASIBLE, None, lb, "greedy",
                         diagnosis=f"greedy needs {len(bounds) - 1} groups, more than the "
                                   f"{problem.max_stages} devices given")
    return Partition(bounds, Status.FEASIBLE, problem.objective(bounds), lb, "greedy")
