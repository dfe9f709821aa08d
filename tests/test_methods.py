"""The cross-method suite: exact methods agree with each other and with brute force; greedy
matches the paper's definition and is never better than the optimum; no plan breaks capacity,
contiguity or K."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solver import (
    ILP_BACKENDS,
    Link,
    MemoryModel,
    Problem,
    SolveOptions,
    Status,
    canonical_partition,
    check_partition,
    diagnose,
    lower_bound,
    solve,
)
from solver.algorithms import dp_bottleneck, greedy_bounds
from solver.core import fewest_stages

from .helpers import brute_force, random_problem, stage_memory_direct

CASES = [(seed, mm, link) for seed in range(24) for mm in ("additive", "peak")
         for link in (True, False)]
ILP_OPTIONS = [SolveOptions(backend=b, time_limit_s=20) for b, spec in ILP_BACKENDS.items()
               if spec.available()]


def _check_feasible_answer(problem: Problem, part, optimum: float) -> None:
    assert part.status is not Status.INFEASIBLE
    check_partition(problem, part.bounds)
    assert part.objective == problem.objective(part.bounds)
    assert part.bound is not None and part.bound <= part.objective + 1e-12
    assert part.objective >= optimum * (1 - 1e-12)


@pytest.mark.parametrize(("seed", "memory_model", "link"), CASES)
def test_exact_methods_equal_brute_force(seed: int, memory_model: str, link: bool) -> None:
    problem = random_problem(seed, 1 + seed % 8, memory_model=memory_model, link=link)
    optimum = brute_force(problem)
    runs = [("dp", SolveOptions()), ("parametric", SolveOptions())]
    runs += [("ilp", opts) for opts in ILP_OPTIONS[: 1 + seed % max(1, len(ILP_OPTIONS))]]
    plans = []
    for method, options in runs:
        part = solve(problem, method, options)
        if math.isinf(optimum):
            assert part.status is Status.INFEASIBLE, method
            assert part.diagnosis
            continue
        assert part.status is Status.OPTIMAL, (method, part)
        _check_feasible_answer(problem, part, optimum)
        assert part.objective == pytest.approx(optimum, rel=1e-12), method
        plans.append(part.bounds)
    # One canonical plan for an optimum, whichever exact method found it.
    assert len(set(plans)) <= 1


@pytest.mark.parametrize(("seed", "memory_model", "link"), CASES[::3])
def test_heuristics_never_beat_the_optimum(seed: int, memory_model: str, link: bool) -> None:
    problem = random_problem(seed, 3 + seed % 6, memory_model=memory_model, link=link)
    optimum = brute_force(problem)
    for method in ("greedy", "uniform", "params"):
        part = solve(problem, method)
        if part.status is Status.INFEASIBLE:
            assert part.diagnosis
            continue
        assert part.status is Status.FEASIBLE
        _check_feasible_answer(problem, part, optimum)


def test_greedy_matches_the_papers_definition() -> None:
    """Add layers to the current group until the next would exceed C, then open a new one."""
    for seed in range(40):
        problem = random_problem(seed, 12, memory_model="additive", max_stages=12)
        bounds, start = [0], 0
        for i in range(problem.n):
            if stage_memory_direct(problem, start, i + 1) > problem.capacity_bytes:
                bounds.append(i)
                start = i
        bounds.append(problem.n)
        assert greedy_bounds(problem) == tuple(bounds)
        part = solve(problem, "greedy")
        if len(bounds) - 1 <= problem.max_stages:
            assert part.bounds == tuple(bounds)
        else:
            assert part.status is Status.INFEASIBLE


def test_greedy_fails_exactly_when_k_is_too_small() -> None:
    problem = random_problem(3, 10, max_stages=10)
    need = len(greedy_bounds(problem)) - 1
    assert solve(problem.replace(max_stages=need), "greedy").status is Status.FEASIBLE
    short = solve(problem.replace(max_stages=need - 1), "greedy")
    assert short.status is Status.INFEASIBLE
    assert f"at least {need} devices" in (short.diagnosis or "")


def test_later_cut_can_be_worse_with_transfer_costs() -> None:
    """A huge activation after layer 'b' makes the even split (cut before 'c') cost 5 s of
    transfer: the optimum cuts later, before 'd', with an uneven 3 + 1 split."""
    problem = Problem(
        names=("a", "b", "c", "d"), weight_bytes=[1, 1, 1, 1],
        activation_bytes=[10, 5_000_000, 10, 10], buffer_bytes=[0, 0, 0, 0],
        latency_s=[1.0, 1.0, 1.0, 1.0], capacity_bytes=10**9, max_stages=2,
        link=Link(bandwidth_bytes_per_s=1_000_000.0, latency_s=0.0),
    )
    assert problem.objective((0, 2, 4)) == pytest.approx(7.0)
    assert problem.objective((0, 1, 4)) == pytest.approx(3.0 + 1e-5)
    for method in ("dp", "parametric", *(["ilp"] if ILP_OPTIONS else [])):
        part = solve(problem, method)
        assert part.bounds == (0, 3, 4), method
        assert part.objective == 3.0
    assert brute_force(problem) == 3.0


def test_infeasible_names_the_layer_and_the_capacity() -> None:
    problem = random_problem(1, 6)
    sizes = [problem.stage_memory(i, i + 1) for i in range(problem.n)]
    largest = int(np.argmax(sizes))
    big = sizes[largest]
    tight = problem.replace(capacity_bytes=big - 1)
    reason = diagnose(tight)
    assert reason is not None and f"'l{largest}'" in reason and str(big) in reason
    assert str(big - 1) in reason
    for method in ("dp", "parametric", "greedy", "uniform", "params", "ilp"):
        part = solve(tight, method)
        assert part.status is Status.INFEASIBLE and part.diagnosis == reason


def test_too_few_devices_reports_the_fewest_needed() -> None:
    problem = random_problem(2, 10, max_stages=10)
    need = fewest_stages(problem.capacity_reach)
    assert need is not None and need > 1
    reason = diagnose(problem.replace(max_stages=need - 1))
    assert reason is not None and f"at least {need} devices" in reason
    assert diagnose(problem.replace(max_stages=need)) is None


def test_lower_bound_is_valid() -> None:
    for seed in range(60):
        problem = random_problem(seed, 1 + seed % 8, link=seed % 2 == 0)
        optimum = brute_force(problem)
        if math.isfinite(optimum):
            assert lower_bound(problem) <= optimum * (1 + 1e-12)


def test_dp_handles_its_size_limit_and_parametric_scales() -> None:
    problem = random_problem(5, 300, max_stages=24)
    z_dp, own = dp_bottleneck(problem)
    part = solve(problem, "parametric")
    assert own is not None and part.objective == z_dp


def test_deterministic() -> None:
    problem = random_problem(11, 60, max_stages=8)
    for method in ("dp", "parametric", "greedy", "params"):
        assert solve(problem, method).bounds == solve(problem, method).bounds


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(0, 1000), min_size=1, max_size=7),
    times=st.data(),
    k=st.integers(1, 7),
    cap_scale=st.floats(0.2, 1.5),
    memory_model=st.sampled_from(list(MemoryModel)),
    bandwidth=st.one_of(st.none(), st.floats(10.0, 1e4)),
)
def test_property_exact_equals_brute_force(weights, times, k, cap_scale, memory_model,
                                           bandwidth) -> None:
    n = len(weights)
    lat = times.draw(st.lists(st.floats(0.0, 10.0, allow_subnormal=False), min_size=n,
                              max_size=n))
    act = times.draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    capacity = max(1, int((sum(weights) + sum(act)) * cap_scale))
    problem = Problem(
        names=tuple(f"x{i}" for i in range(n)), weight_bytes=weights, activation_bytes=act,
        buffer_bytes=[0] * n, latency_s=lat, capacity_bytes=capacity, max_stages=k,
        memory_model=memory_model,
        link=None if bandwidth is None else Link(bandwidth, 0.01),
    )
    optimum = brute_force(problem)
    for method in ("dp", "parametric"):
        part = solve(problem, method)
        if math.isinf(optimum):
            assert part.status is Status.INFEASIBLE
        else:
            assert part.objective == optimum
            check_partition(problem, part.bounds)
    if math.isfinite(optimum):
        bounds = canonical_partition(problem, optimum)
        assert bounds is not None and problem.objective(bounds) == optimum
        fewest = min(len(b) - 1 for b in _optimal_partitions(problem, optimum))
        assert len(bounds) - 1 == fewest


def _optimal_partitions(problem: Problem, optimum: float):
    from .helpers import all_partitions
    for bounds in all_partitions(problem.n, problem.max_stages):
        stages = list(itertools.pairwise(bounds))
        if all(problem.stage_memory(s, e) <= problem.capacity_bytes for s, e in stages) and \
                max(problem.stage_time(s, e) for s, e in stages) == optimum:
            yield bounds


def test_stage_memory_matches_the_formulas() -> None:
    for seed in range(10):
        for mm in MemoryModel:
            problem = random_problem(seed, 9, memory_model=mm)
            for s in range(problem.n):
                for e in range(s + 1, problem.n + 1):
                    assert problem.stage_memory(s, e) == stage_memory_direct(problem, s, e)
            reach = problem.capacity_reach
            for s in range(problem.n):
                r = int(reach[s])
                assert r == s or problem.stage_memory(s, r) <= problem.capacity_bytes
                assert r == problem.n or problem.stage_memory(s, r + 1) > problem.capacity_bytes
            assert np.all(np.diff(reach) >= 0)
