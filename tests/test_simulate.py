"""The GPipe forward simulator against its closed forms; simulate_plan; the simulate sub-command."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solver import (
    InvalidInputError,
    Plan,
    SimResult,
    build_plan,
    chain_from_dict,
    problem_from_graph,
    simulate,
    simulate_plan,
    solve,
)
from solver.cli import main

from .test_inputs import CHAIN

WORKLOAD = {"batch": 8, "micro_batch": 2, "seq_len": 16, "phase": "prefill"}
times_st = st.lists(st.floats(min_value=1e-4, max_value=10.0, allow_nan=False), min_size=1,
                    max_size=8)


def _check_schedule(r: SimResult) -> None:
    """Every precedence the model states holds and no stage runs two things at once."""
    at = {(s.stage, s.microbatch, s.step): s for s in r.slots}
    assert len(at) == r.stages * r.microbatches * r.decode_steps
    for (j, i, k), s in at.items():
        assert s.end_s - s.start_s == pytest.approx(r.stage_times_s[j])
        if j > 0:
            assert s.start_s >= at[j - 1, i, k].end_s - 1e-12
        elif k > 0:  # autoregressive: the previous token of this micro-batch has left the pipeline
            assert s.start_s >= at[r.stages - 1, i, k - 1].end_s - 1e-12
    for j in range(r.stages):
        bars = sorted((s.start_s, s.end_s) for s in r.slots if s.stage == j)
        assert all(a[1] <= b[0] + 1e-12 for a, b in itertools.pairwise(bars))


@settings(max_examples=60, deadline=None)
@given(times=times_st, m=st.integers(1, 12))
def test_matches_closed_form(times: list[float], m: int) -> None:
    r = simulate(times, m)
    assert r.makespan_s == pytest.approx(sum(times) + (m - 1) * max(times), rel=1e-9)
    assert r.fill_latency_s == pytest.approx(sum(times))
    assert r.bubble_fraction == pytest.approx(1 - m * sum(times) / (len(times) * r.makespan_s))
    _check_schedule(r)


@settings(max_examples=40, deadline=None)
@given(t=st.floats(min_value=1e-3, max_value=5.0), s=st.integers(1, 8), m=st.integers(1, 12))
def test_equal_stages_bubble(t: float, s: int, m: int) -> None:
    r = simulate([t] * s, m)
    assert r.makespan_s == pytest.approx((s + m - 1) * t, rel=1e-9)
    assert r.bubble_fraction == pytest.approx((s - 1) / (s + m - 1), abs=1e-9)
    assert all(u == pytest.approx(m / (s + m - 1)) for u in r.utilisation)


def test_one_stage_has_no_bubble() -> None:
    r = simulate([0.5], 4, tokens_per_microbatch=10)
    assert r.makespan_s == pytest.approx(2.0)
    assert r.bubble_fraction == pytest.approx(0.0)
    assert r.utilisation == (pytest.approx(1.0),)
    assert r.tokens == 40
    assert r.tokens_per_s == pytest.approx(20.0) == r.steady_tokens_per_s
    assert r.tpot_paper_s == pytest.approx(1 / 20.0)
    assert r.tpot_per_sequence_s is None  # prefill


def test_bottleneck_utilisation_tends_to_one() -> None:
    times = [0.1, 0.4, 0.2]
    utils = [simulate(times, m).utilisation[1] for m in (1, 10, 100, 1000)]
    assert utils == sorted(utils)
    assert utils[-1] > 0.999
    big = simulate(times, 1000, tokens_per_microbatch=32)
    assert big.bottleneck_stage == 1
    assert big.tokens_per_s == pytest.approx(big.steady_tokens_per_s, rel=1e-3)


@pytest.mark.parametrize(("s", "m"), [(4, 2), (4, 4), (3, 7), (1, 3)])
def test_decode_steps_equal_stages(s: int, m: int) -> None:
    t, k = 0.01, 3
    r = simulate([t] * s, m, phase="decode", decode_steps=k, tokens_per_microbatch=2)
    # M < S: the pipeline drains and waits for the token every step; M >= S: it stays full.
    assert r.makespan_s == pytest.approx(((k - 1) * max(m, s) + s + m - 1) * t)
    assert r.tokens == m * k * 2
    assert r.tpot_per_sequence_s == pytest.approx(r.makespan_s / k)
    assert r.tpot_paper_s == pytest.approx(r.makespan_s / r.tokens)
    _check_schedule(r)


def test_decode_dependency_is_binding() -> None:
    # One micro-batch: every step is a full fill, nothing overlaps.
    r = simulate([1.0, 2.0, 3.0], 1, phase="decode", decode_steps=4)
    assert r.makespan_s == pytest.approx(4 * 6.0)
    first = {s.step: s for s in r.slots if s.stage == 0}
    last = {s.step: s for s in r.slots if s.stage == 2}
    for k in range(1, 4):
        assert first[k].start_s == pytest.approx(last[k - 1].end_s)
    # One decode step is the plain forward pass.
    assert simulate([1.0, 2.0, 3.0], 5, phase="decode").makespan_s == pytest.approx(6 + 4 * 3)


@settings(max_examples=40, deadline=None)
@given(times=times_st, m=st.integers(1, 6), k=st.integers(1, 4))
def test_decode_schedule_is_valid(times: list[float], m: int, k: int) -> None:
    r = simulate(times, m, phase="decode", decode_steps=k)
    _check_schedule(r)
    # Never faster than the bottleneck's work, never slower than running each step alone.
    assert r.makespan_s >= m * k * max(times) - 1e-9
    assert r.makespan_s <= k * (sum(times) + (m - 1) * max(times)) + 1e-9


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"stage_times": [], "microbatches": 1}, "stages"),
    ({"stage_times": [1.0, -1.0], "microbatches": 1}, "stages/1/latency_s"),
    ({"stage_times": [0.0, 0.0], "microbatches": 1}, "latency_s"),
    ({"stage_times": [float("nan")], "microbatches": 1}, "stages/0/latency_s"),
    ({"stage_times": [1.0], "microbatches": 0}, "microbatches"),
    ({"stage_times": [1.0], "microbatches": 1, "decode_steps": 2}, "decode_steps"),
    ({"stage_times": [1.0], "microbatches": 1, "phase": "train"}, "phase"),
])
def test_bad_input(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        simulate(**kwargs)


def _plan(workload: dict | None = WORKLOAD) -> Plan:
    graph = chain_from_dict(CHAIN)
    problem = problem_from_graph(graph, capacity_bytes=300_000_000, max_stages=3)
    return build_plan(graph, problem, solve(problem, "dp"), workload=workload)


def test_simulate_plan() -> None:
    plan = _plan()
    times = [s.latency_s for s in plan.stages]
    r = simulate_plan(plan)
    assert r.stages == 3 and r.microbatches == 4
    assert r.makespan_s == pytest.approx(sum(times) + 3 * max(times))
    assert r.tokens_per_microbatch == 2 * 16 and r.tokens == 8 * 16
    assert r.tokens_per_s == pytest.approx(128 / r.makespan_s)
    assert r.steady_tokens_per_s == pytest.approx(32 / max(times))
    assert r.tpot_paper_s == pytest.approx(1 / r.tokens_per_s)
    json.dumps(r.to_dict())
    assert simulate_plan(plan, microbatches=10).microbatches == 10
    assert simulate_plan(plan, microbatches=10).tokens == 10 * 32


def test_simulate_plan_partial_microbatch_and_decode() -> None:
    r = simulate_plan(_plan({**WORKLOAD, "batch": 7}))
    assert r.microbatches == 4 and r.tokens == 7 * 16  # ceil(7 / 2); real sequences only
    d = simulate_plan(_plan({**WORKLOAD, "phase": "decode"}), decode_steps=5)
    assert d.tokens_per_microbatch == 2 and d.tokens == 8 * 5
    assert d.tpot_per_sequence_s == pytest.approx(d.makespan_s / 5)


def test_simulate_plan_empty_workload() -> None:
    r = simulate_plan(_plan({}))
    assert r.microbatches == 1 and r.phase is None
    assert r.tokens is None and r.tokens_per_s is None and r.tpot_paper_s is None
    assert r.makespan_s == pytest.approx(r.fill_latency_s)


@pytest.mark.parametrize(("workload", "field"), [
    ({**WORKLOAD, "micro_batch": 0}, "workload.micro_batch"),
    ({**WORKLOAD, "micro_batch": 9}, "workload.micro_batch"),
    ({**WORKLOAD, "phase": "train"}, "workload.phase"),
    ({**WORKLOAD, "batch": "8"}, "workload.batch"),
])
def test_simulate_plan_bad_workload(workload: dict, field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        simulate_plan(_plan(workload))


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plan.json"
    _plan().save(path)
    code, out, err = _cli(["simulate", str(path)], capsys)
    assert code == 0 and err == ""
    for text in ("3 stages, 4 micro-batches, prefill", "makespan", "fill latency",
                 "tokens/s batch", "tokens/s steady", "TPOT per sequence", "TPOT paper",
                 "bubble fraction", "utilisation"):
        assert text in out
    code, out, _ = _cli(["simulate", str(path), "--microbatches", "6", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["microbatches"] == 6 and data["stages"] == 3
    assert len(data["slots"]) == 18
    assert math.isclose(data["tpot_paper_s"], 1 / data["tokens_per_s"])


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, out, err = _cli(["simulate", str(bad)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("cachepart: error: ") and err.count("\n") == 1
    good = tmp_path / "plan.json"
    _plan().save(good)
    code, _, err = _cli(["simulate", str(good), "--decode-steps", "3"], capsys)
    assert code == 2 and "--decode-steps: must be 1 in the prefill phase" in err
    code, _, err = _cli(["simulate", str(tmp_path / "missing.json")], capsys)
    assert code == 2 and "cannot read" in err
