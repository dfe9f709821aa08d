"""Tensor parallelism per stage: the exact DP against brute force; switched off it is the
canonical problem; switched on it is never worse."""

from __future__ import annotations

import itertools
import math

import pytest

from solver.algorithms.dp import dp_bottleneck
from solver.graph import Link
from solver.synthetic import random_problem
from solver.variants import (
    TensorParallel,
    default_allreduce_bytes,
    tp_dp,
    tp_stage_memory,
    tp_stage_time,
)


def _tp(problem, degrees=(1, 2, 4), per_node=4) -> TensorParallel:
    arb = default_allreduce_bytes([None] * problem.n, problem.activation_bytes) // 10
    return TensorParallel(degrees, per_node, arb, Link(1e6, 0.001))


def _brute(problem, tp) -> float:
    best = math.inf
    n = problem.n
    for k in range(1, n + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            for degs in itertools.product(tp.degrees, repeat=k):
                if sum(degs) > problem.max_stages:
                    continue
                stages = list(zip(itertools.pairwise(bounds), degs, strict=True))
                if all(tp_stage_memory(problem, s, e, t) <= problem.capacity_bytes
                       for (s, e), t in stages):
                    best = min(best, max(tp_stage_time(problem, tp, s, e, t)
                                         for (s, e), t in stages))
    return best


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("memory_model", ["additive", "peak"])
def test_tp_dp_equals_brute_force(seed: int, memory_model: str) -> None:
    problem = random_problem(seed, 1 + seed % 6, memory_model=memory_model, tightness=0.15)
    tp = _tp(problem)
    result = tp_dp(problem, tp)
    expected = _brute(problem, tp)
    if math.isinf(expected):
        assert result is None
        return
    assert result is not None
    z, bounds, degrees = result
    assert z == pytest.approx(expected, rel=1e-12)
    assert sum(degrees) <= problem.max_stages
    times = [tp_stage_time(problem, tp, s, e, t)
             for (s, e), t in zip(itertools.pairwise(bounds), degrees, strict=True)]
    assert max(times) == pytest.approx(z, rel=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_tp_off_is_canonical_and_on_is_never_worse(seed: int) -> None:
    problem = random_problem(seed, 3 + seed % 20, tightness=0.2)
    off = tp_dp(problem, _tp(problem, degrees=(1,)))
    canonical, _ = dp_bottleneck(problem)
    assert (off is None and math.isinf(canonical)) or (off is not None and off[0] == canonical)
    on = tp_dp(problem, _tp(problem))
    if off is not None:
        assert on is not None and on[0] <= off[0]


def test_tp_memory_splits_weights_not_activations() -> None:
    problem = random_problem(1, 4)
    w = int(problem.weight_bytes[:2].sum())
    a = int(problem.activation_bytes[:2].sum())
    b = int(problem.buffer_bytes[:2].sum())
    assert tp_stage_memory(problem, 0, 2, 4) == math.ceil(w / 4) + a + math.ceil(b / 4)
    tp = _tp(problem)
    ring = 2 * 3 / 4 * int(tp.allreduce_bytes[:2].sum()) / 1e6 + 2 * 3 * 0.001 * 2
    assert tp_stage_time(problem, tp, 0, 2, 4) == pytest.approx(
        float(problem.latency_s[:2].sum()) / 4 + ring)


def test_tp_rejects_bad_degrees() -> None:
    problem = random_problem(0, 3)
    with pytest.raises(ValueError, match="exceeds the 4 devices"):
        _tp(problem, degrees=(1, 8))
    with pytest.raises(ValueError, match="must include 1"):
        _tp(problem, degrees=(2, 4))
