"""Useful infeasibility: what would make a plan exist, each change checked by solving again."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from solver import Workload, capacity_for, get_device, load_model, problem_from_graph
from solver.analysis import Fix, Situation, infeasible_message, suggest_fixes
from solver.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "examples" / "paper-dense-16l.chain.json"
# tiny-llama's largest block needs 1,804,544 bytes, its largest operator 1,771,520
BETWEEN_OP_AND_BLOCK = "1790000"


def _solve(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and stderr of ``cachepart solve -q argv``."""
    capsys.readouterr()
    code = main(["solve", *argv, "-q"])
    return code, capsys.readouterr().err


def _suggested(err: str) -> list[str]:
    """The options of the 'would fit' clause, as typed."""
    lines = [line for line in err.splitlines() if not line.startswith("cachepart: warning:")]
    assert len(lines) == 1, err  # the message stays one line
    line = lines[0]
    if "; would fit: " not in line:
        return []
    return line.split("; would fit: ", 1)[1].split(", or ")


def _as_options(item: str) -> list[str]:
    """'6 devices' -> ['-k', '6']; '--micro-batch 2' -> ['--micro-batch', '2']."""
    if item.endswith(" devices"):
        return ["-k", item.split()[0]]
    return item.split()


def _replace(argv: list[str], option: list[str]) -> list[str]:
    """argv with ``option`` set (an earlier value of the same option dropped)."""
    names = {"-k": ("-k", "--devices"), "--capacity": ("-c", "--capacity")}
    drop = names.get(option[0], (option[0],))
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in drop:
            skip = True
            continue
        out.append(arg)
    return [*out, *option]


def _check_each(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    """Solve ``argv`` (infeasible), then again with each suggestion: every one must fit."""
    code, err = _solve(capsys, *argv)
    assert code == 3, err
    assert err.splitlines()[-1].startswith("cachepart: infeasible: ")
    items = _suggested(err)
    assert len(items) <= 3
    for item in items:
        again, err2 = _solve(capsys, *_replace(argv, _as_options(item)))
        assert again == 0, (item, err2)
    return items


def test_device_count_at_l2_is_confirmed(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["vit-b16", "-c", "l2", "-k", "2"]
    items = _check_each(capsys, argv)
    assert items[0] == "4 devices"  # the diagnosis says at least 4: the fewest
    code, _ = _solve(capsys, *_replace(argv, ["-k", "3"]))
    assert code == 3


def test_micro_batch_is_the_largest_that_fits(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["vit-b16", "-c", "l2", "-k", "6", "--batch", "8"]
    items = _check_each(capsys, argv)
    assert "12 devices" in items and "--micro-batch 6" in items
    code, _ = _solve(capsys, *argv, "--micro-batch", "7")
    assert code == 3  # 6 is the largest


def test_granularity_and_tp(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tiny-llama", "-c", BETWEEN_OP_AND_BLOCK, "-k", "20"]
    items = _check_each(capsys, argv)
    assert items == ["--granularity op", "--tp 1,2"]  # bytes given: no tier to name


def test_tp_and_tier_for_a_too_big_embedding(capsys: pytest.CaptureFixture[str]) -> None:
    items = _check_each(capsys, ["gpt2", "--seq", "128", "-c", "l2", "-k", "8"])
    assert items == ["--tp 1,2", "--capacity hbm"]


def test_nothing_helps_no_clause(capsys: pytest.CaptureFixture[str]) -> None:
    # The edge TPU's only tier holds 7.6 MiB; gpt2's int8 embedding needs 38 MiB, 9.6 MiB even
    # split over the 4 devices; micro-batch 1 and per-operator layers leave it whole.
    code, err = _solve(capsys, "gpt2", "--seq", "128", "--device", "edgetpu", "--dtype", "int8",
                       "-c", "sram", "-k", "4")
    assert code == 3
    assert _suggested(err) == []
    assert "would fit" not in err and "cannot fit on one device" in err


def test_chain_only_devices_and_tp(capsys: pytest.CaptureFixture[str]) -> None:
    items = _check_each(capsys, [str(PAPER), "-c", "hbm", "-k", "2"])
    assert items and items[0].endswith(" devices")
    assert all(i.endswith(" devices") or i.startswith("--tp ") for i in items)


def test_training_gets_the_device_count(capsys: pytest.CaptureFixture[str]) -> None:
    items = _check_each(capsys, ["tiny-llama", "-c", "16MiB", "-k", "1", "--phase", "train",
                                 "--batch", "8", "--micro-batch", "1"])
    assert items == ["3 devices"]  # not the micro-batch, granularity nor TP of training


def test_user_tp_gets_devices_not_another_tp(capsys: pytest.CaptureFixture[str]) -> None:
    items = _check_each(capsys, ["gpt2", "--seq", "128", "-c", "l2", "-k", "4", "--tp", "1,2"])
    assert items[0].endswith(" devices")
    assert not any(i.startswith("--tp") for i in items)


# ----- the API -------------------------------------------------------------------------------


def _situation(model: str = "vit-b16", capacity: str = "l2", k: int = 6, batch: int = 8,
               **extra: object) -> Situation:
    workload = Workload(batch=batch, seq_len=2048)
    loaded = load_model(model, workload, tier=capacity)
    cap, tier = capacity_for(capacity, get_device("h100-sxm"))
    problem = problem_from_graph(loaded.graph, cap, k)
    return Situation(problem, source=model, kind=loaded.kind, graph=loaded.graph,
                     workload=workload, tier=tier, **extra)  # type: ignore[arg-type]


def test_api_fixes_carry_option_and_why() -> None:
    fixes = suggest_fixes(_situation())
    assert [f.kind for f in fixes] == ["devices", "micro_batch", "tier"]
    devices = fixes[0]
    assert (devices.option, devices.value, devices.text) == ("--devices 12", 12, "12 devices")
    assert "12 devices" in devices.why and "6 given" in devices.why
    assert fixes[1].option == "--micro-batch 6" and fixes[2].option == "--capacity hbm"
    assert all(isinstance(f, Fix) and f.why for f in fixes)


def test_limit_keeps_the_first() -> None:
    assert [f.kind for f in suggest_fixes(_situation(), limit=1)] == ["devices"]
    assert suggest_fixes(_situation(), limit=0) == []


def test_from_args_like() -> None:
    args = SimpleNamespace(model="vit-b16", capacity="l2", device="h100-sxm", batch=8)
    plain = _situation()
    situation = Situation.from_args(args, plain.problem)
    assert situation.tier == "l2" and situation.graph is None and situation.workload is None
    # without the model only what needs no rebuild: the device count
    assert [f.option for f in suggest_fixes(situation)] == ["--devices 12"]


def test_message_is_one_line() -> None:
    fixes = [Fix("--devices 6", "w", "devices", 6), Fix("--micro-batch 2", "w", "micro_batch", 2)]
    assert infeasible_message("too big", fixes) == \
        "too big; would fit: 6 devices, or --micro-batch 2"
    assert infeasible_message("too big", []) == "too big"
    assert "\n" not in infeasible_message("two\nlines", fixes)


def test_budget_spent_stops_the_checks() -> None:
    assert suggest_fixes(_situation(), budget_s=0.0) == []
    ticks = itertools.count()
    # a clock that advances one second a reading: the first check runs, then time is up
    fixes = suggest_fixes(_situation(), budget_s=2.5, clock=lambda: float(next(ticks)))
    assert [f.kind for f in fixes] == ["devices"]


def test_budget_real_time() -> None:
    start = time.perf_counter()
    suggest_fixes(_situation(model="gpt2", k=8, batch=4), budget_s=10.0)
    assert time.perf_counter() - start < 10.0


def test_compare_names_the_device_count(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["compare", "vit-b16", "-c", "l2", "-k", "2", "--methods", "parametric,dp"])
    err = capsys.readouterr().err
    assert code == 3
    assert _suggested(err) == ["4 devices"]  # compare keeps no model: nothing is rebuilt
