"""Clusters: heterogeneous devices in nodes, ordered and free placement. Every exact method on
every backend against brute force over every partition and every placement (up to 5 devices in
1-2 nodes of 2 kinds, with and without tensor parallelism); the built-in 2 x 8 H100 cluster
prices the cut between its nodes at InfiniBand; a one-kind one-node cluster is the canonical
problem; the CLI, the plan and its checks."""

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
    Fleet,
    InvalidInputError,
    Link,
    Problem,
    SolveOptions,
    SolverError,
    Status,
    TensorParallel,
    check_partition,
    load_plan,
    random_problem,
    solve,
)
from solver.cli import main
from solver.core import default_allreduce_bytes

BACKENDS = [name for name, backend in ILP_BACKENDS.items() if backend.available()]
REPO = Path(__file__).resolve().parents[1]


def fleet_problem(seed: int, n: int, *, free: bool = False, tp: bool = False) -> Problem:
    """A random chain on a random cluster: 1-2 nodes, each with 0-2 devices of 2 kinds, the
    kinds differing in capacity and in speed per layer, links that differ in and across nodes."""
    base = random_problem(seed, n, tightness=0.3)
    rng = np.random.default_rng(seed + 7)
    nodes = int(rng.integers(1, 3))
    rank_kind: list[int] = []
    rank_node: list[int] = []
    for g in range(nodes):
        counts = rng.integers(0, 3, 2)
        if counts.sum() == 0:
            counts[0] = 1
        for k in range(2):
            rank_kind += [k] * int(counts[k])
            rank_node += [g] * int(counts[k])
    caps = (base.capacity_bytes, int(base.capacity_bytes * rng.uniform(0.5, 1.5)))
    lat = np.vstack([base.latency_s, base.latency_s * rng.uniform(0.5, 2.0, n)])
    links = tuple(Link(float(rng.choice([2e4, 1e5])), 0.01) for _ in range(nodes))
    fleet = Fleet(("a", "b"), caps, lat, tuple(rank_kind), tuple(rank_node), links,
                  Link(5000.0, 0.05), "free" if free else "ordered", "test")
    problem = base.replace(fleet=fleet, max_stages=len(rank_kind))
    if tp:
        arb = default_allreduce_bytes([None] * n, base.activation_bytes) // 10
        problem = problem.replace(tensor_parallel=TensorParallel((1, 2), 2, arb,
                                                                 Link(1e6, 0.001)))
    return problem


def brute(problem: Problem) -> float:
    """Every partition, every degree per stage, every assignment of stages to devices."""
    fleet = problem.fleet
    assert fleet is not None
    degrees = problem.tensor_parallel.degrees if problem.tensor_parallel else (1,)
    n, size = problem.n, fleet.size
    best = math.inf
    for k in range(1, min(n, size) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            for degs in itertools.product(degrees, repeat=k):
                placements = [None] if fleet.placement == "ordered" else \
                    itertools.product(range(size), repeat=k)
                for ranks in placements:
                    try:
                        costs = check_partition(
                            problem, bounds, ranks=ranks,
                            tp_degrees=degs if problem.tensor_parallel else None)
                    except SolverError:
                        continue
                    best = min(best, max(c.time_s for c in costs))
    return best


def _exact_methods(free: bool, tp: bool) -> list[tuple[str, str | None]]:
    methods: list[tuple[str, str | None]] = [("dp", None)] + [("ilp", b) for b in BACKENDS]
    if not tp:
        methods.append(("parametric", None))
    return methods


@pytest.mark.parametrize("free", [False, True])
@pytest.mark.parametrize("tp", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_exact_methods_equal_brute_force(seed: int, free: bool, tp: bool) -> None:
    problem = fleet_problem(seed, 2 + seed % 5, free=free, tp=tp)
    expected = brute(problem)
    for method, backend in _exact_methods(free, tp):
        for hint in ((True, False) if method == "ilp" else (True,)):
            part = solve(problem, method, SolveOptions(backend=backend, use_hint=hint,
                                                       time_limit_s=20))
            label = (method, backend, hint)
            if math.isinf(expected):
                assert part.status is Status.INFEASIBLE and part.diagnosis, label
                continue
            assert part.status is Status.OPTIMAL, (label, part)
            assert part.objective == pytest.approx(expected, rel=1e-9), label
            costs = check_partition(problem, part.bounds, tp_degrees=part.tp_degrees,
                                    ranks=part.ranks)
            assert max(c.time_s for c in costs) == part.objective


@pytest.mark.parametrize("seed", range(12))
def test_free_is_never_worse_than_ordered_and_baselines_never_beat_the_optimum(seed: int) -> None:
    ordered = fleet_problem(seed, 3 + seed % 4)
    assert ordered.fleet is not None
    free = ordered.replace(fleet=ordered.fleet.with_placement("free"))
    best_ordered = solve(ordered, "parametric")
    best_free = solve(free, "ilp")
    if best_ordered.status is not Status.INFEASIBLE:
        assert best_free.objective is not None and best_ordered.objective is not None
        assert best_free.objective <= best_ordered.objective * (1 + 1e-12)
        # ordered plans from every exact method are the same plan
        assert solve(ordered, "dp").bounds == best_ordered.bounds == solve(ordered, "ilp").bounds
    for baseline in ("greedy", "uniform", "params"):
        part = solve(ordered, baseline)
        if part.status is not Status.INFEASIBLE:
            assert best_ordered.objective is not None and part.objective is not None
            assert part.objective >= best_ordered.objective * (1 - 1e-12)
            check_partition(ordered, part.bounds)


def test_the_exact_free_search_refuses_what_it_cannot_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    import solver.core.free as free_search

    problem = fleet_problem(5, 5, free=True)
    monkeypatch.setattr(free_search, "FREE_MAX_BYTES", 10)
    with pytest.raises(InvalidInputError, match="use the ilp method") as err:
        solve(problem, "parametric")
    assert err.value.field == "method"
    part = solve(problem, "ilp")  # no certificate then: the backend's proof
    assert part.status is Status.OPTIMAL and part.objective == pytest.approx(brute(problem))


def test_one_kind_one_node_is_the_canonical_problem() -> None:
    for seed in range(10):
        base = random_problem(seed, 12, max_stages=5)
        assert base.link is not None
        fleet = Fleet(("only",), (base.capacity_bytes,), base.latency_s[None, :], (0,) * 5,
                      (0,) * 5, (base.link,), Link(1.0), "ordered")
        on = base.replace(fleet=fleet)
        for method in ("parametric", "dp", "ilp"):
            a, b = solve(base, method), solve(on, method)
            # the same optimum and stage count; ties may be cut elsewhere (ordered.py)
            assert (a.status, a.objective, a.num_stages) == \
                (b.status, b.objective, b.num_stages), method


def test_registry_solves_or_refuses_clusters() -> None:
    free = fleet_problem(3, 5, free=True)
    for name, method in METHODS.items():
        if free.extensions <= method.supports:
            assert solve(free, name).method == name
        else:
            with pytest.raises(InvalidInputError, match="free_placement") as err:
                solve(free, name)
            assert err.value.field == "method"
    chosen = solve(free)
    assert chosen.method == "parametric" and "free placement" in (chosen.selection or "")
    with_tp = fleet_problem(3, 5, free=True, tp=True)  # beyond the exact search: the ILP
    assert solve(with_tp).method == "ilp"
    ordered = fleet_problem(3, 5)
    assert solve(ordered).method == "parametric"


def test_fleet_validation_names_the_field() -> None:
    base = random_problem(0, 4)
    lat = np.vstack([base.latency_s, base.latency_s])
    good = dict(kinds=("a", "b"), capacity_bytes=(10, 10), latency_s=lat, rank_kind=(0, 1),
                rank_node=(0, 0), node_links=(Link(1.0),), inter_node_link=Link(1.0))
    cases = [
        (dict(kinds=("a", "a")), "cluster.device_types"),
        (dict(rank_node=(1, 0), node_links=(Link(1.0), Link(1.0))), "cluster.nodes"),
        (dict(rank_kind=(0, 1, 0), rank_node=(0, 0, 0)), "cluster.nodes"),
        (dict(latency_s=lat[:1]), "cluster.latency_s"),
        (dict(capacity_bytes=(10, 0)), "cluster.device_types.b.capacity_bytes"),
    ]
    for change, field in cases:
        with pytest.raises(InvalidInputError) as err:
            Fleet(**{**good, **change})  # type: ignore[arg-type]
        assert err.value.field == field, change
    with pytest.raises(InvalidInputError, match="expected ordered or free"):
        Fleet(**good, placement="random")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="layer times per kind"):
        base.replace(fleet=Fleet(**{**good, "latency_s": np.ones((2, 3))}))  # type: ignore[arg-type]


# ----- the CLI, the plan -------------------------------------------------------------------
LAB = {"name": "lab",
       "device_types": {"big": {"capacity_bytes": 80_000_000_000, "device": "h100-sxm"},
                        "small": {"capacity_bytes": 24_000_000_000, "device": "l4"}},
       "nodes": [{"devices": {"big": 2, "small": 1},
                  "link": {"bandwidth_bytes_per_s": 3e11, "latency_s": 2e-6}},
                 {"devices": {"small": 2},
                  "link": {"bandwidth_bytes_per_s": 3e11, "latency_s": 2e-6}}],
       "inter_node_link": {"bandwidth_bytes_per_s": 5e10, "latency_s": 5e-6}}


def _write(tmp_path: Path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_cli_plans_on_a_mixed_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = _write(tmp_path, "lab.json", LAB)
    out = tmp_path / "plan.json"
    assert main(["solve", "llama2-7b", "--seq", "1024", "--cluster", lab, "-q", "-o",
                 str(out)]) == 0
    plan = load_plan(out)
    assert plan.hardware.cluster is not None and plan.hardware.cluster["placement"] == "free"
    assert plan.method == "parametric" and plan.solver.status.value == "optimal"
    kinds = {"big": 80_000_000_000, "small": 24_000_000_000}
    for st in plan.stages:
        assert st.device_type in kinds and st.memory_bytes <= kinds[st.device_type]
        assert st.headroom_bytes == kinds[st.device_type] - st.memory_bytes
    ordered = tmp_path / "ordered.json"
    assert main(["solve", "llama2-7b", "--seq", "1024", "--cluster", lab, "--placement",
                 "ordered", "-q", "-o", str(ordered)]) == 0
    assert [st.device_rank for st in load_plan(ordered).stages] == \
        list(range(len(load_plan(ordered).stages)))
    assert load_plan(ordered).objective["max_stage_latency_s"] >= \
        plan.objective["max_stage_latency_s"] * (1 - 1e-12)
    assert main(["simulate", str(out)]) == 0
    assert main(["show", str(out)]) == 0
    assert "cluster lab (free placement)" in capsys.readouterr().out
    # a hand edit that moves a stage to another kind's device is refused
    doc = json.loads(out.read_text())
    doc["stages"][0]["device_type"] = "other"
    bad = _write(tmp_path, "bad.json", doc)
    assert main(["show", bad]) == 2
    assert "device_type" in capsys.readouterr().err


def test_the_runner_places_cluster_stages_on_their_planned_devices(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from solver.runner import check_world_size, device_slot
    out = tmp_path / "plan.json"
    assert main(["solve", "llama2-7b", "--seq", "1024", "--cluster", _write(tmp_path, "lab.json",
                 LAB), "--placement", "ordered", "-k", "5", "-q", "-o", str(out)]) == 0
    plan = load_plan(out)
    ranks = plan.hardware.rank_kinds()
    firsts = {g: min(r for r, (_, h) in enumerate(ranks) if h == g) for _, g in ranks}
    for st in plan.stages:
        assert device_slot(plan, st.index, multi_node=False) == st.device_rank
        assert device_slot(plan, st.index, multi_node=True) == st.device_rank - firsts[st.node]
    world = len(plan.stages)
    check_world_size(plan, world)  # one machine runs every stage
    nodes = [st.node for st in plan.stages]
    # a launch of equal nodes holds this plan only where stage j's node is j // local
    assert nodes == [0, 0, 0, 1, 1]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # five one-process nodes: stage 1 is off node 0
    with pytest.raises(InvalidInputError, match="stages/1/node: 0") as err:
        check_world_size(plan, world)
    assert err.value.field == "world_size"
    # two nodes of two: a four-stage plan over them runs with two processes a node
    even = {**LAB, "nodes": [{**LAB["nodes"][0], "devices": {"big": 2}}] * 2}  # type: ignore[dict-item]
    assert main(["solve", "llama2-7b", "--seq", "1024", "--cluster", _write(tmp_path, "even.json",
                 even), "--placement", "ordered", "-q", "-o", str(out)]) == 0
    plan = load_plan(out)
    assert [st.node for st in plan.stages] == [0, 0, 1, 1]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    check_world_size(plan, 4)
    assert [device_slot(plan, j, multi_node=True) for j in range(4)] == [0, 1, 0, 1]


def test_the_paper_cluster_prices_the_node_boundary_at_infiniband(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert main(["solve", "llama3-70b", "--batch", "8", "--seq", "4096", "--cluster", "paper",
                 "-c", "hbm", "-q", "-o", str(out)]) == 0
    plan = load_plan(out)
    stages = {st.device_rank: st for st in plan.stages}
    boundary = next(st for st in plan.stages if st.node == 1 and stages.get(st.device_rank - 1)
                    and stages[st.device_rank - 1].node == 0)
    cut = 8 * 4096 * 8192 * 2  # the activation crossing: batch x seq x hidden x bf16
    assert boundary.transfer_in_s == pytest.approx(cut / 50e9 + 5e-6, rel=1e-9)
    inside = plan.stages[1]
    assert inside.node == 0 and inside.transfer_in_s == pytest.approx(cut / 370e9 + 2e-6, rel=1e-9)


def test_a_chain_with_latency_per_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = {"name": "toy", "link": {"bandwidth_bytes_per_s": 1e9, "latency_s": 0},
             "layers": [{"name": f"l{i}", "weight_bytes": 10**9, "activation_bytes": 10**6,
                         "latency_s": {"big": 1.0, "small": 3.0}} for i in range(6)]}
    path = _write(tmp_path, "chain.json", chain)
    lab = _write(tmp_path, "lab.json", LAB)
    out = tmp_path / "plan.json"
    assert main(["solve", path, "--cluster", lab, "-q", "-o", str(out)]) == 0
    assert "a chain's own link is ignored" in capsys.readouterr().err
    plan = load_plan(out)
    # two big devices take two layers each (2 s), a small one a layer each (3 s), the 3 s
    # stage entered over the node's link (1 MB / 300 GB/s + 2 us)
    assert plan.objective["max_stage_latency_s"] == pytest.approx(3.0 + 1e6 / 3e11 + 2e-6,
                                                                  rel=1e-12)
    assert main(["solve", path, "-k", "2", "-c", "80GB"]) == 2
    assert "gives its latency per device kind" in capsys.readouterr().err
    chain["layers"][0]["latency_s"] = {"big": 1.0}
    assert main(["solve", _write(tmp_path, "c2.json", chain), "--cluster", lab]) == 2
    assert "gives no latency for device kind 'small'" in capsys.readouterr().err


@pytest.mark.parametrize(("doc", "message"), [
    ({**LAB, "nodes": [{"devices": {"huge": 1}, "link": LAB["nodes"][0]["link"]}]},
     "nodes[0].devices: unknown device kind 'huge'"),
    ({**LAB, "device_types": {"big": {}}}, "device_types.big: give capacity_bytes"),
    ({**LAB, "device_types": {"big": {"capacity_bytes": -1}}}, "capacity_bytes: must be"),
    ({**LAB, "inter_node_link": {"bandwidth_bytes_per_s": 0}}, "inter_node_link.bandwidth"),
    ({**LAB, "extra": 1}, "unknown top-level field 'extra'"),
])
def test_bad_cluster_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        doc: dict, message: str) -> None:
    path = _write(tmp_path, "c.json", doc)
    assert main(["solve", "gpt2", "--seq", "128", "--cluster", path]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_infeasible_on_a_cluster_names_the_layer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", "llama2-70b", "--seq", "4096", "--cluster", "2x2-l4", "-c", "l2"]) == 3
    err = capsys.readouterr().err
    assert "cachepart: infeasible: layer 'embed' cannot fit on one device" in err
    assert "the largest device kind, l4" in err
    assert main(["solve", "llama2-70b", "--seq", "4096", "--cluster", "1x1-h100-sxm",
                 "-c", "hbm"]) == 3
    assert "need at least" in capsys.readouterr().err


def test_tp_on_a_cluster_stays_inside_a_node_of_one_kind(tmp_path: Path) -> None:
    lab = _write(tmp_path, "lab.json", LAB)
    out = tmp_path / "plan.json"
    assert main(["solve", "llama2-7b", "--seq", "1024", "--cluster", lab, "--tp", "1,2",
                 "-q", "-o", str(out)]) == 0
    plan = load_plan(out)
    assert plan.hardware.cluster is not None
    ranks = plan.hardware.rank_kinds()
    for st in plan.stages:
        block = range(st.device_rank, st.device_rank + st.tp_degree)
        assert len({ranks[r] for r in block}) == 1


def test_ordered_infeasible_says_how_far_the_ranks_hold() -> None:
    """The first rank's kind holds nothing: ordered placement is infeasible, free is not."""
    base = random_problem(2, 6, tightness=0.4)
    small = int(base.stage_memory(0, 1)) - 1  # below the first layer
    lat = np.vstack([base.latency_s, base.latency_s])
    fleet = Fleet(("tiny", "big"), (small, base.capacity_bytes), lat, (0, 1, 1, 1, 1),
                  (0, 0, 0, 0, 0), (Link(1e5, 0.01),), Link(1e5, 0.01), "ordered")
    ordered = base.replace(fleet=fleet, max_stages=5)
    part = solve(ordered)
    assert part.status is Status.INFEASIBLE
    assert part.diagnosis == ("placement ordered: the cluster's ranks in order hold none of the "
                              "layers; placement free may")
    free = ordered.replace(fleet=fleet.with_placement("free"))
    assert solve(free).status is Status.OPTIMAL


def _review_instance(seed: int) -> Problem:
    """A generator a review used (3 kinds, 1-3 nodes, peak memory): seed 23 made HiGHS return
    its warm start although it had found a better plan."""
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(2, 8))
    base = random_problem(seed, n, memory_model="peak", tightness=float(rng.uniform(0.2, 0.6)))
    kinds, nodes, total = int(rng.integers(2, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 7))
    devices = [(int(rng.integers(0, nodes)), int(rng.integers(0, kinds))) for _ in range(total)]
    rank_kind: list[int] = []
    rank_node: list[int] = []
    for g in range(nodes):
        for k in rng.permutation(kinds).tolist():
            count = sum(1 for d in devices if d == (g, k))
            rank_kind += [k] * count
            rank_node += [g] * count
    caps = tuple(int(base.capacity_bytes * rng.uniform(0.4, 1.6)) for _ in range(kinds))
    lat = np.vstack([base.latency_s * rng.uniform(0.3, 2.5, n) for _ in range(kinds)])
    links = tuple(Link(float(rng.choice([5e3, 2e4, 1e5])), float(rng.choice([0.0, 0.01, 0.2])))
                  for _ in range(nodes))
    inter = Link(float(rng.choice([2e3, 5e3, 3e4])), float(rng.choice([0.05, 0.5])))
    fleet = Fleet(tuple("abc"[:kinds]), caps, lat, tuple(rank_kind), tuple(rank_node), links,
                  inter, "free", "t")
    return base.replace(fleet=fleet, max_stages=int(rng.integers(1, len(rank_kind) + 1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_warm_start_is_not_returned_over_a_better_plan(backend: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import solver.core.free as free_search

    problem = _review_instance(23)
    expected = brute(problem)
    monkeypatch.setattr(free_search, "FREE_MAX_BYTES", 0)  # the ILP alone, no certificate
    part = solve(problem, "ilp", SolveOptions(backend=backend, use_hint=True))
    assert part.objective == pytest.approx(expected, rel=1e-9) and part.status is Status.OPTIMAL
