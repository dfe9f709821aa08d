"""Engine-shaped plans: each engine's rules as a problem, its optimum against brute force over
the splits the engine can take, its memory share, one TP degree, its default splits."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from solver import Problem, SolverError, Status, check_partition, random_problem, solve
from solver.cli import main
from solver.core import Link, TensorParallel, default_allreduce_bytes
from solver.engines import (
    ENGINES,
    default_split,
    engine_cuts,
    engine_problem,
    parameter_split,
    split_bounds,
)
from solver.plan import load_plan

ZOO_NAMES = ["embed", *(f"block{i}" for i in range(5)), "head"]
FQNS = ["model.embed_tokens", "model.rotary_emb", *(f"model.layers.{i}" for i in range(4)),
        "model.norm", "lm_head"]


def test_cuts_follow_each_engines_rules() -> None:
    glued = [1, 0, 1, 1, 1, 1, 0, 1]  # no stage of the embedding alone, none of the head alone
    free = [1, 1, 1, 1, 1, 1, 1, 1]
    for name, engine in ENGINES.items():
        mask = engine_cuts(ZOO_NAMES, engine).astype(int).tolist()
        assert mask == (glued if name in ("vllm", "sglang", "trtllm") else free), name
    # a module's own names: the layers around the stack move as units (embedding + rotary, norm
    # + head), never cut apart
    assert engine_cuts(FQNS, ENGINES["vllm"]).astype(int).tolist() == [1, 0, 0, 1, 1, 1, 0, 0, 1]
    assert engine_cuts(FQNS, ENGINES["megatron"]).astype(int).tolist() == \
        [1, 0, 1, 1, 1, 1, 1, 0, 1]


def _chain(seed: int, blocks: int) -> Problem:
    base = random_problem(seed, blocks + 2, tightness=0.35)
    return base.replace(names=("embed", *(f"block{i}" for i in range(blocks)), "head"))


def _brute(problem: Problem, allowed: set[int]) -> float:
    best = math.inf
    n = problem.n
    for k in range(1, n + 1):
        for cuts in itertools.combinations(sorted(allowed), k - 1):
            bounds = (0, *cuts, n)
            stages = list(itertools.pairwise(bounds))
            if len(stages) > problem.max_stages:
                continue
            if all(problem.stage_memory(s, e) <= problem.capacity_bytes for s, e in stages):
                best = min(best, max(problem.stage_time(s, e) for s, e in stages))
    return best


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("engine", ["vllm", "megatron"])
def test_the_engine_optimum_is_the_best_split_it_can_take(seed: int, engine: str) -> None:
    problem = _chain(seed, 3 + seed % 4)
    shaped = engine_problem(problem, problem.names, ENGINES[engine], memory_fraction=1.0)
    n = problem.n
    # the splits the engine can take, written out by hand: between blocks, and for megatron
    # also after the embedding and before the head
    allowed = set(range(2, n - 1)) if engine == "vllm" else set(range(1, n))
    expected = _brute(problem, allowed)
    for method in ("parametric", "dp", "ilp"):
        part = solve(shaped, method)
        if math.isinf(expected):
            assert part.status is Status.INFEASIBLE
            continue
        assert part.status is Status.OPTIMAL
        assert part.objective == pytest.approx(expected, rel=1e-9), (method, engine)
        assert set(part.bounds[1:-1]) <= allowed


def test_the_memory_share_is_the_engines() -> None:
    problem = _chain(3, 4)
    assert engine_problem(problem, problem.names, ENGINES["vllm"]).capacity_bytes == \
        int(problem.capacity_bytes * 0.9)
    assert engine_problem(problem, problem.names, ENGINES["megatron"]).capacity_bytes == \
        problem.capacity_bytes
    # SGLang's default share follows the TP size: the widest degree asked
    arb = default_allreduce_bytes([None] * problem.n, problem.activation_bytes)
    tp = problem.replace(tensor_parallel=TensorParallel((1, 8), 8, arb, Link(1e9)))
    assert engine_problem(tp, tp.names, ENGINES["sglang"]).capacity_bytes == \
        int(problem.capacity_bytes * 0.81)
    assert engine_problem(problem, problem.names, ENGINES["sglang"]).capacity_bytes == \
        int(problem.capacity_bytes * 0.88)


@pytest.mark.parametrize("seed", range(8))
def test_one_tp_degree_for_every_stage(seed: int) -> None:
    problem = _chain(seed, 5).replace(max_stages=8)
    arb = default_allreduce_bytes([None] * problem.n, problem.activation_bytes) // 10
    tp = problem.replace(tensor_parallel=TensorParallel((1, 2, 4), 8, arb, Link(1e6, 1e-4)))
    shaped = engine_problem(tp, tp.names, ENGINES["vllm"], memory_fraction=1.0)
    part = solve(shaped, "dp")
    # the best over the degrees, each solved alone
    per_degree = []
    for t in (1, 2, 4):
        one = shaped.replace(tensor_parallel=None) if t == 1 else shaped.replace(
            tensor_parallel=TensorParallel((t,), 8, arb, Link(1e6, 1e-4)))
        answer = solve(one, "dp")
        if answer.status is not Status.INFEASIBLE:
            per_degree.append(answer.objective)
    if not per_degree:
        assert part.status is Status.INFEASIBLE
        return
    assert part.status is Status.OPTIMAL and part.objective == pytest.approx(min(per_degree))
    assert part.tp_degrees is not None and len(set(part.tp_degrees)) == 1
    with pytest.raises(SolverError, match="one degree for every stage"):
        check_partition(shaped, (0, 2, 7), tp_degrees=(1, 2))


def _vllm_reference(n: int, pp: int) -> list[int]:
    """vllm/distributed/utils.py get_pp_indices without VLLM_PP_LAYER_PARTITION, rewritten."""
    parts = [n // pp] * pp
    for i in range(2, n % pp + 2):
        parts[-i] += 1
    return parts


def test_default_splits_follow_the_engines_code() -> None:
    for n, pp in itertools.product(range(2, 40), range(1, 9)):
        if pp > n:
            continue
        assert default_split("vllm", n, pp) == _vllm_reference(n, pp)
        # tensorrt_llm/mapping.py pp_layers: torch.tensor_split, the first ranks get the extra
        trt = [len(c) for c in np.array_split(np.arange(n), pp)]
        assert default_split("trtllm", n, pp) == trt
        # sglang: the remainder to the last ranks
        sg = default_split("sglang", n, pp)
        assert sum(sg) == n and sg == sorted(sg)
    assert split_bounds(ZOO_NAMES, [2, 3]) == (0, 3, 7)
    # DeepSpeed 'parameters': the largest part as small as it can be
    weights = [5, 1, 1, 1, 1, 1, 1, 8]
    bounds = parameter_split(weights, 3)
    largest = max(sum(weights[s:e]) for s, e in itertools.pairwise(bounds))
    assert largest == min(max(sum(weights[s:e]) for s, e in itertools.pairwise((0, a, b, 8)))
                          for a, b in itertools.combinations(range(1, 8), 2))


def test_solve_with_an_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    assert main(["solve", "llama3-8b", "--devices", "4", "--capacity", "hbm", "--seq", "4096",
                 "--batch", "8", "--engine", "vllm", "-q", "-o", str(out)]) == 0
    plan = load_plan(out)
    assert plan.engine is not None and plan.engine["name"] == "vllm"
    assert plan.engine["memory_fraction"] == pytest.approx(0.9)
    assert plan.hardware.capacity_bytes == int(plan.engine["device_capacity_bytes"] * 0.9)
    assert plan.stages[0].layers[:2] == ("embed", "block0")
    assert plan.stages[-1].layers[-2:][-1] == "head" and len(plan.stages[-1].layers) >= 2
    assert json.loads(out.read_text())["schema_version"] == "1.6"
    cases = [
        (["--granularity", "op"], "whole blocks"),
        (["--residency", "partial", "--capacity", "l2"], "--residency partial"),
    ]
    for extra, pattern in cases:
        args = ["solve", "llama3-8b", "--devices", "4", "--capacity", "hbm", "--seq", "512",
                "--engine", "vllm", "-q", *extra]
        assert main(args) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and pattern in err[0], (extra, err)
    assert main(["solve", "llama3-8b", "--cluster", "paper", "-c", "hbm", "--seq", "512",
                 "--engine", "vllm", "-q"]) == 2
    assert "one kind of device" in capsys.readouterr().err


def test_engine_rows_compare_the_default_split_with_the_shaped_optima() -> None:
    """Whatever the default split does, the shaped optima are no worse on their own objective
    (both are checked against the engine's share of the device), and the default row is the
    engine's own split evaluated."""
    from solver import Workload
    from solver.analysis import engine_rows, engine_table

    workload = Workload(batch=64, seq_len=4096, phase="decode", micro_batch=8)
    rows = engine_rows("llama3-8b", "vllm", 8, workload=workload)
    by = {r.plan: r for r in rows}
    assert by["default"].blocks_per_stage == ",".join(map(str, default_split("vllm", 32, 8)))
    assert by["latency"].bottleneck_s <= by["default"].bottleneck_s
    assert by["kv-capacity"].kv_capacity_tokens >= by["default"].kv_capacity_tokens
    assert by["kv-capacity"].kv_capacity_tokens >= by["latency"].kv_capacity_tokens
    assert all(r.fits for r in rows)
    assert sum(map(int, by["latency"].blocks_per_stage.split(","))) == 32
    table = engine_table(rows)
    assert table.loc[table["plan"] == "default", "speedup_vs_default"].item() == 1.0
    latency = table[table["plan"] == "latency"].iloc[0]
    assert latency["speedup_vs_default"] == pytest.approx(
        by["default"].bottleneck_s / by["latency"].bottleneck_s)
    # Llama-3-70B in bf16 does not fit two H100s at vLLM's 90%: the default is marked, and no
    # shaped plan exists
    big = engine_rows("llama3-70b", "vllm", 2, workload=workload)
    assert [r.plan for r in big] == ["default"] and not big[0].fits
    assert big[0].kv_capacity_tokens is not None and big[0].kv_capacity_tokens < 0


def test_deepspeed_default_row_is_its_parameter_balance() -> None:
    from solver import Workload, load_model, problem_from_graph
    from solver.analysis import engine_rows

    workload = Workload(batch=8, seq_len=1024)
    rows = engine_rows("llama3-8b", "deepspeed", 4, workload=workload)
    problem = problem_from_graph(load_model("llama3-8b", workload).graph, 80 * 10**9, 4)
    bounds = parameter_split([int(w) for w in problem.weight_bytes], 4)
    from solver.engines import block_positions

    blocks = block_positions(list(problem.names))
    expected = [sum(1 for b in blocks if s <= b < e) for s, e in itertools.pairwise(bounds)]
    assert rows[0].plan == "default"
    assert rows[0].blocks_per_stage == ",".join(map(str, expected))
