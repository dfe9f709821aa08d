"""Training plans (solver/core/training.py): every exact method equals brute force over every
partition, under GPipe and 1F1B, with and without a link, in both memory models and with an
engine's allowed cuts; memory depends on a stage's position; baselines are feasible plans."""

from __future__ import annotations

import itertools
import math

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
    Training,
    check_partition,
    random_problem,
    solve,
)
from solver.core import Link

BACKENDS = [name for name, backend in ILP_BACKENDS.items() if backend.available()]
EXACT = [("dp", None)] + [("ilp", b) for b in BACKENDS]


def _training(problem: Problem, seed: int, schedule: str) -> Problem:
    rng = np.random.default_rng(seed + 17)
    n = problem.n
    tr = Training(schedule, int(rng.integers(1, 6)),
                  (problem.latency_s * rng.uniform(1.5, 2.5, n)).round(3),
                  rng.integers(0, 9_000, n), rng.integers(0, 30_000, n))
    return problem.replace(training=tr)


def _brute(problem: Problem) -> float:
    """Every partition check_partition accepts (its memory is evaluate's, by position)."""
    best = math.inf
    n = problem.n
    for k in range(1, min(n, problem.max_stages) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            try:
                costs = check_partition(problem, (0, *cuts, n))
            except SolverError:
                continue
            best = min(best, max(c.time_s for c in costs))
    return best


def _direct_memory(problem: Problem, s: int, e: int, j: int, stages: int) -> int:
    """Stage memory from the issue's formula, written out independently."""
    tr = problem.training
    assert tr is not None
    f = tr.microbatches if tr.schedule == "gpipe" else min(stages - j, tr.microbatches)
    w, ts, b = problem.weight_bytes, tr.train_state_bytes, problem.buffer_bytes
    fixed = sum(int(w[i] + ts[i]) for i in range(s, e))
    stash = f * sum(int(tr.stash_bytes[i]) for i in range(s, e))
    if problem.memory_model is MemoryModel.ADDITIVE:
        return fixed + sum(int(b[i]) for i in range(s, e)) + stash
    a = problem.activation_bytes
    inputs = [problem.input_bytes, *a[:-1].tolist()]
    return fixed + stash + max(int(inputs[i] + a[i] + b[i]) for i in range(s, e))


def _check(problem: Problem) -> None:
    expected = _brute(problem)
    for method, backend in EXACT:
        part = solve(problem, method, SolveOptions(backend=backend or "cpsat", time_limit_s=30))
        if math.isinf(expected):
            assert part.status is Status.INFEASIBLE, (method, backend)
            assert part.diagnosis
            continue
        assert part.status is Status.OPTIMAL, (method, backend, part.diagnosis)
        assert part.objective == pytest.approx(expected, rel=1e-9), (method, backend)


@pytest.mark.parametrize("link", [True, False], ids=["link", "no-link"])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("seed", range(10))
def test_exact_methods_equal_brute_force(seed: int, schedule: str, link: bool) -> None:
    n = 3 + seed % 6
    memory = MemoryModel.PEAK if seed % 3 == 0 else MemoryModel.ADDITIVE
    base = random_problem(seed, n, link=link, memory_model=memory,
                          tightness=0.45 + 0.1 * (seed % 3))
    _check(_training(base, seed, schedule))


@pytest.mark.parametrize("seed", range(8))
def test_with_allowed_cuts(seed: int) -> None:
    n = 4 + seed % 5
    rng = np.random.default_rng(seed + 3)
    mask = rng.random(n + 1) < 0.6
    mask[0] = mask[-1] = True
    base = random_problem(seed, n, tightness=0.6).replace(allowed_cuts=mask)
    _check(_training(base, seed, "1f1b"))


def test_memory_and_time_follow_the_formulas() -> None:
    problem = _training(random_problem(5, 7, memory_model="peak", tightness=0.9), 5, "1f1b")
    tr = problem.training
    assert tr is not None
    for bounds in [(0, 7), (0, 3, 7), (0, 1, 4, 6, 7)]:
        costs = check_partition(problem.replace(capacity_bytes=10**15, max_stages=7), bounds)
        stages = len(bounds) - 1
        for j, cost in enumerate(costs):
            s, e = cost.start, cost.end
            assert cost.memory_bytes == _direct_memory(problem, s, e, j, stages)
            inbound = problem.transfer_s[s] if s > 0 else 0.0
            outbound = problem.transfer_s[e] if e < problem.n else 0.0
            expected = sum(problem.latency_s[s:e]) + sum(tr.backward_latency_s[s:e]) \
                + inbound + outbound
            assert cost.time_s == pytest.approx(expected, rel=1e-12)


def test_a_plan_fits_under_1f1b_and_not_under_gpipe() -> None:
    """Four equal layers on two devices, 4 micro-batches. GPipe keeps 4 stashes on each stage;
    1F1B keeps 2 on the first and 1 on the last, which the capacity allows."""
    layers = 4
    common = dict(names=tuple(f"l{i}" for i in range(layers)), weight_bytes=[100] * layers,
                  activation_bytes=[10] * layers, buffer_bytes=[0] * layers,
                  latency_s=[1.0] * layers, capacity_bytes=200 + 2 * 2 * 50, max_stages=2)
    train = dict(microbatches=4, backward_latency_s=[2.0] * layers, stash_bytes=[50] * layers,
                 train_state_bytes=[0] * layers)
    one = Problem(**common, training=Training("1f1b", **train))
    gp = Problem(**common, training=Training("gpipe", **train))
    part = solve(one, "dp")
    assert part.status is Status.OPTIMAL and part.bounds == (0, 2, 4)
    costs = check_partition(one, part.bounds)
    assert [c.memory_bytes for c in costs] == [200 + 2 * 100, 200 + 1 * 100]
    assert solve(gp, "dp").status is Status.INFEASIBLE
    with pytest.raises(SolverError, match="needs 600 bytes"):
        check_partition(gp, (0, 2, 4))
    # the last stage of a 1F1B plan keeps one stash: the same layers as a first stage do not fit
    with pytest.raises(SolverError):
        check_partition(one, (0, 1, 4))


def test_baselines_are_feasible_plans_and_never_beat_the_optimum() -> None:
    for seed in range(12):
        problem = _training(random_problem(seed, 8, tightness=0.6), seed,
                            ("gpipe", "1f1b")[seed % 2])
        best = solve(problem, "dp")
        for method in ("greedy", "uniform", "params"):
            part = solve(problem, method)
            if part.status is Status.INFEASIBLE:
                continue
            check_partition(problem, part.bounds)
            assert best.status is Status.OPTIMAL
            assert part.objective >= best.objective * (1 - 1e-12), method


def test_auto_chooses_the_dp_and_parametric_refuses() -> None:
    problem = _training(random_problem(2, 6, tightness=0.8), 2, "1f1b")
    part = solve(problem)
    assert part.method == "dp" and "training" in (part.selection or "")
    with pytest.raises(InvalidInputError, match="training") as info:
        solve(problem, "parametric")
    assert info.value.field == "method"


def test_bad_training_input_names_the_field() -> None:
    base = random_problem(1, 4)
    cases = [
        (dict(schedule="zb"), "schedule"),
        (dict(microbatches=0), "microbatches"),
        (dict(stash_bytes=[-1, 0, 0, 0]), "stash_bytes"),
        (dict(backward_latency_s=[1.0, math.nan, 0.0, 0.0]), "backward_latency_s"),
    ]
    good = dict(schedule="1f1b", microbatches=2, backward_latency_s=[1.0] * 4,
                stash_bytes=[1] * 4, train_state_bytes=[0] * 4)
    for change, field in cases:
        with pytest.raises(InvalidInputError) as info:
            base.replace(training=Training(**{**good, **change}))
        assert info.value.field == field
    with pytest.raises(InvalidInputError, match="one per layer"):
        base.replace(training=Training(**{**good, "stash_bytes": [1] * 3,
                                          "backward_latency_s": [1.0] * 3,
                                          "train_state_bytes": [0] * 3}))
    with pytest.raises(InvalidInputError, match="2\\^62") as big:
        base.replace(training=Training(**{**good, "microbatches": 10**5,
                                          "stash_bytes": [2**50] * 4}))
    assert big.value.field == "microbatches"
    with pytest.raises(InvalidInputError, match="100,000") as many:
        Training(**{**good, "microbatches": 10**7})
    assert many.value.field == "microbatches"
    with pytest.raises(InvalidInputError, match="2\\^62") as huge:
        Training(**{**good, "stash_bytes": [1e30, 1, 1, 1]})
    assert huge.value.field == "stash_bytes"
    assert Training(**{**good, "microbatches": np.int64(3)}).microbatches == 3


def test_a_layer_too_big_for_any_stage_is_diagnosed() -> None:
    base = Problem(names=("a", "b"), weight_bytes=[10, 10], activation_bytes=[1, 1],
                   buffer_bytes=[0, 0], latency_s=[1.0, 1.0], capacity_bytes=100, max_stages=2,
                   link=Link(1e9, 0.0))
    big = base.replace(training=Training("1f1b", 3, [2.0, 2.0], [0, 0], [95, 0]))
    part = solve(big, "dp")
    assert part.status is Status.INFEASIBLE
    assert "layer 'a'" in (part.diagnosis or "") and "105 bytes" in (part.diagnosis or "")


# ----- through the CLI ---------------------------------------------------------------------
def _train_plan(tmp_path, *extra: str, name: str = "train.json") -> dict:
    import json

    from solver.cli import main

    out = tmp_path / name
    code = main(["solve", "llama3-8b", "--phase", "train", "--batch", "16", "--micro-batch", "1",
                 "--seq", "2048", "--devices", "4", "--capacity", "hbm", "-q", "-o", str(out),
                 *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_cli_training_plan_records_the_schedule(tmp_path, capsys) -> None:
    plan = _train_plan(tmp_path, "--recompute", "selective")
    wl = plan["workload"]
    assert (wl["phase"], wl["schedule"], wl["microbatches"]) == ("train", "1f1b", 16)
    assert (wl["optimizer"], wl["precision"], wl["recompute"]) == ("adam", "mixed", "selective")
    stages = plan["stages"]
    assert [st["microbatches_in_flight"] for st in stages] == [4, 3, 2, 1]
    for st in stages:
        assert st["latency_s"] == pytest.approx(st["forward_s"] + st["backward_s"]
                                                + st["transfer_in_s"] + st["transfer_out_s"])
        assert st["kv_capacity_tokens"] is None
    assert stages[-1]["transfer_out_s"] == 0.0 and stages[0]["transfer_in_s"] == 0.0
    pred = plan["predicted"]
    assert pred["schedule"] == "1f1b" and pred["microbatches"] == 16
    assert 0 < pred["mfu"] < 1 and 0 < pred["bubble_fraction"] < 1
    assert pred["tokens_per_s"] == pytest.approx(16 * 2048 / pred["step_s"])
    # the schedule simulator's step for these stages, recomputed here
    from solver import simulate_training

    sim = simulate_training([st["forward_s"] + st["transfer_in_s"] for st in stages],
                            [st["backward_s"] + st["transfer_out_s"] for st in stages], 16,
                            "1f1b")
    assert pred["step_s"] == pytest.approx(sim.step_s)
    # each stage's memory from the model's own layer fields: weights + optimizer state +
    # buffers + its stashes x micro-batches in flight; mixed Adam keeps 14 bytes a parameter
    from solver import Workload, load_model

    graph = load_model("llama3-8b", Workload(batch=16, micro_batch=1, seq_len=2048,
                                             phase="train", recompute="selective")).graph
    nodes = graph.graph.nodes
    for st in stages:
        rows = [nodes[name] for name in st["layers"]]
        assert all(r["train_state_bytes"] == 7 * r["weight_bytes"] for r in rows)
        expected = sum(r["weight_bytes"] + r["train_state_bytes"] + r["buffer_bytes"]
                       for r in rows) + st["microbatches_in_flight"] * sum(
            r["stash_bytes"] for r in rows)
        assert st["memory_bytes"] == expected


def test_cli_training_gpipe_needs_more_memory(tmp_path, capsys) -> None:
    from solver.cli import main

    one = _train_plan(tmp_path, name="one.json")
    gp = _train_plan(tmp_path, "--schedule", "gpipe", "--microbatches", "4", name="gp.json")
    assert [st["microbatches_in_flight"] for st in gp["stages"]] == [4, 4, 4, 4]
    assert max(st["memory_bytes"] for st in gp["stages"][1:]) > \
        max(st["memory_bytes"] for st in one["stages"][1:])
    code = main(["solve", "llama3-8b", "--phase", "train", "--batch", "64", "--micro-batch", "1",
                 "--seq", "4096", "--devices", "4", "--capacity", "hbm", "--schedule", "gpipe",
                 "-q"])
    err = capsys.readouterr().err
    assert code == 3 and "gpipe" in err and len(err.strip().splitlines()) == 1


def test_cli_training_simulate_export_and_run(tmp_path, capsys) -> None:
    import json

    from solver.cli import main

    plan = _train_plan(tmp_path)
    path = str(tmp_path / "train.json")
    assert main(["simulate", path, "--json"]) == 0
    sim = json.loads(capsys.readouterr().out)
    assert sim["step_s"] == pytest.approx(plan["predicted"]["step_s"])
    assert sim["mfu"] == pytest.approx(plan["predicted"]["mfu"])
    assert main(["simulate", path, "-M", "32", "--json"]) == 0
    more = json.loads(capsys.readouterr().out)
    assert more["microbatches"] == 32 and more["bubble_fraction"] < sim["bubble_fraction"]
    assert main(["export", path, "--to", "megatron", "--json"]) == 0
    args = json.loads(capsys.readouterr().out)["args"]
    flag = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    assert flag["--micro-batch-size"] == "1" and flag["--global-batch-size"] == "16"
    assert main(["export", path, "--to", "torchtitan", "--json"]) == 0
    par = json.loads(capsys.readouterr().out)["config"]["parallelism"]
    assert par["pipeline_parallel_schedule"] == "1F1B"
    for target in ("vllm", "torchgpipe"):
        assert main(["export", path, "--to", target]) == 2
        assert "--" in capsys.readouterr().err
    assert main(["run", path, "--nproc", "4"]) == 2
    assert "training plan" in capsys.readouterr().err


def test_cli_chain_trains_with_its_own_fields(tmp_path, capsys) -> None:
    import json

    from solver.cli import main

    chain = {"name": "c", "layers": [
        {"name": f"l{i}", "weight_bytes": 100, "activation_bytes": 10, "buffer_bytes": 0,
         "latency_s": 1.0, "backward_latency_s": 3.0, "stash_bytes": 40,
         "train_state_bytes": 200} for i in range(4)]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(chain))
    out = tmp_path / "p.json"
    assert main(["solve", str(path), "--phase", "train", "--microbatches", "2", "--devices", "2",
                 "--capacity", "1000", "-q", "-o", str(out)]) == 0
    assert "do not apply" not in capsys.readouterr().err
    plan = json.loads(out.read_text())
    # two layers a stage: 2 x 300 fixed + in-flight (2 first, 1 last) x 2 x 40
    assert [st["memory_bytes"] for st in plan["stages"]] == [600 + 160, 600 + 80]
    assert plan["objective"]["max_stage_latency_s"] == pytest.approx(8.0)
    assert main(["solve", str(path), "--schedule", "gpipe", "--devices", "2", "--capacity",
                 "1000", "-q"]) == 0
    assert "--phase train only" in capsys.readouterr().err
    chain["layers"][0]["stash_bytes"] = "lots"
    path.write_text(json.dumps(chain))
    assert main(["solve", str(path), "--phase", "train", "--devices", "2", "--capacity", "1000",
                 "-q"]) == 2
    assert "stash_bytes" in capsys.readouterr().err


def test_train_rows_compare_megatrons_even_split_with_the_optimum() -> None:
    from solver import Workload
    from solver.analysis import train_rows

    wl = Workload(batch=32, micro_batch=1, seq_len=2048, phase="train", precision="bf16",
                  recompute="full")
    rows = train_rows("llama3-8b", 8, wl, engine="megatron")
    by = {r.plan: r for r in rows}
    assert by["default"].blocks_per_stage == "4,4,4,4,4,4,4,4"
    assert sum(map(int, by["optimum"].blocks_per_stage.split(","))) == 32
    assert by["optimum"].fits
    assert by["optimum"].bottleneck_s <= by["default"].bottleneck_s
    assert all(0 < r.mfu < 1 and 0 <= r.bubble_fraction < 1 for r in rows)
    # 1F1B: with equal blocks, the first stage (8 stashes) holds more than the second-to-last
    mem = by["default"].stage_memory_bytes
    assert mem[0] > mem[-2]
    assert by["default"].max_stage_memory_bytes == max(mem)
    with pytest.raises(InvalidInputError):
        train_rows("llama3-8b", 8, Workload(batch=4), engine="megatron")


def test_ties_go_to_the_fewest_stages_on_every_exact_method() -> None:
    """One slow layer sets the bottleneck whatever the split of the rest: 2, 3 or 4 stages all
    reach it, and the plan returned is the 2-stage one, by the DP and the ILP alike."""
    names = tuple(f"l{i}" for i in range(5))
    problem = Problem(names=names, weight_bytes=[10] * 5, activation_bytes=[1] * 5,
                      buffer_bytes=[0] * 5, latency_s=[5.0, 0.5, 0.5, 0.5, 0.5],
                      capacity_bytes=10**6, max_stages=4,
                      training=Training("1f1b", 4, [10.0, 1.0, 1.0, 1.0, 1.0], [1] * 5,
                                        [0] * 5))
    answers = [solve(problem, m, SolveOptions(backend=b or "cpsat", use_hint=hint))
               for m, b in EXACT for hint in ((True, False) if m == "ilp" else (True,))]
    assert {a.bounds for a in answers} == {(0, 1, 5)}
    assert all(a.objective == pytest.approx(15.0) for a in answers)


def test_cli_training_refuses_what_its_engine_cannot_train(tmp_path, capsys) -> None:
    from solver.cli import main

    base = ["solve", "llama3-8b", "--phase", "train", "--devices", "4", "--capacity", "hbm",
            "--seq", "1024", "-q"]
    for engine in ("vllm", "sglang", "trtllm", "accelerate"):
        assert main([*base, "--engine", engine]) == 2
        assert "serves" in capsys.readouterr().err
    assert main([*base, "--engine", "megatron", "--schedule", "gpipe"]) == 2
    assert "1F1B" in capsys.readouterr().err
    assert main([*base, "--engine", "megatron"]) == 0
    assert main(["solve", "llama3-8b", "--devices", "4", "--capacity", "hbm", "--recompute",
                 "full", "-q"]) == 0
    assert "--phase train only" in capsys.readouterr().err


def test_hand_edited_training_plans_are_refused(tmp_path, capsys) -> None:
    import json

    from solver.cli import main

    plan = _train_plan(tmp_path)
    edits = [
        lambda d: d["workload"].pop("microbatches"),
        lambda d: d["workload"].update(microbatches=8.7),
        lambda d: d["workload"].update(schedule="zb"),
        lambda d: d["stages"][0].update(forward_s=None),
        lambda d: d["stages"][0].update(forward_s=100.0),
        lambda d: d["stages"][1].update(microbatches_in_flight=99),
        lambda d: d["predicted"].update(mfu=5.0),
    ]
    for k, change in enumerate(edits):
        doc = json.loads(json.dumps(plan))
        change(doc)
        path = tmp_path / f"edit{k}.json"
        path.write_text(json.dumps(doc))
        for command in (["show", str(path)], ["simulate", str(path)]):
            assert main(command) == 2, (k, command)
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (k, err)


def test_sample_models_train_in_samples_per_second(tmp_path) -> None:
    import json

    from solver.cli import main

    out = tmp_path / "r.json"
    assert main(["solve", "resnet50", "--phase", "train", "--batch", "8", "--devices", "2",
                 "--capacity", "hbm", "-q", "-o", str(out)]) == 0
    plan = json.loads(out.read_text())
    pred = plan["predicted"]
    assert plan["workload"]["throughput_unit"] == "samples"
    assert pred["tokens_per_s"] == pytest.approx(8 / pred["step_s"])
