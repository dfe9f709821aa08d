"""The serving objective (solve --objective kv-capacity): the most KV-cache tokens on the
tightest stage, then the smallest bottleneck. Every exact method equals brute force over every
partition (both memory models, allowed cuts, clusters); the KV bytes models compute; plans
record and check the capacity; simulate --context turns it into sequences and tokens/s."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from solver import (
    ILP_BACKENDS,
    InvalidInputError,
    MemoryModel,
    Problem,
    SolveOptions,
    SolverError,
    Status,
    TensorParallel,
    check_partition,
    random_problem,
)
from solver.algorithms import max_kv_tokens, solve_kv
from solver.cli import main
from solver.core import Link, smallest_kv_tokens, stage_kv_tokens
from tests.test_cluster import fleet_problem

BACKENDS = [name for name, backend in ILP_BACKENDS.items() if backend.available()]
EXACT = [("parametric", None), ("dp", None)] + [("ilp", b) for b in BACKENDS]


def _with_kv(problem: Problem, seed: int, every: bool = False) -> Problem:
    """KV bytes on about two layers in three (``every``: on all), sized so a stage holds tens
    to thousands of tokens: the search has room to move."""
    rng = np.random.default_rng(seed + 31)
    kv = rng.integers(1, 40, problem.n) * (every | (rng.random(problem.n) < 0.7))
    if not kv.any():
        kv[0] = 7
    return problem.replace(kv_bytes_per_token=kv)


def _brute(problem: Problem) -> tuple[int, float] | None:
    """(most KV tokens on the tightest stage, smallest bottleneck among those plans) over every
    partition and, on a cluster, every placement check_partition accepts; None: nothing fits."""
    fleet = problem.fleet
    n = problem.n
    limit = problem.max_stages if fleet is None else fleet.size
    best: tuple[int, float] | None = None
    for k in range(1, min(n, limit) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            placements = [None] if fleet is None or fleet.placement == "ordered" else \
                itertools.product(range(fleet.size), repeat=k)
            for ranks in placements:
                try:
                    costs = check_partition(problem, bounds, ranks=ranks)
                except SolverError:
                    continue
                held = smallest_kv_tokens(stage_kv_tokens(problem, costs))
                assert held is not None  # some layer holds KV, so some stage does
                key = (held, max(c.time_s for c in costs))
                if best is None or (key[0], -key[1]) > (best[0], -best[1]):
                    best = key
    return best


def _check(problem: Problem, methods: list[tuple[str, str | None]]) -> None:
    expected = _brute(problem)
    search = max_kv_tokens(problem)
    assert search.tokens == (None if expected is None else expected[0])
    for method, backend in methods:
        part = solve_kv(problem, method, SolveOptions(backend=backend or "cpsat",
                                                      time_limit_s=30))
        if expected is None or expected[0] == 0:
            assert part.status is Status.INFEASIBLE, (method, backend)
            assert part.diagnosis
            continue
        assert part.status is Status.OPTIMAL, (method, backend, part.diagnosis)
        costs = check_partition(problem, part.bounds, ranks=part.ranks)
        assert smallest_kv_tokens(stage_kv_tokens(problem, costs)) == expected[0], method
        assert part.objective == pytest.approx(expected[1], rel=1e-9), (method, backend)
        assert part.info["kv_capacity_tokens"] == expected[0]


@pytest.mark.parametrize("every", [False, True], ids=["some-kv-less", "all-kv"])
@pytest.mark.parametrize("memory", list(MemoryModel))
@pytest.mark.parametrize("seed", range(16))
def test_every_exact_method_equals_brute_force(seed: int, memory: MemoryModel,
                                               every: bool) -> None:
    n = 3 + seed % 6
    problem = random_problem(seed, n, memory_model=memory, tightness=0.3 + 0.1 * (seed % 4))
    kv = _with_kv(problem, seed, every)
    assert bool((kv.kv_bytes_per_token > 0).all()) or not every
    _check(kv, EXACT)


@pytest.mark.parametrize("seed", range(10))
def test_with_allowed_cuts(seed: int) -> None:
    n = 4 + seed % 5
    rng = np.random.default_rng(seed + 5)
    mask = rng.random(n + 1) < 0.6
    mask[0] = mask[-1] = True
    problem = _with_kv(random_problem(seed, n, tightness=0.4), seed).replace(allowed_cuts=mask)
    _check(problem, EXACT)


@pytest.mark.parametrize("free", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_on_clusters(seed: int, free: bool) -> None:
    problem = _with_kv(fleet_problem(seed, 2 + seed % 4, free=free), seed)
    _check(problem, [("dp", None), ("ilp", BACKENDS[0])])


def test_the_objective_trades_speed_for_tokens() -> None:
    """Two layers, two devices: together they are fastest (no transfer), apart each holds more
    KV. The latency plan keeps them together; kv-capacity splits them."""
    problem = Problem(names=("a", "b"), weight_bytes=[400, 400], activation_bytes=[100, 100],
                      buffer_bytes=[0, 0], latency_s=[1.0, 1.0], capacity_bytes=1000,
                      max_stages=2, link=Link(bandwidth_bytes_per_s=1.0, latency_s=5.0),
                      kv_bytes_per_token=[10, 10])
    from solver import solve

    fast = solve(problem, "dp")
    assert fast.bounds == (0, 2) and fast.objective == pytest.approx(2.0)
    roomy = solve_kv(problem, "dp")
    # together: (1000 - 1000) // 20 = 0 tokens; apart: (1000 - 500) // 10 = 50 each
    assert roomy.bounds == (0, 1, 2)
    assert roomy.info["kv_capacity_tokens"] == 50
    assert roomy.objective == pytest.approx(1.0 + 5.0 + 100 / 1.0)


def test_refusals_name_the_reason() -> None:
    base = random_problem(3, 5, tightness=0.5)
    with pytest.raises(InvalidInputError, match="kv_bytes_per_token") as none:
        solve_kv(base)
    assert none.value.field == "objective"
    with pytest.raises(InvalidInputError, match="every layer"):
        solve_kv(base.replace(kv_bytes_per_token=[0] * 5))
    kv = _with_kv(base, 3)
    with pytest.raises(InvalidInputError, match="heuristic") as greedy:
        solve_kv(kv, "greedy")
    assert greedy.value.field == "method"
    tp = TensorParallel((1, 2), 2, np.zeros(5, dtype=np.int64), Link(1e6, 0.001))
    with pytest.raises(InvalidInputError, match="tensor parallelism"):
        solve_kv(kv.replace(tensor_parallel=tp))
    with pytest.raises(InvalidInputError, match="expected 5"):
        base.replace(kv_bytes_per_token=[1, 2])


def test_models_compute_kv_bytes_per_token() -> None:
    """Llama-3-8B: 8 KV heads x head dim 128 x K and V x 2 bytes (bf16) = 4096 bytes a token
    per block; the embedding and the head hold none."""
    from solver import Workload, load_model, problem_from_graph

    loaded = load_model("llama3-8b", Workload(seq_len=128), device="h100-sxm")
    rows = {layer["name"]: layer.get("kv_bytes_per_token") for layer in loaded.graph.layers()}
    assert rows["block0"] == rows["block31"] == 2 * 8 * 128 * 2
    assert rows["embed"] == rows["head"] == 0
    problem = problem_from_graph(loaded.graph, capacity_bytes=80 * 10**9, max_stages=4)
    assert problem.kv_bytes_per_token is not None
    assert int(problem.kv_bytes_per_token.sum()) == 32 * 4096


def _solve(tmp_path: Path, *extra: str, name: str = "plan.json") -> dict:
    out = tmp_path / name
    code = main(["solve", "llama3-8b", "--devices", "4", "--device", "h100-sxm", "--capacity",
                 "24GB", "--seq", "2048", "-q", "-o", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_cli_kv_plan_holds_more_tokens_and_records_them(tmp_path: Path, capsys) -> None:
    latency = _solve(tmp_path, name="latency.json")
    kv = _solve(tmp_path, "--objective", "kv-capacity", name="kv.json")
    assert latency["objective"]["name"] == "latency"
    assert kv["objective"]["name"] == "kv-capacity"
    held = [st["kv_capacity_tokens"] for st in kv["stages"]]
    assert kv["objective"]["kv_capacity_tokens"] == min(held)
    assert kv["objective"]["kv_capacity_tokens"] >= latency["objective"]["kv_capacity_tokens"]
    assert kv["objective"]["max_stage_latency_s"] >= latency["objective"]["max_stage_latency_s"]
    for st in kv["stages"]:
        assert st["kv_capacity_tokens"] == st["headroom_bytes"] * st["tp_degree"] \
            // st["kv_bytes_per_token"]
    # an exact search: no partition of these layers holds one token more on every stage
    from solver import Workload, load_model, problem_from_graph

    loaded = load_model("llama3-8b", Workload(seq_len=2048), device="h100-sxm")
    problem = problem_from_graph(loaded.graph, capacity_bytes=24 * 10**9, max_stages=4)
    assert max_kv_tokens(problem).tokens == kv["objective"]["kv_capacity_tokens"]


def test_cli_refusals_and_infeasible(tmp_path: Path, capsys) -> None:
    base = ["solve", "llama3-8b", "--devices", "4", "--device", "h100-sxm", "--seq", "2048",
            "--objective", "kv-capacity", "-q"]
    assert main([*base, "--capacity", "24GB", "--tp", "2"]) == 2
    assert "--objective" in capsys.readouterr().err
    assert main([*base, "--capacity", "24GB", "--method", "greedy"]) == 2
    assert "--method" in capsys.readouterr().err
    # a chain whose second layer fills its device but for 4 bytes, half a token's KV
    chain = {"name": "full", "layers": [
        {"name": "a", "weight_bytes": 960, "activation_bytes": 0, "buffer_bytes": 0,
         "latency_s": 1.0, "kv_bytes_per_token": 8},
        {"name": "b", "weight_bytes": 996, "activation_bytes": 0, "buffer_bytes": 0,
         "latency_s": 1.0, "kv_bytes_per_token": 8}]}
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(chain))
    solve = ["solve", str(path), "--devices", "2", "--capacity", "1000",
             "--objective", "kv-capacity", "-q"]
    assert main(solve) == 3
    err = capsys.readouterr().err
    assert "no plan holds even one token" in err and len(err.strip().splitlines()) == 1
    # give b 20 bytes: a's stage holds (1000 - 960) // 8 = 5 tokens, b's 20 // 8 = 2
    chain["layers"][1]["weight_bytes"] = 980
    path.write_text(json.dumps(chain))
    out = tmp_path / "ok.json"
    assert main([*solve, "-o", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert [st["kv_capacity_tokens"] for st in plan["stages"]] == [5, 2]
    assert plan["objective"]["kv_capacity_tokens"] == 2


def test_chain_field_is_type_checked(tmp_path: Path, capsys) -> None:
    chain = {"name": "c", "layers": [
        {"name": "a", "weight_bytes": 10, "activation_bytes": 1, "buffer_bytes": 0,
         "latency_s": 1.0, "kv_bytes_per_token": "many"}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(chain))
    assert main(["solve", str(path), "--devices", "1", "--capacity", "100", "-q"]) == 2
    err = capsys.readouterr().err
    assert "kv_bytes_per_token" in err and "Traceback" not in err


def test_plan_check_refuses_an_edited_capacity(tmp_path: Path, capsys) -> None:
    plan = _solve(tmp_path, "--objective", "kv-capacity")
    edited = json.loads(json.dumps(plan))
    edited["stages"][0]["kv_capacity_tokens"] += 1
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edited))
    assert main(["show", str(path)]) == 2
    assert "kv_capacity_tokens" in capsys.readouterr().err
    edited = json.loads(json.dumps(plan))
    edited["objective"]["kv_capacity_tokens"] = 1
    path.write_text(json.dumps(edited))
    assert main(["show", str(path)]) == 2


def test_simulate_context(tmp_path: Path, capsys) -> None:
    plan = _solve(tmp_path, "--objective", "kv-capacity")
    path = tmp_path / "plan.json"
    capsys.readouterr()
    assert main(["simulate", str(path), "--context", "4096", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["kv_serving"]
    capacity = plan["objective"]["kv_capacity_tokens"]
    assert doc["sequences"] == capacity // 4096
    pass_s = sum(st["latency_s"] for st in plan["stages"])
    assert doc["pass_s"] == pytest.approx(pass_s)
    assert doc["tokens_per_s"] == pytest.approx(doc["sequences"] / pass_s)
    assert main(["simulate", str(path), "--context", "0"]) == 2
    assert "--context" in capsys.readouterr().err
    assert main(["simulate", str(path), "--context", "4096"]) == 0
    assert "sequences at 4,096" in capsys.readouterr().out
    assert math.isfinite(doc["tokens_per_s"])
