"""The training pipeline simulator (GPipe, 1F1B) against its closed form and against an
independent longest-path computation over the schedule's DAG."""

from __future__ import annotations

import graphlib
import itertools
import json
import math
import random

import pytest

from solver import InvalidInputError, SolverError
from solver.plan import schedule as sched
from solver.plan.schedule import (
    SCHEDULES,
    Schedule,
    TrainSim,
    simulate_training,
    stage_order,
    uniform_step_s,
)

GRID = list(itertools.product(range(1, 7), range(1, 9)))  # (P, M)


def _random_times(rng: random.Random, p: int) -> tuple[list[float], list[float]]:
    return [rng.uniform(0.01, 3.0) for _ in range(p)], [rng.uniform(0.01, 5.0) for _ in range(p)]


def _expected_order(schedule: Schedule, j: int, p: int, m: int) -> list[tuple[str, int]]:
    """The per-stage order written out again from the task's statement, not from the module."""
    if schedule == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    w = min(p - j - 1, m)
    ops = [("F", i) for i in range(w)]
    for i in range(m - w):
        ops += [("F", w + i), ("B", i)]
    return ops + [("B", i) for i in range(m - w, m)]


def _longest_path(schedule: Schedule, fwd: list[float], bwd: list[float],
                  m: int) -> dict[tuple[str, int, int], float]:
    """End time of every op (kind, stage, micro-batch) by a longest path over the DAG of data
    dependencies plus per-stage order edges, in graphlib's topological order."""
    p = len(fwd)
    preds: dict[tuple[str, int, int], set[tuple[str, int, int]]] = {}
    for j in range(p):
        for i in range(m):
            preds[("F", j, i)] = {("F", j - 1, i)} if j > 0 else set()
            preds[("B", j, i)] = {("F", j, i)} | ({("B", j + 1, i)} if j < p - 1 else set())
        ops = _expected_order(schedule, j, p, m)
        for (k0, i0), (k1, i1) in itertools.pairwise(ops):
            preds[(k1, j, i1)].add((k0, j, i0))
    end: dict[tuple[str, int, int], float] = {}
    for node in graphlib.TopologicalSorter(preds).static_order():
        kind, j, _ = node
        start = max((end[d] for d in preds[node]), default=0.0)
        end[node] = start + (fwd[j] if kind == "F" else bwd[j])
    return end


def _check_valid(r: TrainSim) -> None:
    """Every dependency holds, no stage overlaps itself, slots are sorted and complete."""
    at = {(s.kind, s.stage, s.microbatch): s for s in r.slots}
    assert len(at) == len(r.slots) == 2 * r.stages * r.microbatches
    for (kind, j, i), s in at.items():
        dur = r.forward_s[j] if kind == "F" else r.backward_s[j]
        assert s.end_s - s.start_s == pytest.approx(dur, abs=1e-12)
        if kind == "F" and j > 0:
            assert s.start_s >= at["F", j - 1, i].end_s - 1e-12
        if kind == "B":
            assert s.start_s >= at["F", j, i].end_s - 1e-12
            if j < r.stages - 1:
                assert s.start_s >= at["B", j + 1, i].end_s - 1e-12
    for j in range(r.stages):
        bars = [s for s in r.slots if s.stage == j]
        assert all(a.end_s <= b.start_s + 1e-12 for a, b in itertools.pairwise(bars))
    keys = [(s.start_s, s.stage) for s in r.slots]
    assert keys == sorted(keys)
    assert r.step_s == max(s.end_s for s in r.slots)


# 1. identical stages against the closed form


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_identical_stages_match_closed_form(schedule: Schedule) -> None:
    f, b = 0.37, 0.81
    for p, m in GRID:
        r = simulate_training([f] * p, [b] * p, m, schedule)
        assert r.step_s == pytest.approx(uniform_step_s(f, b, p, m), rel=1e-12), (p, m)
        assert r.bubble_fraction == pytest.approx((p - 1) / (m + p - 1), rel=1e-12, abs=1e-12)
        assert r.busy_fraction == pytest.approx([1 - r.bubble_fraction] * p, rel=1e-12)
        assert (r.schedule, r.stages, r.microbatches) == (schedule, p, m)
        _check_valid(r)


def test_uniform_step_s_values() -> None:
    assert uniform_step_s(1.0, 2.0, 4, 8) == 33.0  # (8 + 4 - 1) x 3
    assert uniform_step_s(1.0, 2.0, 1, 1) == 3.0
    assert uniform_step_s(0, 0, 3, 3) == 0.0
    with pytest.raises(InvalidInputError) as err:
        uniform_step_s(-1.0, 2.0, 4, 8)
    assert err.value.field == "forward"
    with pytest.raises(InvalidInputError) as err:
        uniform_step_s(1.0, 2.0, 0, 8)
    assert err.value.field == "stages"


# 2. activations in flight, and the order itself


def test_peak_in_flight() -> None:
    for p, m in GRID:
        gpipe = simulate_training([1.0] * p, [2.0] * p, m, "gpipe")
        one = simulate_training([1.0] * p, [2.0] * p, m, "1f1b")
        assert gpipe.peak_in_flight == (m,) * p
        assert one.peak_in_flight == tuple(min(p - j, m) for j in range(p))


def test_peak_in_flight_measured_in_time() -> None:
    """The same peaks counted from the Gantt chart: micro-batches whose F has started on a
    stage and whose B has not ended there, sampled at every op start."""
    rng = random.Random(7)
    for schedule, (p, m) in itertools.product(SCHEDULES, [(4, 8), (5, 3), (3, 3), (6, 7)]):
        fwd, bwd = _random_times(rng, p)
        r = simulate_training(fwd, bwd, m, schedule)
        for j in range(p):
            bars = [s for s in r.slots if s.stage == j]
            f_start = {s.microbatch: s.start_s for s in bars if s.kind == "F"}
            b_end = {s.microbatch: s.end_s for s in bars if s.kind == "B"}
            peak = max(sum(f_start[i] <= s.start_s < b_end[i] for i in range(m)) for s in bars)
            assert peak == r.peak_in_flight[j], (schedule, p, m, j)


def test_stage_order_as_stated() -> None:
    for schedule, (p, m) in itertools.product(SCHEDULES, GRID):
        for j in range(p):
            order = stage_order(schedule, j, p, m)
            assert order == _expected_order(schedule, j, p, m)
            assert sorted(order) == sorted([("F", i) for i in range(m)] + [("B", i) for i in range(m)])
    # the Gantt chart runs that order: Megatron's P = 4, M = 8 stage 1
    r = simulate_training([1.0] * 4, [2.0] * 4, 8, "1f1b")
    assert [(s.kind, s.microbatch) for s in r.slots if s.stage == 1] == [
        ("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1), ("F", 4), ("B", 2), ("F", 5),
        ("B", 3), ("F", 6), ("B", 4), ("F", 7), ("B", 5), ("B", 6), ("B", 7)]


# 3. brute-force cross-check


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_matches_longest_path(schedule: Schedule) -> None:
    rng = random.Random(2024)
    for _ in range(120):
        p, m = rng.randint(1, 6), rng.randint(1, 9)
        fwd, bwd = _random_times(rng, p)
        if rng.random() < 0.2:  # a zero-time stage (a pass-through) must not break the order
            fwd[rng.randrange(p)] = 0.0
        end = _longest_path(schedule, fwd, bwd, m)
        r = simulate_training(fwd, bwd, m, schedule)
        assert r.step_s == pytest.approx(max(end.values()), rel=1e-12)
        for s in r.slots:
            assert s.end_s == pytest.approx(end[s.kind, s.stage, s.microbatch], rel=1e-12,
                                            abs=1e-12)
        _check_valid(r)


# 4. bounds and the comparison of the schedules


def test_1f1b_equals_gpipe_on_identical_stages() -> None:
    for p, m in GRID:
        g = simulate_training([0.5] * p, [1.25] * p, m, "gpipe")
        o = simulate_training([0.5] * p, [1.25] * p, m, "1f1b")
        assert o.step_s <= g.step_s * (1 + 1e-12)
        assert o.step_s == pytest.approx(g.step_s, rel=1e-12)


def test_heterogeneous_lower_bounds() -> None:
    rng = random.Random(99)
    for _ in range(200):
        p, m = rng.randint(1, 6), rng.randint(1, 10)
        fwd, bwd = _random_times(rng, p)
        busiest = max(m * (f + b) for f, b in zip(fwd, bwd, strict=True))
        one_pass = sum(fwd) + sum(bwd)
        for schedule in SCHEDULES:
            r = simulate_training(fwd, bwd, m, schedule)
            assert r.step_s >= busiest * (1 - 1e-12)
            assert r.step_s >= one_pass * (1 - 1e-12)
            assert 0.0 <= r.bubble_fraction < 1.0
            assert all(0.0 < u <= 1.0 for u in r.busy_fraction)
            assert max(r.busy_fraction) == pytest.approx(busiest / r.step_s)


# 5. throughput, MFU, to_dict, input validation


def test_tokens_and_mfu() -> None:
    r = simulate_training([1.0] * 4, [2.0] * 4, 8, "1f1b", tokens_per_microbatch=4096,
                          flops_per_microbatch=6e15, peak_flops=1e15)
    assert r.step_s == 33.0
    assert r.tokens_per_s == pytest.approx(4096 * 8 / 33.0)
    assert r.mfu == pytest.approx(6e15 * 8 / (33.0 * 4 * 1e15))
    bare = simulate_training([1.0] * 4, [2.0] * 4, 8, "1f1b")
    assert bare.tokens_per_s is None and bare.mfu is None
    assert simulate_training([1.0], [2.0], 2, "gpipe", flops_per_microbatch=1e12).mfu is None
    assert simulate_training([1.0], [2.0], 2, "gpipe", peak_flops=1e12).mfu is None
    only_tokens = simulate_training([1.0], [2.0], 2, "gpipe", tokens_per_microbatch=3)
    assert only_tokens.tokens_per_s == pytest.approx(1.0) and only_tokens.mfu is None


def test_to_dict() -> None:
    r = simulate_training([1.0, 0.5], [2.0, 1.0], 3, "gpipe", tokens_per_microbatch=10)
    full = r.to_dict()
    assert len(full["slots"]) == 12
    assert full["slots"][0] == {"stage": 0, "microbatch": 0, "kind": "F", "start_s": 0.0,
                                "end_s": 1.0}
    assert full["peak_in_flight"] == [3, 3]
    assert full["step_s"] == r.step_s and full["mfu"] is None
    short = r.to_dict(with_slots=False)
    assert "slots" not in short and short["bubble_fraction"] == r.bubble_fraction
    json.dumps(full)  # JSON-ready


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"forward_s": []}, "forward_s"),
    ({"forward_s": [1.0, -1.0]}, "forward_s"),
    ({"forward_s": [1.0, math.nan]}, "forward_s"),
    ({"forward_s": [math.inf, 1.0]}, "forward_s"),
    ({"forward_s": [True, 1.0]}, "forward_s"),
    ({"forward_s": ["1", 1.0]}, "forward_s"),
    ({"forward_s": "12"}, "forward_s"),
    ({"backward_s": [1.0]}, "backward_s"),
    ({"backward_s": [1.0, None]}, "backward_s"),
    ({"backward_s": [1.0, 2.0, 3.0]}, "backward_s"),
    ({"microbatches": 0}, "microbatches"),
    ({"microbatches": 2.0}, "microbatches"),
    ({"microbatches": True}, "microbatches"),
    ({"schedule": "pipedream"}, "schedule"),
    ({"schedule": "1F1B"}, "schedule"),
    ({"schedule": None}, "schedule"),
    ({"tokens_per_microbatch": 0}, "tokens_per_microbatch"),
    ({"flops_per_microbatch": -1.0}, "flops_per_microbatch"),
    ({"peak_flops": 0.0}, "peak_flops"),
    ({"forward_s": [0.0, 0.0], "backward_s": [0.0, 0.0]}, "forward_s"),
])
def test_bad_input_names_the_field(kwargs: dict, field: str) -> None:
    args = {"forward_s": [1.0, 1.0], "backward_s": [2.0, 2.0], "microbatches": 4,
            "schedule": "1f1b"} | kwargs
    with pytest.raises(InvalidInputError) as err:
        simulate_training(**args)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert "\n" not in str(err.value)


def test_deadlock_is_a_solver_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong order (a backward before its own forward) stalls; the guard reports it instead of
    returning a schedule with ops missing."""
    def broken(schedule: str, stage: int, stages: int, microbatches: int) -> list:
        return [("B", 0), ("F", 0)] + [("F", i) for i in range(1, microbatches)] + [
            ("B", i) for i in range(1, microbatches)]
    monkeypatch.setattr(sched, "stage_order", broken)
    with pytest.raises(SolverError, match="deadlock"):
        simulate_training([1.0, 1.0], [1.0, 1.0], 2, "gpipe")
