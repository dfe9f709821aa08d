"""Bad input ends in one line naming the field and the value, and a non-zero exit code; never a
traceback, never a silently wrong plan (cases found by a review of every sub-command)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from solver.cli import main

from .test_inputs import CHAIN


def _chain(tmp_path: Path, **changes: object) -> str:
    doc = json.loads(json.dumps(CHAIN))
    doc.update(changes)
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _one_line(err: str) -> None:
    lines = [line for line in err.strip().splitlines() if not line.startswith("cachepart: warning")]
    assert "Traceback" not in err and len(lines) == 1, err


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["solve", "tiny-llama", "-k", "2", "-c", "hbm", "--seed", "-1"], 2, "--seed"),
    (["solve", "tiny-llama", "-k", "2", "-c", "hbm", "--tp", "1,2", "-m", "ilp",
      "--time-limit", "nan"], 2, "--time-limit"),
    (["solve", "tiny-llama", "-k", "2", "-c", "99999999999999999999999"], 2, "2^62"),
    (["solve", "tiny-llama", "-k", "2", "-c", "hbm", "-o", "/proc/nope/x.json"], 2, "--output"),
    (["solve", "tiny-llama", "-k", "2", "-c", "hbm", "-o", ""], 2, "--output: empty path"),
    (["compare", "tiny-llama", "-k", "2", "-c", "hbm", "--csv", "/proc/nope/x.csv",
      "--methods", "dp"], 2, "--csv"),
    (["compare", "tiny-llama", "-k", "2", "-c", "10kB", "--methods", "dp"], 3, "cannot fit"),
    (["solve", "tiny-llama", "-k", "2", "-c", "hbm", "--tp", "1,2", "--devices-per-node", "0"],
     2, "--devices-per-node"),
    (["batch", "--models", "tiny-llama", "--devices", "2", "--capacities", "hbm",
      "--time-limit", "-1", "--out", "{tmp}/b"], 2, "--time-limit"),
    (["batch", "--models", "tiny-llama", "--devices", "2,,4", "--capacities", "hbm",
      "--out", "{tmp}/b"], 2, "--devices: expected whole numbers"),
    (["batch", "--models", "tiny-llama", "--devices", "2", "--capacities", "hbm",
      "--out", "{tmp}/file.txt"], 2, "--out"),
    (["paper", "--time-limit", "0"], 2, "--time-limit"),
    (["paper", "--methods", "magic"], 2, "--methods: unknown method 'magic'"),
])
def test_cli_rejects(argv: list[str], code: int, message: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err, err
    _one_line(err)


@pytest.mark.parametrize(("changes", "message"), [
    ({"metadata": "abc"}, "metadata: expected an object"),
    ({"link": {"bandwidth_bytes_per_s": 1e9, "foo": 1}}, "link: unknown field 'foo'"),
    ({"layers": [{"name": "a", "wieght": 3, "weight_bytes": 1, "activation_bytes": 1,
                  "latency_s": 1.0}]}, "unknown field 'wieght'"),
    ({"layers": [{"name": "a", "weight_bytes": 10**29, "activation_bytes": 1,
                  "latency_s": 1.0}]}, "2^62"),
])
def test_bad_chains(tmp_path: Path, capsys, changes: dict[str, object], message: str) -> None:
    assert main(["solve", _chain(tmp_path, **changes), "-k", "2", "-c", "1000"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    _one_line(err)


@pytest.mark.parametrize(("arch", "message"), [
    ("architecture: [transformer]\narch: {}", "architecture: ['transformer'] is not known"),
    ("architecture: transformer\narch: {hidden: 64, layers: 2, heads: 4, ffn: 128, head_dim: big}",
     "arch.head_dim: expected a whole number"),
    ("architecture: transformer\narch: {hidden: 64, layers: 2, heads: 4, ffn: 128, head_dim: 0}",
     "arch.head_dim: must be a positive"),
    ("architecture: transformer\narch: {hidden: 64, layers: 2, heads: 4}", "arch.ffn: missing"),
    ("architecture: resnet\narch: {expansion: 0}", "arch.expansion: must be a positive"),
    ("architecture: resnet\narch: {blocks: 3}", "arch.blocks: expected a list"),
])
def test_bad_specs(tmp_path: Path, capsys, arch: str, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: x\n{arch}\n")
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "spec.yaml" in err, err
    _one_line(err)


def _plan(tmp_path: Path) -> Path:
    out = tmp_path / "plan.json"
    assert main(["solve", "tiny-llama", "--batch", "4", "--micro-batch", "2", "--seq", "16",
                 "-k", "6", "-c", "300kB", "-m", "dp", "-q", "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize(("path", "value", "message"), [
    (("objective", "max_stage_latency_s"), 123.0, "objective/max_stage_latency_s"),
    (("objective", "bottleneck_stage"), 9, "objective/bottleneck_stage"),
    (("stages", 1, "device_rank"), 0, "stages/1/device_rank"),
    (("stages", 0, "headroom_bytes"), -1, "stages/0/headroom_bytes"),
    (("solver", "status"), "infeasible", "solver/status"),
    (("workload", "micro_batch"), 99, "workload/micro_batch"),
])
def test_hand_edited_plans(tmp_path: Path, capsys, path: tuple, value: object,
                           message: str) -> None:
    plan_path = _plan(tmp_path)
    doc = json.loads(plan_path.read_text())
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    plan_path.write_text(json.dumps(doc))
    for command in ("show", "simulate", "plot"):
        assert main([command, str(plan_path)]) == 2, command
        err = capsys.readouterr().err
        assert message in err, err
        _one_line(err)


def test_plot_output_checks(tmp_path: Path, capsys) -> None:
    plan_path = _plan(tmp_path)
    assert main(["plot", str(plan_path), "-o", str(tmp_path / "p.txt")]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["plot", str(plan_path), "--microbatches", "100000"]) == 2
    assert "--microbatches" in capsys.readouterr().err


def test_profile_for_another_workload_is_refused(tmp_path: Path, capsys) -> None:
    profile = {"schema": "cachepart-profile/1", "model": "tiny-llama", "device": "cpu",
               "workload": {"batch": 2, "seq_len": 16, "phase": "prefill"},
               "layers": [{"name": n, "latency_s": 1e-3} for n in
                          ["embed", "block0", "block1", "block2", "block3", "head"]]}
    path = tmp_path / "prof.json"
    path.write_text(json.dumps(profile))
    base = ["solve", "tiny-llama", "-k", "2", "-c", "hbm", "-m", "dp", "-q", "--profile", str(path)]
    assert main([*base, "--batch", "2", "--seq", "16"]) == 0
    assert main([*base, "--batch", "8", "--seq", "512"]) == 2
    err = capsys.readouterr().err
    assert "measured at" in err
    profile["model"] = "llama2-7b"
    path.write_text(json.dumps(profile))
    assert main([*base, "--batch", "2", "--seq", "16"]) == 2
    assert "was measured for model 'llama2-7b'" in capsys.readouterr().err


def test_warnings_for_options_that_do_not_apply(tmp_path: Path, capsys) -> None:
    assert main(["solve", _chain(tmp_path), "-k", "3", "-c", "300MB", "-m", "dp", "-q",
                 "--batch", "4", "--granularity", "op"]) == 0
    assert "--batch, --granularity: a chain JSON carries its own sizes" in capsys.readouterr().err
    assert main(["inspect", "gpt2", "--seq", "4096"]) == 0
    assert "exceeds the 1024 learned positions" in capsys.readouterr().err
    assert main(["solve", "resnet50", "-k", "4", "-c", "smem", "-m", "dp", "-q"]) == 0
    assert "no bandwidth figure for 'smem'" in capsys.readouterr().err


# ----- one error tree, one exit table ---------------------------------------------------------
def test_library_errors_name_the_parameter_and_the_cli_its_option(capsys) -> None:
    from solver import InvalidInputError, SolveOptions, random_problem

    with pytest.raises(InvalidInputError) as err:
        SolveOptions(time_limit_s=-1)
    assert err.value.field == "time_limit_s" and str(err.value).startswith("time_limit_s: ")
    assert "--" not in str(err.value)
    with pytest.raises(InvalidInputError) as err:
        random_problem(0, 4).replace(max_stages=0)
    assert err.value.field == "max_stages"
    # the same errors through the CLI: named by the option that sets them there
    assert main(["solve", "tiny-llama", "-k", "0", "-c", "hbm"]) == 2
    assert capsys.readouterr().err == \
        "cachepart: error: --devices: must be a whole number >= 1, got 0\n"
    assert main(["batch", "--models", "tiny-llama", "--devices", "2", "--capacities", "l9",
                 "--out", "/tmp/never-written"]) == 2
    assert capsys.readouterr().err.startswith("cachepart: error: --capacities: 'l9' is neither")


def test_exit_table() -> None:
    from solver import CachepartError, InfeasibleError, InvalidInputError, SolverError
    from solver.cli.exit_codes import ExitCode, exit_for

    assert exit_for(InvalidInputError("x")) == (ExitCode.BAD_INPUT, "error")
    assert exit_for(InfeasibleError("x")) == (ExitCode.INFEASIBLE, "infeasible")
    assert exit_for(SolverError("x")) == (ExitCode.SOLVER, "solver error")
    assert exit_for(CachepartError("x")) == (ExitCode.SOLVER, "error")
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 130]


def test_building_a_plan_from_an_infeasible_answer_is_exit_3(monkeypatch, capsys) -> None:
    """InfeasibleError is what a plan request without a plan raises; the table makes it 3."""
    import solver.cli.zoo as zoo
    from solver import InfeasibleError, build_plan, load_chain, problem_from_graph, solve

    graph = load_chain(Path(__file__).resolve().parents[1] / "examples" /
                       "paper-dense-16l.chain.json")
    problem = problem_from_graph(graph, 10**6, 2)
    answer = solve(problem, "dp")
    with pytest.raises(InfeasibleError, match="cannot fit"):
        build_plan(graph, problem, answer)

    def refuse(args: object) -> int:
        build_plan(graph, problem, answer)
        return 0

    monkeypatch.setattr(zoo, "run", refuse)
    assert main(["zoo"]) == 3
    assert capsys.readouterr().err.startswith("cachepart: infeasible: layer ")


def test_interrupt_is_exit_130(monkeypatch, capsys) -> None:
    import solver.cli.zoo as zoo

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "run", interrupted)
    assert main(["zoo"]) == 130
    assert capsys.readouterr().err == "cachepart: interrupted\n"


def test_review_cases_are_one_line(tmp_path: Path, capsys) -> None:
    """Inputs a review found ending in a traceback or in a wrong name for the option."""
    hbm = _chain(tmp_path, layers=[{"name": "a", "weight_bytes": 10, "activation_bytes": 1,
                                    "latency_s": 1.0, "latency_hbm_s": "x"}])
    assert main(["solve", hbm, "-k", "1", "-c", "l2", "--residency", "partial"]) == 2
    assert "layer 'a'.latency_hbm_s: expected a number, got 'x'" in capsys.readouterr().err
    slow = _chain(tmp_path, layers=[{"name": "a", "weight_bytes": 10, "activation_bytes": 1,
                                     "latency_s": 1e308},
                                    {"name": "b", "weight_bytes": 10, "activation_bytes": 1,
                                     "latency_s": 1.0}])
    assert main(["solve", slow, "-k", "2", "-c", "1GB"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "latency_s: the layers' latencies add up to 1e+308 s" in err
    many = [{"name": f"l{i}", "weight_bytes": 10, "activation_bytes": 1, "latency_s": 1.0}
            for i in range(4001)]
    big = _chain(tmp_path, layers=many)
    assert main(["compare", big, "-k", "8", "-c", "10MB", "--methods", "dp"]) == 2
    assert "cachepart: error: --methods: dp: 4001 layers is more than" in capsys.readouterr().err
    plan = tmp_path / "plan.json"
    assert main(["solve", _chain(tmp_path), "-k", "3", "-c", "300MB", "-q", "-o", str(plan)]) == 0
    assert main(["plot", str(plan), "-o", ""]) == 2
    assert main(["plot", str(plan), "-o", str(tmp_path / "no" / "p.png")]) == 2
    assert "--output: " in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert main(["solve", _chain(tmp_path), "-k", "3", "-c", "300MB", "-q",
                 "--devices-per-node", "0"]) == 0
    assert "--devices-per-node 0 applies to --tp without --cluster only" in capsys.readouterr().err
