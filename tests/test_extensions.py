"""The typed extensions: tensor parallelism per stage and tiered residency. Exact methods
against brute force on every ILP backend; switched off each is the canonical problem;
switched on it is never worse; the registry solves or refuses each extension it is asked for."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from solver import (
    ILP_BACKENDS,
    METHODS,
    Extension,
    InvalidInputError,
    Link,
    Problem,
    Residency,
    SolveOptions,
    Status,
    TensorParallel,
    check_partition,
    load_plan,
    random_problem,
    solve,
)
from solver.algorithms import dp_bottleneck, tp_dp
from solver.cli import main
from solver.core import best_residency, default_allreduce_bytes, tp_stage_memory, tp_stage_time

BACKENDS = [name for name, backend in ILP_BACKENDS.items() if backend.available()]


def _tp(problem: Problem, degrees: tuple[int, ...] = (1, 2, 4), per_node: int = 4) -> Problem:
    arb = default_allreduce_bytes([None] * problem.n, problem.activation_bytes) // 10
    return problem.replace(tensor_parallel=TensorParallel(degrees, per_node, arb,
                                                          Link(1e6, 0.001)))


def _brute_tp(problem: Problem) -> float:
    tp = problem.tensor_parallel
    assert tp is not None
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
                    best = min(best, max(tp_stage_time(problem, s, e, t) for (s, e), t in stages))
    return best


# ----- tensor parallelism ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("memory_model", ["additive", "peak"])
def test_tp_dp_equals_brute_force(seed: int, memory_model: str) -> None:
    problem = _tp(random_problem(seed, 1 + seed % 6, memory_model=memory_model, tightness=0.15))
    result = tp_dp(problem)
    expected = _brute_tp(problem)
    if math.isinf(expected):
        assert result is None
        return
    assert result is not None
    z, bounds, degrees = result
    assert z == pytest.approx(expected, rel=1e-12)
    costs = check_partition(problem, bounds, tp_degrees=degrees)
    assert max(c.time_s for c in costs) == pytest.approx(z, rel=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_tp_off_is_canonical_and_on_is_never_worse(seed: int) -> None:
    problem = random_problem(seed, 3 + seed % 20, tightness=0.2)
    off = tp_dp(_tp(problem, degrees=(1,)))
    canonical, _ = dp_bottleneck(problem)
    assert (off is None and math.isinf(canonical)) or (off is not None and off[0] == canonical)
    on = tp_dp(_tp(problem))
    if off is not None:
        assert on is not None and on[0] <= off[0]


def test_tp_memory_splits_weights_not_activations() -> None:
    problem = _tp(random_problem(1, 4))
    w = int(problem.weight_bytes[:2].sum())
    a = int(problem.activation_bytes[:2].sum())
    b = int(problem.buffer_bytes[:2].sum())
    assert tp_stage_memory(problem, 0, 2, 4) == math.ceil(w / 4) + a + math.ceil(b / 4)
    tp = problem.tensor_parallel
    assert tp is not None
    ring = 2 * 3 / 4 * int(tp.allreduce_bytes[:2].sum()) / 1e6 + 2 * 3 * 0.001 * 2
    assert tp_stage_time(problem, 0, 2, 4) == pytest.approx(
        float(problem.latency_s[:2].sum()) / 4 + ring)


def test_tp_rejects_bad_degrees() -> None:
    problem = random_problem(0, 3)
    with pytest.raises(InvalidInputError, match="exceeds the 4 devices") as err:
        _tp(problem, degrees=(1, 8))
    assert err.value.field == "tp_degrees"
    # a degree set without 1 is a choice too: every stage spans 2 or 4 devices
    wide = _tp(problem, degrees=(2, 4))
    part = solve(wide, "dp")
    assert part.tp_degrees is not None and set(part.tp_degrees) <= {2, 4}
    with pytest.raises(InvalidInputError, match="one per layer") as err:
        problem.replace(tensor_parallel=TensorParallel((1, 2), 2, np.zeros(5), Link(1.0)))
    assert err.value.field == "allreduce_bytes"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("use_hint", [True, False])
def test_tp_ilp_equals_the_exact_dp(backend: str, seed: int, use_hint: bool) -> None:
    problem = _tp(random_problem(seed, 1 + seed % 7, tightness=0.15))
    expected = tp_dp(problem)
    part = solve(problem, "ilp", SolveOptions(backend=backend, use_hint=use_hint,
                                              time_limit_s=20))
    if expected is None:
        assert part.status is Status.INFEASIBLE and part.diagnosis
        return
    assert part.status is Status.OPTIMAL, part
    assert part.objective == pytest.approx(expected[0], rel=1e-9)
    assert part.tp_degrees is not None and part.devices_used <= problem.max_stages


# ----- tiered residency -----------------------------------------------------------------------
def _residency(problem: Problem, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    return problem.replace(residency=Residency(problem.latency_s,
                                               problem.latency_s * rng.uniform(1, 3, problem.n)))


def _tiered_brute(problem: Problem) -> float:
    best = math.inf
    n = problem.n
    for k in range(1, min(n, problem.max_stages) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            worst = 0.0
            for s, e in itertools.pairwise((0, *cuts, n)):
                found = best_residency(problem, s, e)
                if found is None:
                    worst = math.inf
                    break
                worst = max(worst, found[0])
            best = min(best, worst)
    return best


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("use_hint", [True, False])
def test_tiered_ilp_equals_brute_force(backend: str, seed: int, use_hint: bool) -> None:
    problem = _residency(random_problem(seed, 1 + seed % 7, tightness=0.2), seed)
    expected = _tiered_brute(problem)
    part = solve(problem, "ilp", SolveOptions(backend=backend, use_hint=use_hint,
                                              time_limit_s=20))
    if math.isinf(expected):
        assert part.status is Status.INFEASIBLE and part.diagnosis
        return
    assert part.status is Status.OPTIMAL, part
    assert part.objective == pytest.approx(expected, rel=1e-9)
    assert part.resident is not None and len(part.resident) == problem.n


@pytest.mark.parametrize("seed", range(8))
def test_tiered_off_is_canonical_and_on_is_never_worse(seed: int) -> None:
    problem = random_problem(seed, 4 + seed % 10, tightness=0.3)
    canonical, _ = dp_bottleneck(problem)

    def tiered(streamed: np.ndarray) -> Problem:
        return problem.replace(residency=Residency(problem.latency_s, streamed))

    # Streaming costs nothing extra: residency adds only freedom, never time.
    same = solve(tiered(problem.latency_s), "ilp")
    assert same.status is not Status.INFEASIBLE
    assert same.objective is not None and same.objective <= canonical * (1 + 1e-12)
    # Streaming is prohibitively slow: every weight stays, which is the canonical problem.
    slow = solve(tiered(problem.latency_s + 1e6), "ilp")
    if math.isfinite(canonical):
        assert slow.objective == pytest.approx(canonical, rel=1e-9)
        assert slow.resident is not None and all(slow.resident)
        on = solve(_residency(problem, seed), "ilp")
        assert on.objective is not None and on.objective <= canonical * (1 + 1e-9)


def test_residency_needs_the_additive_model_and_cannot_join_tp() -> None:
    problem = random_problem(2, 5)
    res = Residency(problem.latency_s, problem.latency_s * 2)
    with pytest.raises(InvalidInputError, match="additive") as err:
        problem.replace(memory_model="peak", residency=res)
    assert err.value.field == "residency"
    with pytest.raises(InvalidInputError, match="cannot be combined"):
        _tp(problem).replace(residency=res)


# ----- the registry: every method solves or refuses each extension ----------------------------
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("extension", list(Extension))
def test_every_method_solves_or_refuses_each_extension(method: str,
                                                       extension: Extension) -> None:
    from .test_cluster import brute, fleet_problem

    base = random_problem(4, 6, max_stages=4, tightness=0.3)
    if extension is Extension.TENSOR_PARALLEL:
        problem, expected = _tp(base), lambda p: tp_dp(p)[0]  # type: ignore[index]
    elif extension is Extension.RESIDENCY:
        problem, expected = _residency(base, 4), _tiered_brute
    else:
        problem = fleet_problem(4, 5, free=extension is Extension.FREE_PLACEMENT)
        expected = brute
    if problem.extensions <= METHODS[method].supports:
        part = solve(problem, method, SolveOptions(time_limit_s=20))
        assert part.method == method
        if METHODS[method].exact:
            assert part.status is Status.OPTIMAL
            assert part.objective == pytest.approx(expected(problem), rel=1e-9)
        elif part.status is not Status.INFEASIBLE:  # a baseline: valid, never better
            assert part.objective is not None
            assert part.objective >= expected(problem) * (1 - 1e-12)
    else:
        with pytest.raises(InvalidInputError) as err:
            solve(problem, method)
        assert err.value.field == "method"
        missing = problem.extensions - METHODS[method].supports
        assert method in str(err.value) and all(e.value in str(err.value) for e in missing)
        assert extension in missing or extension in METHODS[method].supports


def test_auto_records_its_choice() -> None:
    problem = random_problem(3, 30, max_stages=6)
    part = solve(problem)
    assert part.method == "parametric" and "canonical" in (part.selection or "")
    with_tp = solve(_tp(problem))
    assert with_tp.method == "ilp" and "tensor-parallel" in (with_tp.selection or "")
    assert with_tp.objective is not None and part.objective is not None
    assert with_tp.objective <= part.objective * (1 + 1e-12)
    named = solve(problem, "dp")
    assert named.selection is None


def test_cli_tp_and_residency_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tp.json"
    assert main(["solve", "llama2-7b", "--batch", "1", "--seq", "128", "--granularity", "op",
                 "-k", "512", "-c", "l2", "--tp", "1,2,4,8", "-m", "dp", "-q", "-o",
                 str(out)]) == 0
    plan = load_plan(out)
    assert sum(st.tp_degree for st in plan.stages) <= 512
    assert any(st.tp_degree > 1 for st in plan.stages)
    assert all(st.memory_bytes <= 50 * 2**20 for st in plan.stages)
    ranks = [st.device_rank for st in plan.stages]
    assert ranks == sorted(ranks) and ranks[0] == 0
    res = tmp_path / "res.json"
    assert main(["solve", "gpt2", "--seq", "128", "-k", "8", "-c", "l2", "--residency",
                 "partial", "-q", "-o", str(res)]) == 0
    doc = json.loads(res.read_text())
    assert doc["solver"]["info"]["chosen_by"] == "auto"
    assert any(st["resident_layers"] for st in doc["stages"])
    assert main(["solve", "gpt2", "-k", "8", "-c", "hbm", "--residency", "partial"]) == 2
    assert "--capacity hbm is not an on-chip tier" in capsys.readouterr().err
    assert main(["solve", "gpt2", "-k", "8", "-c", "l2", "--tp", "1,2", "-m", "greedy"]) == 2
    err = capsys.readouterr().err
    assert "cachepart: error: --method: method 'greedy' does not support tensor_parallel" in err
    assert err.count("error") == 1


# ----- what a status means where solver tolerances meet near-ties (found by review) ----------
def _tie_problem(eps_t: float, eps_ar: float) -> Problem:
    """Two layers whose best plans differ by about 1e-7 relative: within a MIP's tolerance."""
    p = Problem(names=("a", "b"), weight_bytes=[10, 10], activation_bytes=[1, 1],
                buffer_bytes=[0, 0], latency_s=[1.0, 1.0], capacity_bytes=10**6, max_stages=2,
                link=Link(bandwidth_bytes_per_s=1e30, latency_s=eps_t))
    return p.replace(tensor_parallel=TensorParallel((1, 2), 2, np.array([1, 0]),
                                                    Link(1e30, eps_ar / 2)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [(3e-7, 1e-7), (1e-7, 3e-7), (5e-7, 1e-9), (1e-9, 5e-7)])
@pytest.mark.parametrize("use_hint", [True, False])
def test_tp_status_is_certified_by_the_exact_dp(backend: str, eps: tuple[float, float],
                                               use_hint: bool) -> None:
    problem = _tie_problem(*eps)
    exact = tp_dp(problem)
    assert exact is not None
    part = solve(problem, "ilp", SolveOptions(backend=backend, use_hint=use_hint))
    assert part.objective is not None and part.bound is not None
    assert part.bound <= exact[0] <= part.objective
    if part.status is Status.OPTIMAL:
        assert part.objective == exact[0]
    else:
        assert part.status is Status.FEASIBLE and part.gap is not None and part.gap > 0


def _tiered_rounding_problem() -> Problem:
    """Twelve layers each saving 0.4 units of a CP-SAT scale by staying on chip: rounded alone,
    every saving is 0."""
    n, res = 12, np.ones(12)
    p = Problem(names=tuple(f"l{i}" for i in range(n)), weight_bytes=[10] * n,
                activation_bytes=[1] * n, buffer_bytes=[0] * n, latency_s=res,
                capacity_bytes=10**6, max_stages=1)
    return p.replace(residency=Residency(res, res + 0.4 * 12e-9))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_hint", [True, False])
def test_tiered_status_and_bound_hold_under_solver_tolerances(backend: str, seed: int,
                                                              use_hint: bool) -> None:
    """Savings of 1e-6 relative (a MIP's tolerance), 1000x (a coarse time unit), and a CP-SAT
    rounding pile-up: the bound stays valid, OPTIMAL stays within 1e-5 of the optimum."""
    base = random_problem(seed, 2 + seed, tightness=0.2)
    rng = np.random.default_rng(seed)
    for ratio in (1 + rng.uniform(0, 1e-6, base.n), rng.uniform(1, 1000, base.n)):
        problem = base.replace(residency=Residency(base.latency_s, base.latency_s * ratio))
        expected = _tiered_brute(problem)
        part = solve(problem, "ilp", SolveOptions(backend=backend, use_hint=use_hint))
        if math.isinf(expected):
            assert part.status is Status.INFEASIBLE
            continue
        assert part.bound is not None and part.bound <= expected * (1 + 1e-12)
        assert part.objective is not None and part.objective >= expected * (1 - 1e-12)
        assert part.objective <= expected * (1 + 1e-5), part
    rounding = _tiered_rounding_problem()
    part = solve(rounding, "ilp", SolveOptions(backend=backend, use_hint=use_hint))
    assert part.bound is not None and part.bound <= 12.0
    assert part.objective is not None and part.objective == pytest.approx(12.0, rel=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_plan_over_capacity_by_a_tolerance_is_repaired(backend: str) -> None:
    """Three layers whose weights overfill 50 MiB by one byte when all stay on chip (CBC once
    kept all three): the answer fits, and is the optimum (two resident)."""
    w = 17_476_257
    problem = Problem(names=("l0", "l1", "l2"), weight_bytes=[w] * 3, activation_bytes=[10] * 3,
                      buffer_bytes=[0] * 3, latency_s=[1.0] * 3, capacity_bytes=52_428_800,
                      max_stages=1)
    problem = problem.replace(residency=Residency(np.ones(3), np.full(3, 2.0)))
    part = solve(problem, "ilp", SolveOptions(backend=backend, use_hint=False))
    assert part.objective == 4.0 and part.resident is not None and sum(part.resident) == 2
    check_partition(problem, part.bounds, resident=part.resident)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_byte_rows_and_device_counts_solve(backend: str) -> None:
    """Petabyte weights (HiGHS refuses coefficients >= 1e15) and K beyond int64 (CP-SAT's rows)
    are scaled or clamped, not crashes."""
    n = 3
    big = Problem(names=("l0", "l1", "l2"), weight_bytes=[10**15] * n, activation_bytes=[10] * n,
                  buffer_bytes=[0] * n, latency_s=[1.0] * n, capacity_bytes=52_428_800,
                  max_stages=1)
    part = solve(big.replace(residency=Residency(np.ones(n), np.full(n, 2.0))), "ilp",
                 SolveOptions(backend=backend))
    assert part.objective == 6.0 and part.resident == (False,) * n
    many = random_problem(1, 6).replace(max_stages=10**20)
    assert solve(many, "ilp", SolveOptions(backend=backend)).status is Status.OPTIMAL
    assert solve(_tp(many), "ilp", SolveOptions(backend=backend)).status is Status.OPTIMAL
    assert solve(_tp(many), "dp").status is Status.OPTIMAL
