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


# ----- the ILPs of the richer problems -------------------------------------------------------
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from solver.algorithms.base import SolveOptions  # noqa: E402
from solver.algorithms.ilp_variants import solve_tiered_ilp, solve_tp_ilp  # noqa: E402
from solver.cli import main  # noqa: E402
from solver.plan import load_plan  # noqa: E402
from solver.solve_extended import solve_extended  # noqa: E402
from solver.status import Status  # noqa: E402
from solver.variants import Residency, best_residency  # noqa: E402


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("use_hint", [True, False])
def test_tp_ilp_equals_the_exact_dp(seed: int, use_hint: bool) -> None:
    problem = random_problem(seed, 1 + seed % 7, tightness=0.15)
    tp = _tp(problem)
    expected = tp_dp(problem, tp)
    plan = solve_tp_ilp(problem, tp, SolveOptions(use_hint=use_hint, time_limit_s=20))
    if expected is None:
        assert plan is None
        return
    assert plan is not None and plan.status is Status.OPTIMAL
    assert plan.objective == pytest.approx(expected[0], rel=1e-9)
    assert sum(plan.degrees) <= problem.max_stages


def _residency(problem, seed: int) -> Residency:
    rng = np.random.default_rng(seed)
    return Residency(problem.latency_s, problem.latency_s * rng.uniform(1, 3, problem.n))


def _tiered_brute(problem, res) -> float:
    best = math.inf
    n = problem.n
    for k in range(1, min(n, problem.max_stages) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            worst = 0.0
            for s, e in itertools.pairwise((0, *cuts, n)):
                found = best_residency(problem, res, s, e)
                if found is None:
                    worst = math.inf
                    break
                worst = max(worst, found[0])
            best = min(best, worst)
    return best


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("use_hint", [True, False])
def test_tiered_ilp_equals_brute_force(seed: int, use_hint: bool) -> None:
    problem = random_problem(seed, 1 + seed % 7, tightness=0.2)
    res = _residency(problem, seed)
    expected = _tiered_brute(problem, res)
    plan = solve_tiered_ilp(problem, res, SolveOptions(use_hint=use_hint, time_limit_s=20))
    if math.isinf(expected):
        assert plan is None
        return
    assert plan is not None and plan.status is Status.OPTIMAL
    assert plan.objective == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_tiered_off_is_canonical_and_on_is_never_worse(seed: int) -> None:
    problem = random_problem(seed, 4 + seed % 10, tightness=0.3)
    canonical, _ = dp_bottleneck(problem)
    # Streaming costs nothing extra: residency adds only freedom, never time.
    same = solve_tiered_ilp(problem, Residency(problem.latency_s, problem.latency_s),
                            SolveOptions())
    assert same is not None and same.objective <= canonical * (1 + 1e-12)
    # Streaming is prohibitively slow: every weight stays, which is the canonical problem.
    slow = solve_tiered_ilp(problem, Residency(problem.latency_s, problem.latency_s + 1e6),
                            SolveOptions())
    if math.isfinite(canonical):
        assert slow is not None and slow.objective == pytest.approx(canonical, rel=1e-9)
        assert all(slow.resident)
        on = solve_tiered_ilp(problem, _residency(problem, seed), SolveOptions())
        assert on is not None and on.objective <= canonical * (1 + 1e-9)


def test_auto_records_its_choice() -> None:
    problem = random_problem(3, 30, max_stages=6)
    part = solve_extended(problem)
    assert part.method == "parametric" and part.info["chosen_by"] == "auto"
    assert "canonical" in part.info["why"]
    with_tp = solve_extended(problem, tp=_tp(problem))
    assert with_tp.method == "ilp" and "tensor-parallel" in with_tp.info["why"]
    assert with_tp.objective <= part.objective * (1 + 1e-12)


def test_cli_tp_and_residency_plans(tmp_path: Path, capsys) -> None:
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
    assert "--tp: needs --method ilp, dp or auto" in capsys.readouterr().err
