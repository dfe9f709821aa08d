"""The one entry point that runs a method: choose, diagnose, solve, check, time."""

from __future__ import annotations

import dataclasses
import time

from ..core.extensions import TensorParallel
from ..core.feasibility import diagnose, lower_bound
from ..core.partition import Partition, check_partition
from ..core.problem import Problem
from ..core.status import Status
from .base import SolveOptions
from .registry import AUTO, choose

__all__ = ["solve"]


def solve(problem: Problem, method: str = AUTO, options: SolveOptions | None = None) -> Partition:
    """Partition ``problem`` with ``method``; see _solve. A uniform tensor-parallel problem (one
    degree for every stage, as engines take it) is solved once per degree and the best kept:
    exact when every one of those solves is."""
    tp = problem.tensor_parallel
    if tp is not None and tp.uniform:
        return _solve_uniform(problem, tp, method, options or SolveOptions())
    return _solve(problem, method, options)


def _solve_uniform(problem: Problem, tp: TensorParallel, method: str,
                   options: SolveOptions) -> Partition:
    start = time.perf_counter()
    answers: list[tuple[int, Partition]] = []
    for t in tp.degrees:
        if t > problem.max_stages:
            continue
        sub = problem.replace(tensor_parallel=None) if t == 1 else \
            problem.replace(tensor_parallel=dataclasses.replace(tp, degrees=(t,), uniform=False))
        answers.append((t, _solve(sub, method, options)))
    if not answers:
        return Partition((), Status.INFEASIBLE, None, None, method,
                         diagnosis=f"every TP degree ({', '.join(map(str, tp.degrees))}) exceeds "
                                   f"the {problem.max_stages} devices",
                         wall_s=time.perf_counter() - start)
    feasible = [(t, p) for t, p in answers if p.status is not Status.INFEASIBLE]
    if not feasible:
        t, worst = answers[0]
        return dataclasses.replace(worst, tp_degrees=None, wall_s=time.perf_counter() - start,
                                   diagnosis=f"at every TP degree: {worst.diagnosis} (degree {t})")
    t, best = min(feasible, key=lambda tp_answer: (tp_answer[1].objective, tp_answer[0]))
    exact = all(p.status in (Status.OPTIMAL, Status.INFEASIBLE) for _, p in answers)
    bounds = [p.bound for _, p in feasible if p.bound is not None]
    bound = min(bounds) if len(bounds) == len(feasible) else None
    degrees = (t,) * best.num_stages
    check_partition(problem, best.bounds, tp_degrees=degrees)
    tried = ", ".join(f"{d}: {'-' if p.objective is None else f'{p.objective:.6g} s'}"
                      for d, p in answers)
    return dataclasses.replace(
        best, tp_degrees=degrees, status=Status.OPTIMAL if exact else Status.FEASIBLE,
        bound=best.objective if exact else bound, wall_s=time.perf_counter() - start,
        info={**best.info, "uniform_tp": t, "per_degree_s": tried})


def _solve(problem: Problem, method: str = AUTO, options: SolveOptions | None = None) -> Partition:
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
