"""Shared test helpers: a brute-force reference solver (random chains: solver.core.synthetic)."""

from __future__ import annotations

import itertools
import math

from solver import MemoryModel, Problem, random_problem

__all__ = ["all_partitions", "brute_force", "random_problem", "stage_memory_direct"]


def all_partitions(n: int, max_stages: int):
    """Every contiguous partition of n layers into at most max_stages stages, as bounds."""
    for k in range(1, min(n, max_stages) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            yield (0, *cuts, n)


def brute_force(problem: Problem) -> float:
    """The optimal bottleneck by enumeration (inf when infeasible); only for small n."""
    best = math.inf
    for bounds in all_partitions(problem.n, problem.max_stages):
        stages = list(itertools.pairwise(bounds))
        if all(problem.stage_memory(s, e) <= problem.capacity_bytes for s, e in stages):
            best = min(best, max(problem.stage_time(s, e) for s, e in stages))
    return best


def stage_memory_direct(problem: Problem, s: int, e: int) -> int:
    """Stage memory straight from the README's formulas, independent of Problem's prefix sums."""
    w = problem.weight_bytes.tolist()
    a = problem.activation_bytes.tolist()
    b = problem.buffer_bytes.tolist()
    if problem.memory_model is MemoryModel.ADDITIVE:
        return sum(w[i] + a[i] + b[i] for i in range(s, e))
    inputs = [problem.input_bytes, *a[:-1]]
    return sum(w[s:e]) + max(inputs[i] + a[i] + b[i] for i in range(s, e))
