"""The segment ILP on every installed backend: exact against brute force and the other exact
methods, honest about what it proved, and quiet (no output, no files)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from solver import (
    ILP_BACKENDS,
    InvalidInputError,
    MemoryModel,
    ProgressEvent,
    SolveOptions,
    SolverError,
    Status,
    check_partition,
    diagnose,
    lower_bound,
)
from solver.algorithms import dp_bottleneck, greedy_bounds, minmax_partition, optimal_bottleneck
from solver.algorithms.ilp import IlpBackend, solve_ilp
from solver.algorithms.ilp.canonical import build_segment_model
from solver.algorithms.ilp.model import MilpModel, MilpResult, TimeScale
from solver.cli import main

from .helpers import brute_force, random_problem

BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not b.available(), reason=f"{name} missing"))
    for name, b in ILP_BACKENDS.items()
]
LIMIT = 30.0  # generous: these instances solve in milliseconds


def _options(backend: str, **kw: object) -> SolveOptions:
    return SolveOptions(time_limit_s=LIMIT, backend=backend, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("memory_model", ["additive", "peak"])
@pytest.mark.parametrize("link", [True, False])
@pytest.mark.parametrize("use_hint", [True, False])
def test_equals_brute_force(backend: str, memory_model: str, link: bool, use_hint: bool) -> None:
    rng = np.random.default_rng(7)
    for seed in range(15):
        n = int(rng.integers(1, 9))
        problem = random_problem(seed, n, memory_model=memory_model, link=link)
        best = brute_force(problem)
        result = solve_ilp(problem, _options(backend, use_hint=use_hint))
        if not np.isfinite(best):
            assert result.status is Status.INFEASIBLE and result.diagnosis
            continue
        assert result.status is Status.OPTIMAL, (seed, n, result.info)
        check_partition(problem, result.bounds)
        assert result.objective == pytest.approx(best, rel=1e-9)
        assert result.objective == problem.objective(result.bounds)
        assert result.bound == result.objective and result.gap == 0.0
        assert result.method == "ilp" and result.backend == backend
        check_partition(problem, result.info["ilp_partition"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_hint", [True, False])
def test_equals_dp_and_parametric_at_n40(backend: str, use_hint: bool) -> None:
    for seed, memory_model in [(1, "additive"), (2, "peak"), (3, "additive")]:
        problem = random_problem(seed, 40, max_stages=6, memory_model=memory_model)
        dp_value, _ = dp_bottleneck(problem)
        para_value, _ = optimal_bottleneck(problem)
        result = solve_ilp(problem, _options(backend, use_hint=use_hint))
        assert result.status is Status.OPTIMAL
        assert result.objective == pytest.approx(dp_value, rel=1e-9)
        assert result.objective == pytest.approx(para_value, rel=1e-9)
        # Every exact method returns the canonical plan of the optimum.
        assert result.bounds == minmax_partition(problem)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_poor_hint_still_gives_the_optimum(backend: str) -> None:
    tried = 0
    for seed in range(20):
        problem = random_problem(seed, 24, max_stages=8)
        greedy = greedy_bounds(problem)
        best = problem.objective(minmax_partition(problem))
        if len(greedy) - 1 > problem.max_stages or problem.objective(greedy) <= best:
            continue
        tried += 1
        result = solve_ilp(problem, _options(backend, hint=greedy))
        assert result.status is Status.OPTIMAL
        assert result.objective == pytest.approx(best, rel=1e-9)
        assert result.info["incumbent_objective"] == problem.objective(greedy)
        if tried == 4:
            break
    assert tried == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_latencies(backend: str) -> None:
    problem = random_problem(14, 10, link=False).replace(latency_s=np.zeros(10))
    for use_hint in (True, False):
        result = solve_ilp(problem, _options(backend, use_hint=use_hint))
        assert result.status is Status.OPTIMAL and result.objective == 0.0
        assert result.bounds == minmax_partition(problem)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lower_bound_at_the_optimum_up_to_rounding(backend: str) -> None:
    # The direct sums in lower_bound once landed an ulp above this optimum (a prefix-sum
    # difference): the bound is now shaved, and the ILP's z floor must cope with a bound this
    # close either way.
    problem = random_problem(1136, 9, tightness=0.45279846052908246)
    best, _ = optimal_bottleneck(problem)
    assert best is not None and best * (1 - 1e-11) < lower_bound(problem) <= best
    for use_hint in (True, False):
        result = solve_ilp(problem, _options(backend, use_hint=use_hint))
        assert result.status is Status.OPTIMAL and result.objective == best
        assert result.bound == best


def test_unknown_backend() -> None:
    problem = random_problem(0, 5)
    with pytest.raises(InvalidInputError,
                       match=r"^backend: unknown ILP backend 'x' \(known: cpsat, highs, cbc\)$"):
        solve_ilp(problem, SolveOptions(backend="x"))


class _StandIn(IlpBackend):
    """A backend whose answer the test chooses."""

    def __init__(self, name: str, answer: object, available: bool = True) -> None:
        self.name, self.summary, self.install = name, "stand-in", "nothing"
        self._answer, self._available = answer, available
        self.models: list[MilpModel] = []

    def _probe(self) -> bool:
        return self._available

    def solve(self, model: MilpModel, options: SolveOptions, t0: float) -> MilpResult:
        self.models.append(model)
        return self._answer(model)  # type: ignore[operator]


def test_unavailable_backend_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = _StandIn("highs", lambda m: MilpResult("x", None), available=False)
    monkeypatch.setitem(ILP_BACKENDS, "highs", missing)
    with pytest.raises(SolverError, match="'highs'") as err:
        solve_ilp(random_problem(0, 5), SolveOptions(backend="highs"))
    assert err.value.field == "backend"


def test_time_scale_is_one_definition() -> None:
    ts = TimeScale(2.0)
    assert ts.scale == 5e8
    assert ts.to_int(np.array([2.0, 1.0])).tolist() == [1_000_000_000, 500_000_000]
    bound = ts.int_bound_s(1_000_000_000)
    assert bound is not None and bound < 2.0 and bound == pytest.approx(2.0, rel=1e-8)
    assert ts.int_bound_s(float("inf")) is None


def test_backends_interface() -> None:
    assert list(ILP_BACKENDS) == ["cpsat", "highs", "cbc"]
    for name, backend in ILP_BACKENDS.items():
        assert backend.name == name and backend.summary
        assert isinstance(backend.available(), bool)
    assert SolveOptions().backend is None and SolveOptions().use_hint is True


def test_default_backend_is_cpsat() -> None:
    if not ILP_BACKENDS["cpsat"].available():
        pytest.skip("ortools missing")
    result = solve_ilp(random_problem(3, 12), SolveOptions(time_limit_s=LIMIT))
    assert result.backend == "cpsat" and result.status is Status.OPTIMAL
    assert result.info["scale"] > 0
    json.dumps(result.to_dict())  # the record goes into plan JSON


def test_invalid_hint_is_an_input_error() -> None:
    problem = random_problem(0, 6)
    with pytest.raises(InvalidInputError, match=r"^hint: ") as err:
        solve_ilp(problem, SolveOptions(hint=(0, 3)))
    assert err.value.field == "hint"


def test_infeasible_returns_a_diagnosis() -> None:
    problem = random_problem(4, 10).replace(max_stages=1)
    result = solve_ilp(problem, SolveOptions(time_limit_s=LIMIT, use_hint=False))
    assert result.status is Status.INFEASIBLE and result.bounds == ()
    assert "devices" in (result.diagnosis or "")
    assert result.bound == lower_bound(problem)


def test_cpsat_reports_progress() -> None:
    if not ILP_BACKENDS["cpsat"].available():
        pytest.skip("ortools missing")
    problem = random_problem(5, 60, max_stages=8)
    events: list[ProgressEvent] = []
    result = solve_ilp(problem, SolveOptions(time_limit_s=LIMIT, use_hint=False,
                                             progress=events.append))
    assert result.status is Status.OPTIMAL
    assert events and all(e.method == "ilp" and e.elapsed_s >= 0 for e in events)
    assert all(e.objective is not None and e.bound is not None for e in events)
    assert all(e.bound <= e.objective for e in events)  # type: ignore[operator]
    assert events[-1].objective == pytest.approx(result.objective, rel=1e-6)


def test_cpsat_repeats_itself() -> None:
    if not ILP_BACKENDS["cpsat"].available():
        pytest.skip("ortools missing")
    problem = random_problem(6, 50, max_stages=7, memory_model=MemoryModel.PEAK)
    runs = [solve_ilp(problem, SolveOptions(time_limit_s=LIMIT, use_hint=False, workers=2))
            for _ in range(3)]
    assert len({r.bounds for r in runs}) == 1
    assert len({r.objective for r in runs}) == 1
    assert len({tuple(r.info["ilp_partition"]) for r in runs}) == 1


def test_pruning_keeps_every_plan_at_least_as_good() -> None:
    problem = random_problem(8, 25, max_stages=5)
    incumbent = minmax_partition(problem)
    assert incumbent is not None
    model = build_segment_model(problem, incumbent)
    keys = set(zip(model.starts.tolist(), model.ends.tolist(), strict=True))
    assert set(itertools.pairwise(incumbent)) <= keys
    assert np.all(model.times <= model.upper)
    full = build_segment_model(problem, None)
    assert model.size < full.size <= full.capacity_segments
    # Every segment kept fits and matches Problem.stage_time bit for bit.
    for s, e, t in zip(model.starts.tolist(), model.ends.tolist(), model.times.tolist(),
                       strict=True):
        assert problem.stage_memory(s, e) <= problem.capacity_bytes
        assert t == problem.stage_time(s, e)


# ----- status rules, with a stand-in backend ---------------------------------------------------
def _fake(monkeypatch: pytest.MonkeyPatch, answer: object) -> _StandIn:
    backend = _StandIn("cpsat", answer)
    monkeypatch.setitem(ILP_BACKENDS, "cpsat", backend)
    return backend


def test_proof_without_certificate_is_only_feasible(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(9, 12, max_stages=4)
    greedy = greedy_bounds(problem)
    assert len(greedy) - 1 <= problem.max_stages
    assert problem.objective(greedy) > problem.objective(minmax_partition(problem))
    # A backend that "proves" a worse plan (as rounding could): the certificate refuses it.
    chosen = build_segment_model(problem, None).mask_of(greedy)
    _fake(monkeypatch, lambda m: MilpResult("OPTIMAL", chosen, proven=True, bound_s=1e9))
    result = solve_ilp(problem, SolveOptions(use_hint=False))
    assert result.status is Status.FEASIBLE
    assert result.info["certificate"] is False
    assert result.info["ilp_partition"] == list(greedy)
    assert result.objective <= problem.objective(greedy)
    assert lower_bound(problem) <= result.bound <= result.objective


def test_time_limited_is_feasible_with_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(10, 12, max_stages=4)
    best = minmax_partition(problem)
    assert best is not None
    chosen = build_segment_model(problem, None).mask_of(best)
    _fake(monkeypatch, lambda m: MilpResult("FEASIBLE", chosen, bound_s=-1.0))
    result = solve_ilp(problem, SolveOptions(use_hint=False))
    assert result.status is Status.FEASIBLE  # optimal in fact, but nothing proved it
    assert result.bound == lower_bound(problem)


def test_no_solution_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(11, 12, max_stages=4)
    _fake(monkeypatch, lambda m: MilpResult("UNKNOWN", None))
    with pytest.raises(SolverError, match="no solution within 7 s"):
        solve_ilp(problem, SolveOptions(use_hint=False, time_limit_s=7))
    result = solve_ilp(problem, SolveOptions(time_limit_s=7))  # the incumbent stands
    assert result.status is Status.FEASIBLE
    assert result.objective == problem.objective(minmax_partition(problem))
    assert result.bound == lower_bound(problem)


def test_backend_infeasible_without_incumbent(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(12, 8, max_stages=6)
    assert diagnose(problem) is None  # feasible in fact: only the backend says otherwise
    _fake(monkeypatch, lambda m: MilpResult("INFEASIBLE", None, infeasible=True))
    result = solve_ilp(problem, SolveOptions(use_hint=False))
    assert result.status is Status.INFEASIBLE
    assert result.diagnosis == "the ILP found no feasible partition"


@pytest.mark.parametrize("extra", [[], ["--tp", "1,2"], ["--residency", "partial"]])
def test_out_of_time_without_a_solution_is_exit_4_on_every_path(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        extra: list[str]) -> None:
    """The canonical, tensor-parallel and tiered ILPs alike: no solution within the limit and
    no warm start is a solver failure (exit 4), never bad input; with a warm start it stands."""
    import solver.cli.solve as solve_command

    backend = _fake(monkeypatch, lambda m: MilpResult("UNKNOWN", None))
    with_hint = solve_command.options_from_args
    monkeypatch.setattr(solve_command, "options_from_args",  # no warm start to fall back on
                        lambda args, **kw: with_hint(args, use_hint=False, **kw))
    argv = ["solve", "tiny-llama", "--seq", "16", "-k", "4", "-c", "l2", "-m", "ilp", "-q",
            "--time-limit", "3", *extra]
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert err.startswith("cachepart: solver error: ilp (cpsat): no solution within 3 s")
    assert backend.models  # the stand-in ran: the ILP was reached on this path
    monkeypatch.setattr(solve_command, "options_from_args", with_hint)
    assert main(argv) == 0


# ----- hygiene ----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_output_and_no_files(backend: str, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for use_hint in (True, False):
        solve_ilp(random_problem(13, 20, max_stages=5), _options(backend, use_hint=use_hint))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert list(tmp_path.iterdir()) == []
