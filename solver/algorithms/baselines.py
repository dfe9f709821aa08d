"""Baselines others use: equal layer counts, and stages balanced by weight bytes."""

from __future__ import annotations

import numpy as np

from ..core.feasibility import lower_bound
from ..core.partition import Partition, evaluate
from ..core.problem import Problem
from ..core.status import Status
from .base import SolveOptions
from .parametric import minmax_partition

__all__ = ["solve_params", "solve_uniform"]


def _finish(problem: Problem, bounds: tuple[int, ...], method: str) -> Partition:
    """A baseline ignores capacity when it cuts, so its plan may break it: say where."""
    lb = lower_bound(problem)
    for j, cost in enumerate(evaluate(problem, bounds)):
        if cost.memory_bytes > cost.capacity_bytes:
            s, e = cost.start, cost.end
            return Partition((), Status.INFEASIBLE, None, lb, method, diagnosis=(
                f"{method} split: stage {j} (layers {problem.names[s]!r}..{problem.names[e - 1]!r})"
                f" needs {cost.memory_bytes} bytes > capacity {cost.capacity_bytes} bytes"))
    return Partition(bounds, Status.FEASIBLE, None, lb, method)


def solve_uniform(problem: Problem, options: SolveOptions) -> Partition:
    """min(K, n) stages of equal layer counts (the first n mod k stages get one more)."""
    k = min(problem.stage_limit, problem.n)
    sizes = [problem.n // k + (1 if j < problem.n % k else 0) for j in range(k)]
    bounds = tuple(int(b) for b in np.concatenate(([0], np.cumsum(sizes))))
    return _finish(problem, bounds, "uniform")


def solve_params(problem: Problem, options: SolveOptions) -> Partition:
    """Stages that minimise the largest stage's weight bytes (capacity checked afterwards)."""
    by_weight = problem.replace(
        latency_s=problem.weight_bytes.astype(np.float64), link=None, fleet=None,
        tensor_parallel=None, residency=None,
        capacity_bytes=int(max(1, problem.stage_memory(0, problem.n) if problem.n else 1)),
    )
    bounds = minmax_partition(by_weight)
    if bounds is None:  # unreachable: one stage always fits the whole-model capacity
        raise AssertionError("weight balancing found no partition")
    return _finish(problem, bounds, "params")
