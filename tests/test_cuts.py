"""Allowed cuts (an engine's layout keeps layers together) and one TP degree for every stage:
every exact method on every backend equals brute force over the partitions the layout allows,
on the canonical problem, with tensor parallelism and on clusters."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from solver import (
    ILP_BACKENDS,
    InvalidInputError,
    Problem,
    SolveOptions,
    SolverError,
    Status,
    TensorParallel,
    check_partition,
    random_problem,
    solve,
)
from solver.core import Link, default_allreduce_bytes
from tests.test_cluster import brute as brute_cluster
from tests.test_cluster import fleet_problem

BACKENDS = [name for name, backend in ILP_BACKENDS.items() if backend.available()]


def _mask(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 101)
    mask = rng.random(n + 1) < 0.6
    mask[0] = mask[-1] = True
    return mask


def _brute(problem: Problem) -> float:
    """Every partition (and, with TP, every degree per stage) check_partition accepts."""
    tp = problem.tensor_parallel
    degrees = tp.degrees if tp is not None else (1,)
    best = math.inf
    n = problem.n
    for k in range(1, n + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            for degs in itertools.product(degrees, repeat=k):
                try:
                    costs = check_partition(problem, bounds,
                                            tp_degrees=degs if tp is not None else None)
                except SolverError:
                    continue
                best = min(best, max(c.time_s for c in costs))
    return best


def _check(problem: Problem, methods: list[tuple[str, str | None]]) -> None:
    expected = _brute(problem) if problem.fleet is None else brute_cluster(problem)
    for method, backend in methods:
        options = SolveOptions(backend=backend or "cpsat", time_limit_s=30)
        part = solve(problem, method, options)
        if math.isinf(expected):
            assert part.status is Status.INFEASIBLE, (method, backend)
            continue
        assert part.status is Status.OPTIMAL, (method, backend, part.diagnosis)
        assert part.objective == pytest.approx(expected, rel=1e-9), (method, backend)
        if problem.allowed_cuts is not None:
            assert all(problem.allowed_cuts[b] for b in part.bounds), (method, part.bounds)


EXACT = [("parametric", None), ("dp", None)] + [("ilp", b) for b in BACKENDS]


@pytest.mark.parametrize("seed", range(24))
def test_canonical_with_cuts(seed: int) -> None:
    n = 3 + seed % 6
    base = random_problem(seed, n, tightness=0.3 + 0.1 * (seed % 4))
    _check(base.replace(allowed_cuts=_mask(seed, n)), EXACT)


def _tp(problem: Problem, degrees: tuple[int, ...], uniform: bool) -> Problem:
    arb = default_allreduce_bytes([None] * problem.n, problem.activation_bytes) // 10
    return problem.replace(tensor_parallel=TensorParallel(degrees, 4, arb, Link(1e6, 0.001),
                                                          uniform=uniform))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("uniform", [False, True])
def test_tensor_parallel_with_cuts(seed: int, uniform: bool) -> None:
    n = 3 + seed % 4
    base = random_problem(seed, n, tightness=0.5).replace(max_stages=6)
    problem = _tp(base, (1, 2, 4), uniform).replace(allowed_cuts=_mask(seed, n))
    methods = [("dp", None)] + [("ilp", b) for b in BACKENDS]
    _check(problem, methods)
    part = solve(problem, "dp")
    if uniform and part.tp_degrees is not None:
        assert len(set(part.tp_degrees)) == 1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("free", [False, True])
def test_clusters_with_cuts(seed: int, free: bool) -> None:
    problem = fleet_problem(seed, 3 + seed % 3, free=free)
    problem = problem.replace(allowed_cuts=_mask(seed, problem.n))
    methods = [("dp", None), ("parametric", None)] + [("ilp", b) for b in BACKENDS]
    _check(problem, methods)


def test_uniform_tp_reports_each_degree() -> None:
    base = random_problem(3, 6, tightness=0.5).replace(max_stages=8)
    part = solve(_tp(base, (1, 2, 4), True), "dp")
    assert part.status is Status.OPTIMAL and part.tp_degrees is not None
    assert set(part.info["per_degree_s"].split(", ")[0].split(": ")) and \
        part.info["uniform_tp"] == part.tp_degrees[0]
    with pytest.raises(SolverError, match="one degree for every stage"):
        check_partition(_tp(base, (1, 2), True), (0, 3, 6), tp_degrees=(1, 2))


def test_greedy_cuts_only_where_allowed() -> None:
    for seed in range(20):
        n = 4 + seed % 5
        problem = random_problem(seed, n, tightness=0.4).replace(allowed_cuts=_mask(seed, n))
        part = solve(problem, "greedy")
        if part.status is not Status.INFEASIBLE:
            assert all(problem.allowed_cuts[b] for b in part.bounds)


def test_a_group_that_fits_no_device_is_named() -> None:
    # each layer fits alone (5 bytes of 6), but layers a and b kept together (10) do not
    problem = Problem(("a", "b", "c", "d"), [5] * 4, [0] * 4, [0] * 4, [1.0] * 4,
                      capacity_bytes=6, max_stages=4,
                      allowed_cuts=np.array([True, False, True, True, True]))
    part = solve(problem)
    assert part.status is Status.INFEASIBLE
    assert part.diagnosis == ("layer 'a .. b (kept together)' cannot fit on one device: its "
                              "weights, output and buffer need 10 bytes (10 B) > capacity 6 "
                              "bytes (6 B)")


def test_bad_cuts_are_refused() -> None:
    base = random_problem(0, 3)
    for mask, match in (([True, True], "expected 4"), ([False, True, True, True], "0 and n")):
        with pytest.raises(InvalidInputError, match=match) as err:
            base.replace(allowed_cuts=np.array(mask))
        assert err.value.field == "allowed_cuts"
    cut = base.replace(allowed_cuts=np.array([True, False, True, True]))
    with pytest.raises(InvalidInputError, match="does not support cuts"):
        solve(cut, "uniform")
