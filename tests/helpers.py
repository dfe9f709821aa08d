"""Shared test helpers: seeded random chains and a brute-force reference solver."""

from __future__ import annotations

import itertools
import math

import numpy as np

from solver.graph import Link
from solver.problem import MemoryModel, Problem


def random_problem(
    seed: int,
    n: int,
    *,
    max_stages: int | None = None,
    memory_model: MemoryModel | str = MemoryModel.ADDITIVE,
    link: bool = True,
    tightness: float = 0.35,
) -> Problem:
    """A random chain whose capacity admits a few layers per stage. With ``link`` the
    activations vary a lot, so a later cut can cost more than an earlier one."""
    rng = np.random.default_rng(seed)
    weight = rng.integers(1_000, 50_000, n)
    activation = rng.integers(100, 40_000, n)
    buffer = rng.integers(0, 5_000, n)
    latency = rng.uniform(0.5, 5.0, n).round(3)
    per_layer = weight + activation + buffer
    capacity = int(max(per_layer.max() * 2, per_layer.sum() * tightness))
    k = max_stages if max_stages is not None else int(rng.integers(2, max(3, n // 2 + 2)))
    return Problem(
        names=tuple(f"l{i}" for i in range(n)),
        weight_bytes=weight,
        activation_bytes=activation,
        buffer_bytes=buffer,
        latency_s=latency,
        capacity_bytes=capacity,
        max_stages=k,
        memory_model=MemoryModel(memory_model),
        input_bytes=int(rng.integers(0, 20_000)),
        link=Link(bandwidth_bytes_per_s=20_000.0, latency_s=0.05) if link else None,
    )


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
    """Stage memory straight from design.md's formulas, independent of Problem's prefix sums."""
    w = problem.weight_bytes.tolist()
    a = problem.activation_bytes.tolist()
    b = problem.buffer_bytes.tolist()
    if problem.memory_model is MemoryModel.ADDITIVE:
        return sum(w[i] + a[i] + b[i] for i in range(s, e))
    inputs = [problem.input_bytes, *a[:-1]]
    return sum(w[s:e]) + max(inputs[i] + a[i] + b[i] for i in range(s, e))
