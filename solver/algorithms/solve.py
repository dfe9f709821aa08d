"""The one entry point that runs a method: choose, diagnose, solve, check, time."""

from __future__ import annotations

import dataclasses
import time

from ..core.feasibility import diagnose, lower_bound
from ..core.partition import Partition, check_partition
from ..core.problem import Problem
from ..core.status import Status
from .base import SolveOptions
from .registry import AUTO, choose

__all__ = ["solve"]


def solve(problem: Problem, method: str = AUTO, options: SolveOptions | None = None) -> Partition:
    """Partition ``problem`` with ``method`` (``auto``: the registry's choice, recorded in
    ``Partition.selection``). An infeasible problem returns a Partition with status INFEASIBLE
    and a one-line diagnosis; every feasible answer is checked against the capacity, contiguity,
    the device limit and the extensions' rules, and its objective recomputed, before it is
    returned. Bad input and unsupported extensions raise InvalidInputError; a backend that fails
    or finds nothing in time raises SolverError."""
    chosen, why = choose(problem, method)
    options = options or SolveOptions()
    start = time.perf_counter()
    reason = diagnose(problem)
    if reason is not None:
        result = Partition((), Status.INFEASIBLE, None, lower_bound(problem), chosen.name,
                           diagnosis=reason)
    else:
        result = chosen.solve(problem, options)
        if result.status is not Status.INFEASIBLE:
            costs = check_partition(problem, result.bounds, tp_degrees=result.tp_degrees,
                                    resident=result.resident, ranks=result.ranks)
            objective = max(c.time_s for c in costs)
            bound = result.bound if result.bound is not None else lower_bound(problem)
            result = dataclasses.replace(result, objective=objective, bound=min(bound, objective))
    return dataclasses.replace(result, wall_s=time.perf_counter() - start, selection=why)
