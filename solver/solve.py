"""The one entry point that runs a method: diagnose, solve, check, time."""

from __future__ import annotations

import dataclasses
import time

from .algorithms import METHODS, SolveOptions
from .errors import InvalidInputError
from .feasibility import diagnose, lower_bound
from .partition import Partition, check_partition
from .problem import Problem
from .status import Status

__all__ = ["solve"]


def solve(problem: Problem, method: str = "ilp", options: SolveOptions | None = None) -> Partition:
    """Partition ``problem`` with ``method``. An infeasible problem returns a Partition with
    status INFEASIBLE and a one-line diagnosis; every feasible answer is checked against the
    capacity, contiguity and stage limit before it is returned."""
    if method not in METHODS:
        raise InvalidInputError(f"--method: unknown method {method!r} "
                                f"(known: {', '.join(METHODS)})")
    options = options or SolveOptions()
    start = time.perf_counter()
    reason = diagnose(problem)
    if reason is not None:
        result = Partition((), Status.INFEASIBLE, None, lower_bound(problem), method,
                           diagnosis=reason)
    else:
        result = METHODS[method].solve(problem, options)
        if result.status is not Status.INFEASIBLE:
            check_partition(problem, result.bounds)
            objective = problem.objective(result.bounds)
            bound = result.bound if result.bound is not None else lower_bound(problem)
            result = dataclasses.replace(result, objective=objective, bound=min(bound, objective))
    return dataclasses.replace(result, wall_s=time.perf_counter() - start)
