"""The paper's greedy layer aggregation: fill a group until the next layer would not fit.

On a cluster (ordered placement) the group on rank j fills rank j's kind's capacity."""

from __future__ import annotations

from ..core.feasibility import lower_bound
from ..core.ordered import ordered_views
from ..core.partition import Partition
from ..core.problem import Problem
from ..core.status import Status
from .base import SolveOptions

__all__ = ["greedy_bounds", "solve_greedy"]


def greedy_bounds(problem: Problem) -> tuple[int, ...] | None:
    """Boundaries of the greedy grouping under capacity alone (ignores latency; on a cluster,
    the ranks in order, None when they run out). A layer that fits no device does not reach
    here: diagnose() runs first."""
    views = ordered_views(problem) if problem.fleet is not None else None
    bounds = [0]
    while bounds[-1] < problem.n:
        j = len(bounds) - 1
        if views is not None and j >= len(views):
            return None
        reach = (views[j] if views is not None else problem).capacity_reach
        end = int(reach[bounds[-1]])
        if end <= bounds[-1]:
            if views is not None:
                return None  # the next rank's kind cannot hold the next layer
            raise ValueError(f"layer {bounds[-1]} does not fit alone")
        bounds.append(end)
    return tuple(bounds)


def solve_greedy(problem: Problem, options: SolveOptions) -> Partition:
    if problem.training is not None:
        from .train import solve_train_greedy

        return solve_train_greedy(problem, options)
    bounds = greedy_bounds(problem)
    lb = lower_bound(problem)
    if bounds is None:
        return Partition((), Status.INFEASIBLE, None, lb, "greedy",
                         diagnosis="greedy runs out of ranks (or meets a rank whose kind cannot "
                                   "hold the next layer) before the last layer")
    if len(bounds) - 1 > problem.max_stages:
        return Partition((), Status.INFEASIBLE, None, lb, "greedy",
                         diagnosis=f"greedy needs {len(bounds) - 1} groups, more than the "
                                   f"{problem.max_stages} devices given")
    return Partition(bounds, Status.FEASIBLE, None, lb, "greedy")
