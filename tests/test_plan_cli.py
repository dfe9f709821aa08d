"""Plan JSON round trip and schema checks; the CLI's output and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from solver import (
    InvalidInputError,
    Plan,
    build_plan,
    chain_from_dict,
    fingerprint,
    load_chain,
    load_plan,
    problem_from_graph,
    solve,
)
from solver.cli import main

from .test_inputs import CHAIN

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "examples" / "paper-dense-16l.chain.json"


@pytest.fixture
def chain_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(CHAIN))
    return path


def _plan(method: str = "dp") -> Plan:
    graph = chain_from_dict(CHAIN)
    problem = problem_from_graph(graph, capacity_bytes=300_000_000, max_stages=3)
    return build_plan(graph, problem, solve(problem, method), time_limit_s=5)


def test_plan_round_trip(tmp_path: Path) -> None:
    plan = _plan()
    path = tmp_path / "plan.json"
    plan.save(path)
    again = load_plan(path)
    assert again == plan
    data = json.loads(path.read_text())
    assert data["schema_version"] == "1.6"
    # a 1.0 plan (no device_type, node or cluster) still loads
    old = {**data, "schema_version": "1.0",
           "stages": [{k: v for k, v in st.items() if k not in ("device_type", "node")}
                      for st in data["stages"]],
           "hardware": {k: v for k, v in data["hardware"].items() if k != "cluster"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_plan(tmp_path / "old.json").stages == plan.stages
    assert data["solver"]["status"] == "optimal"
    assert [s["layers"] for s in data["stages"]] == [["embed"], ["block0"], ["head"]]
    assert data["objective"]["max_stage_latency_s"] == max(s["latency_s"] for s in data["stages"])
    assert data["model"]["fingerprint"] == fingerprint(chain_from_dict(CHAIN))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("stages"), "'stages' is a required property"),
    (lambda d: d["solver"].update(status="done"), "solver/status"),
    (lambda d: d["stages"][0].update(memory_bytes=10**12), "exceeds the capacity 300000000 of its device"),
    (lambda d: d["stages"][1]["layers"].append("embed"), r"4 layers \(3 distinct\)"),
    (lambda d: d.update(schema_version="2.0"), "schema_version"),
    (lambda d: d["model"].update(fingerprint="abc"), "model/fingerprint"),
])
def test_plan_validation(mutate, message) -> None:
    data = _plan().to_dict()
    mutate(data)
    with pytest.raises(InvalidInputError, match=message):
        Plan.from_dict(data)


def test_predicted_tokens_from_workload() -> None:
    graph = load_chain(PAPER)
    problem = problem_from_graph(graph, 80 * 10**9, 16)
    plan = build_plan(graph, problem, solve(problem, "dp"))
    bottleneck = plan.objective["max_stage_latency_s"]
    assert plan.predicted["tokens_per_s"] == pytest.approx(128 * 10000 / bottleneck)


def test_cli_solve_writes_a_valid_plan(chain_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "plan.json"
    code = main(["solve", str(chain_file), "--devices", "3", "--capacity", "300MB",
                 "--method", "dp", "-o", str(out)])
    assert code == 0
    assert load_plan(out).solver.status.value == "optimal"
    printed = capsys.readouterr().out
    assert "bottleneck" in printed and "head" in printed
    assert main(["show", str(out)]) == 0
    assert "stage" in capsys.readouterr().out


def test_cli_compare_table_and_csv(chain_file: Path, tmp_path: Path, capsys) -> None:
    csv = tmp_path / "cmp.csv"
    code = main(["compare", str(chain_file), "-k", "3", "-c", "300MB", "--csv", str(csv),
                 "--methods", "dp,parametric,greedy,uniform,params"])
    assert code == 0
    text = csv.read_text().splitlines()
    assert text[0].startswith("method,stages,max_stage_latency_s,ratio_to_best")
    assert len(text) == 6
    assert "parametric" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--capacity", "12 lots"], 2, "--capacity: unknown unit"),
    (["--capacity", "1MB"], 3, "layer 'embed' cannot fit on one device"),
    (["--capacity", "300MB", "--devices", "0"], 2, "--devices: must be a whole number >= 1, got 0"),
    (["--capacity", "278925000", "--devices", "1", "-m", "dp"], 3, "at least 2 devices"),
    (["--capacity", "300MB", "--method", "magic"], 2, "invalid choice: 'magic'"),
    (["--capacity", "300MB", "--time-limit", "0"], 2, "--time-limit: must be a finite number"),
    (["--capacity", "300MB", "--time-limit", "nan", "-m", "ilp"], 2, "--time-limit: must be a finite"),
    (["--capacity", "300MB", "--seed", "-1"], 2, "--seed: must be a whole number"),
    (["--capacity", "999999999999999999999999"], 2, "beyond the 2^62"),
    (["--capacity", "1.5"], 2, "a byte count must be whole"),
])
def test_cli_exit_codes(chain_file: Path, capsys, args, code, message) -> None:
    base = ["solve", str(chain_file), "--devices", "3"]
    assert main([*base, *args]) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_bad_model_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": [{"name": "x", "weight_bytes": -1,
                                           "activation_bytes": 0, "latency_s": 1}]}))
    assert main(["solve", str(bad), "-k", "2", "-c", "1GB"]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "weight_bytes" in err and "-1" in err
    assert main(["show", str(tmp_path / "nope.json")]) == 2


@pytest.mark.skipif(shutil.which("cachepart") is None and not (Path(sys.executable).parent /
                    "cachepart").exists(), reason="console script not installed")
def test_console_script_reports_infeasible_without_traceback(chain_file: Path) -> None:
    exe = shutil.which("cachepart") or str(Path(sys.executable).parent / "cachepart")
    proc = subprocess.run([exe, "solve", str(chain_file), "-k", "3", "-c", "1MB"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.startswith("cachepart: infeasible: layer 'embed'")
    assert "Traceback" not in proc.stderr
