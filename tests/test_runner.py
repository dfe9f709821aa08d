"""The runner (CPU, gloo): torch reference layers, plan checks, torchrun runs, profile command.

The torchrun runs use tiny-llama (batch 4, seq 16, micro-batches of 2, fp32, one timed step),
so the whole file stays within a couple of minutes on two cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.pipelining")

import solver.cli.run as run_cmd  # noqa: E402
from models.torch_modules import (  # noqa: E402
    build_module_chain,
    build_module_reference,
    module_chain_names,
)
from models.torch_ref import build_chain, build_layer, layer_names  # noqa: E402
from models.transformer import TransformerSpec  # noqa: E402
from models.zoo import load_zoo_model  # noqa: E402
from solver import (  # noqa: E402
    InvalidInputError,
    Plan,
    Workload,
    build_plan,
    load_model,
    load_plan,
    problem_from_graph,
    solve,
)
from solver.cli import main as cachepart  # noqa: E402
from solver.runner import check_stage_memory, check_world_size, predict, prepare_run  # noqa: E402
from solver.runner.l2 import pack_parameters  # noqa: E402
from solver.runner.pipeline import compare_outputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 150

TINY_GPT2 = TransformerSpec(hidden=32, layers=2, heads=4, ffn=64, vocab=50, positions=16,
                            mlp="plain", norm="layernorm", attn_bias=True, mlp_bias=True,
                            tied_embeddings=True)
TINY_MIXTRAL = TransformerSpec(hidden=32, layers=2, heads=4, kv_heads=2, ffn=48, vocab=40,
                               experts=4, experts_per_token=2)
SPECS = {"tiny-llama": load_zoo_model("tiny-llama").arch, "gpt2-style": TINY_GPT2,
         "mixtral-style": TINY_MIXTRAL}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----- torch reference layers ---------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["block", "op"])
@pytest.mark.parametrize("model", list(SPECS))
def test_layer_params_match_layer_descs(model: str, granularity: str) -> None:
    spec = SPECS[model]
    for desc in spec.layer_descs(granularity):
        layer = build_layer(spec, desc.name, seed=1)
        assert n_params(layer) == desc.params, desc.name


def test_tied_head_holds_an_identical_copy_of_the_embedding() -> None:
    embed = build_layer(TINY_GPT2, "embed", seed=5)
    head = build_layer(TINY_GPT2, "head", seed=5)
    assert n_params(head) == 2 * TINY_GPT2.hidden  # its final LayerNorm only
    assert torch.equal(head.tied_weight, embed.tok.weight)


def test_weights_depend_on_seed_and_name_only() -> None:
    spec = SPECS["tiny-llama"]
    a = build_layer(spec, "block1", seed=3)
    b = build_layer(spec, "block1", seed=3)
    c = build_layer(spec, "block2", seed=3)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(),
                                  strict=True):
        assert torch.equal(pa, pb), name
        if pa.dim() == 2:
            assert not torch.equal(pa, pc), name


@pytest.mark.parametrize("granularity", ["block", "op"])
@pytest.mark.parametrize("model", list(SPECS))
def test_chained_stages_equal_one_full_forward(model: str, granularity: str) -> None:
    spec = SPECS[model]
    names = layer_names(spec, granularity)
    ids = torch.randint(0, spec.vocab, (4, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = build_chain(spec, names, seed=2)(ids)
        x = ids
        for start in range(0, len(names), 2):  # stages of two layers: every boundary crossed
            stage = build_chain(spec, names[start:start + 2], seed=2)
            x = stage(*x) if isinstance(x, tuple) else stage(x)
    assert full.shape == (4, 16, spec.vocab)
    assert torch.allclose(x, full, rtol=0, atol=1e-6)


def test_causal_blocks_ignore_later_tokens() -> None:
    spec = SPECS["tiny-llama"]
    model = build_chain(spec, seed=0)
    ids = torch.randint(0, spec.vocab, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, prefix = model(ids), model(ids[:, :6])
    assert torch.allclose(whole[:, :6], prefix, atol=1e-5)


def test_unknown_layer_names_the_known_ones() -> None:
    with pytest.raises(Exception, match=r"no layer 'block9'.*embed, block0"):
        build_layer(SPECS["tiny-llama"], "block9")


USER_MODULE = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return x + self.fc(self.norm(x))


class Stack(nn.Module):
    def __init__(self, vocab=30, d=16, n=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(n))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.layers:
            x = block(x)
        return self.head(x)


def build():
    return Stack()
'''


def test_user_module_split_at_chain_names_equals_its_own_forward(tmp_path: Path) -> None:
    path = tmp_path / "user_model.py"
    path.write_text(USER_MODULE)
    source = f"{path}:build"
    names = module_chain_names(source)
    assert names == ["embed", "layers.0", "layers.1", "layers.2", "head"]
    ids = torch.randint(0, 30, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = build_module_reference(source, seed=4)(ids)
        x = build_module_chain(source, names[:2], seed=4)(ids)
        x = build_module_chain(source, names[2:], seed=4)(x)
    assert torch.allclose(x, want, rtol=0, atol=1e-6)


def test_packed_parameters_compute_the_same() -> None:
    spec = SPECS["tiny-llama"]
    stage = build_chain(spec, ["block0", "block1"], seed=0)
    x = torch.randn(2, 8, spec.hidden, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = stage(x)
        flat = pack_parameters(stage)
        after = stage(x)
    assert flat is not None and flat.numel() >= n_params(stage)
    assert all(p.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
               for p in stage.parameters())
    assert torch.equal(before, after)


def test_compare_outputs_tolerance_is_relative() -> None:
    ref = torch.full((2, 3), 100.0)
    assert compare_outputs(ref + 5e-4, ref, "fp32").passed
    failed = compare_outputs(ref + 1e-2, ref, "fp32")
    assert not failed.passed and failed.tolerance == pytest.approx(1e-3)


# ----- plans and the checks before running ------------------------------------------------
WORKLOAD = Workload(batch=4, seq_len=16, micro_batch=2, activation_dtype="fp32",
                    weight_dtype="fp32")


def make_plan(stages: int) -> Plan:
    """A tiny-llama plan with exactly ``stages`` stages: the smallest capacity (in 5% steps
    from an even split) that ``stages`` devices can hold."""
    graph = load_model("tiny-llama", WORKLOAD).graph
    total = problem_from_graph(graph, 2**40, 1).stage_memory(0, len(graph.layers()))
    capacity = -(-total // stages)
    while True:
        problem = problem_from_graph(graph, capacity, stages)
        part = solve(problem, "dp")
        if part.status.value != "infeasible":
            break
        capacity = int(capacity * 1.05) + 1
    plan = build_plan(graph, problem, part, device="h100-sxm", source="tiny-llama")
    assert len(plan.stages) == stages
    return plan


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plans")
    out = {}
    for k in (2, 4):
        out[f"plan{k}"] = root / f"plan{k}.json"
        make_plan(k).save(out[f"plan{k}"])
    doc = json.loads(out["plan2"].read_text())
    doc["model"]["fingerprint"] = "sha256:" + "0" * 64
    out["wrong"] = root / "wrong-fingerprint.json"
    out["wrong"].write_text(json.dumps(doc))
    return out


def test_checks_name_both_values(plans: dict[str, Path]) -> None:
    plan = load_plan(plans["plan2"])
    with pytest.raises(InvalidInputError, match=r"world size: 3 processes.* 2 stages .*= 2"):
        check_world_size(plan, 3)
    wrong = load_plan(plans["wrong"])
    with pytest.raises(InvalidInputError, match=rf"sha256:0{{64}}.*{plan.model.fingerprint}"):
        prepare_run(wrong, 2)
    with pytest.raises(InvalidInputError, match=r"stage 0 memory: .* more than the 1000 bytes"):
        check_stage_memory(plan.stages[0], 1000, "a small device")
    with pytest.raises(InvalidInputError, match="microbatches: 3 does not divide"):
        prepare_run(plan, 2, microbatches=3)
    int4 = dataclasses.replace(plan, workload={**plan.workload, "weight_dtype": "int4"})
    with pytest.raises(InvalidInputError, match="'int4' is not runnable"):
        prepare_run(int4, 2)
    setup = prepare_run(plan, 2)
    assert (setup.microbatches, setup.input_shape, setup.dtype) == (2, (4, 16), "fp32")


def test_prediction_for_the_micro_batches(plans: dict[str, Path]) -> None:
    plan = load_plan(plans["plan2"])
    pred = predict(plan, 2)
    times = [st.latency_s for st in plan.stages]
    assert pred["makespan_s"] == pytest.approx(sum(times) + max(times))
    assert pred["tokens_per_s"] > 0


# ----- torchrun runs --------------------------------------------------------------------------
def torchrun(nproc: int, *args: str, env: dict[str, str] | None = None,
             cwd: Path = REPO) -> tuple[subprocess.CompletedProcess[str], float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(nproc), "-m", "solver.runner", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    return done, time.monotonic() - t0


@pytest.mark.parametrize("stages", [2, 4])
def test_pipeline_matches_single_process(plans: dict[str, Path], tmp_path: Path,
                                         stages: int) -> None:
    report_path = tmp_path / "r.json"
    done, _ = torchrun(stages, str(plans[f"plan{stages}"]), "--verify", "--steps", "1",
                       "--report", str(report_path))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    verify = report["verify"]
    assert verify["passed"] and verify["max_abs_error"] <= verify["tolerance"]
    assert 0 < verify["tolerance"] <= 1e-5 * verify["reference_max_abs"] * 1.0001
    assert report["tokens_per_s"] > 0 and report["end_to_end_s"] > 0
    assert report["predicted"]["tokens_per_s"] > 0
    plan = load_plan(plans[f"plan{stages}"])
    assert len(report["stages"]) == stages
    for st, planned in zip(report["stages"], plan.stages, strict=True):
        assert st["index"] == planned.index
        assert st["layers"] == list(planned.layers)
        assert st["forward_s"] > 0 and st["peak_memory_bytes"] > 0
        assert st["predicted_s"] == pytest.approx(planned.latency_s)
    assert "forward_s" in done.stdout and "verify" in done.stdout


def test_wrong_fingerprint_is_refused(plans: dict[str, Path]) -> None:
    done, _ = torchrun(2, str(plans["wrong"]))
    assert done.returncode != 0
    assert "sha256:" + "0" * 64 in done.stderr
    assert load_plan(plans["plan2"]).model.fingerprint in done.stderr
    assert "exitcode  : 2" in done.stderr  # every rank refused with exit code 2


def test_world_size_mismatch_is_refused(plans: dict[str, Path]) -> None:
    done, _ = torchrun(1, str(plans["plan2"]))
    assert done.returncode != 0
    assert "world size: 1 processes, but the plan has 2 stages" in done.stderr


def test_a_stage_over_the_device_memory_is_refused_by_every_rank(plans: dict[str, Path]) \
        -> None:
    plan = load_plan(plans["plan2"])
    small, big = sorted(st.memory_bytes for st in plan.stages)
    over = next(st for st in plan.stages if st.memory_bytes == big)
    done, _ = torchrun(2, str(plans["plan2"]), env={"CACHEPART_DEVICE_MEMORY_BYTES": str(small)})
    assert done.returncode != 0
    assert f"stage {over.index} memory: the plan gives {big} bytes, more than the {small}" \
        in done.stderr
    # both ranks return 2 after agreeing (torchrun may end the second before it exits)
    assert "exitcode  : 2" in done.stderr and "forward_s" not in done.stdout


def test_a_failing_rank_stops_every_rank(plans: dict[str, Path]) -> None:
    done, elapsed = torchrun(2, str(plans["plan2"]), "--steps", "1", "--timeout", "60",
                             env={"CACHEPART_FAIL_RANK": "1"})
    assert done.returncode != 0
    assert elapsed < TIMEOUT_S
    assert "rank 1 (stage 1) failed" in done.stderr
    assert "rank      : 1" in done.stderr  # torchrun's summary names it too


# ----- commands -----------------------------------------------------------------------------
def test_profile_writes_the_model_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) \
        -> None:
    out = tmp_path / "profile.json"
    assert cachepart(["profile", "tiny-llama", "--batch", "2", "--seq", "8", "--repeats", "3",
                      "--warmup", "1", "--torch-device", "cpu", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "cachepart-profile/1" and doc["model"] == "tiny-llama"
    assert [layer["name"] for layer in doc["layers"]] == layer_names(SPECS["tiny-llama"])
    assert all(layer["latency_s"] > 0 and layer["repeats"] == 3 for layer in doc["layers"])
    assert doc["workload"] == {"batch": 2, "seq_len": 8, "phase": "prefill", "dtype": "fp32"}
    assert "profile written" in capsys.readouterr().out
    from solver import load_profile  # the planner reads it back

    assert load_profile(out).latencies().keys() == set(layer_names(SPECS["tiny-llama"]))


def test_profile_refuses_a_non_decoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) \
        -> None:
    assert cachepart(["profile", "resnet50", "-o", str(tmp_path / "p.json")]) == 2
    assert capsys.readouterr().err.startswith("cachepart: error: MODEL 'resnet50'")


def test_run_command_refuses_before_launching(plans: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cachepart(["run", str(plans["plan2"]), "--nproc", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cachepart: error: world size: 3") and err.count("\n") == 1
    assert cachepart(["run", str(plans["wrong"])]) == 2
    assert "model fingerprint" in capsys.readouterr().err


def _run_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_cmd.add_run_options(parser)
    return parser.parse_args(argv)


def test_run_command_line(plans: dict[str, Path]) -> None:
    options = run_cmd.run_options(_run_args([str(plans["plan2"]), "--verify", "--steps", "2",
                                             "--report", "r.json", "--pin-l2"]))
    cmd = run_cmd.launch_command(2, run_cmd.runner_argv(options))
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m"]
    assert cmd[7:] == ["solver.runner", str(plans["plan2"]), "--steps", "2", "--verify",
                       "--report", "r.json", "--pin-l2"]
    # the runner parses what the launcher writes back into the same options
    from solver.cli.worker import parser as runner_parser

    assert run_cmd.run_options(runner_parser().parse_args(cmd[8:])) == options


def test_run_command_runs_a_split_user_module(tmp_path: Path,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    """A torch module factory planned at its chain's qualified names, launched by
    ``cachepart run``: the split pipeline equals the module's own forward."""
    path = tmp_path / "user_model.py"
    path.write_text(USER_MODULE)
    source = f"{path}:build"
    graph = load_model(source, WORKLOAD, input_shape=(4, 16), input_dtype="long").graph
    problem = problem_from_graph(graph, 12_000, 2)
    plan = build_plan(graph, problem, solve(problem, "dp"), device="h100-sxm", source=source)
    assert [st.layers for st in plan.stages] == [("embed", "layers.0", "layers.1"),
                                                 ("layers.2", "head")]
    plan.save(tmp_path / "plan.json")
    report = tmp_path / "r.json"
    assert cachepart(["run", str(tmp_path / "plan.json"), "--verify", "--steps", "1",
                      "--input-shape", "4,16", "--input-dtype", "long",
                      "--report", str(report)]) == 0, capfd.readouterr()
    doc = json.loads(report.read_text())
    assert doc["verify"]["passed"] and doc["stages"][1]["layers"] == ["layers.2", "head"]


# ----- bad options: one line, exit 2, before torchrun starts -----------------------------------
@pytest.fixture
def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cachepart run` must refuse these itself: starting torchrun fails the test."""
    def launch(*args: object, **kwargs: object) -> int:
        raise AssertionError(f"torchrun was launched: {args}")
    monkeypatch.setattr(run_cmd, "run_supervised", launch)


@pytest.mark.parametrize(("options", "message"), [
    (["--steps", "0"], "--steps: must be >= 1, got 0"),
    (["--steps", "-1"], "--steps: must be >= 1, got -1"),
    (["--microbatches", "0"], "--microbatches: must be >= 1, got 0"),
    (["--microbatches", "-2"], "--microbatches: must be >= 1, got -2"),
    (["--nproc", "0"], "--nproc: must be >= 1, got 0"),
    (["--report", "{tmp}"], "--report: {tmp}: cannot write (is a directory)"),
    (["--report", "{tmp}/no/such/r.json"],
     "--report: {tmp}/no/such/r.json: cannot write (no directory '{tmp}/no/such')"),
    (["--torch-device", "cuda"], "--torch-device: cuda: no CUDA device is visible"),
    (["--timeout", "0"], "--timeout: must be > 0 seconds, got 0"),
])
def test_run_command_refuses_bad_options_before_launching(
        plans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, no_launch: None, options: list[str], message: str) \
        -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    argv = [o.format(tmp=tmp_path) for o in options]
    assert cachepart(["run", str(plans["plan2"]), *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"cachepart: error: {message.format(tmp=tmp_path)}\n"
    assert not list(tmp_path.iterdir())  # the report check creates nothing


def test_run_command_passes_torch_device_by_its_name(plans: dict[str, Path]) -> None:
    options = run_cmd.run_options(_run_args([str(plans["plan2"]), "--torch-device", "cpu"]))
    assert run_cmd.runner_argv(options)[1:] == ["--torch-device", "cpu"]


@pytest.fixture
def rank0_of_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment torchrun gives rank 0 of 2 (no process group is started by the
    refusals below)."""
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(("options", "message"), [
    (["--steps", "0"], "--steps: must be >= 1, got 0"),
    (["--warmup", "-1"], "--warmup: must be >= 0, got -1"),
    (["--microbatches", "0"], "--microbatches: must be >= 1, got 0"),
    (["--timeout", "0"], "--timeout: must be > 0 seconds, got 0"),
    (["--report", "{tmp}"], "--report: {tmp}: cannot write (is a directory)"),
    (["--torch-device", "cuda"], "--torch-device: cuda: no CUDA device is visible"),
])
def test_runner_refuses_bad_options_in_one_line(
        plans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, rank0_of_2: None, options: list[str], message: str) \
        -> None:
    from solver.cli.worker import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", None)  # never reached
    argv = [o.format(tmp=tmp_path) for o in options]
    assert main([str(plans["plan2"]), *argv]) == 2
    assert capsys.readouterr().err == \
        f"cachepart runner: error: {message.format(tmp=tmp_path)}\n"


def test_profile_refuses_a_chain_or_plan_json(plans: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    chain = REPO / "examples" / "paper-dense-16l.chain.json"
    for model, what in ((chain, "a chain JSON (layer sizes and times, no architecture"),
                        (plans["plan2"], "a plan JSON (its model: 'tiny-llama'), not a model")):
        assert cachepart(["profile", str(model), "-o", str(tmp_path / "p.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cachepart: error: MODEL {str(model)!r}: {what}")
        assert "a zoo decoder, a spec YAML or an HF config.json" in err
        assert "model_type" not in err and err.count("\n") == 1


def test_profile_refuses_an_unwritable_output_before_timing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) \
        -> None:
    import solver.runner.profiling as profiling

    monkeypatch.setattr(profiling, "profile_layers", None)  # timing would fail the test
    for out, why in ((tmp_path, "is a directory"),
                     (tmp_path / "none" / "p.json", f"no directory '{tmp_path / 'none'}'")):
        assert cachepart(["profile", "tiny-llama", "--torch-device", "cpu", "-o", str(out)]) == 2
        assert capsys.readouterr().err == f"cachepart: error: --output: {out}: cannot write " \
                                          f"({why})\n"
