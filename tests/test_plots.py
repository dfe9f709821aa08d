"""Figures are written, and the plan's predictions agree with the simulator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from solver import load_plan, simulate_plan
from solver.analysis import plot_devices_needed, plot_solve_times
from solver.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    out = tmp_path / "plan.json"
    assert main(["solve", "tiny-llama", "--batch", "8", "--micro-batch", "2", "--seq", "64",
                 "-k", "6", "-c", "300kB", "-m", "dp", "-o", str(out), "-q"]) == 0
    return out


def test_plan_predictions_match_the_simulator(plan_file: Path) -> None:
    plan = load_plan(plan_file)
    sim = simulate_plan(plan)
    bottleneck = plan.objective["max_stage_latency_s"]
    assert plan.predicted["microbatches"] == 4 == sim.microbatches
    assert plan.predicted["tokens_per_s"] == pytest.approx(2 * 64 / bottleneck)
    assert plan.predicted["batch_tokens_per_s"] == pytest.approx(8 * 64 / sim.makespan_s)
    # A batch of 4 micro-batches pays fill and drain: slower than the steady state.
    assert plan.predicted["batch_tokens_per_s"] < plan.predicted["tokens_per_s"]


def test_plot_command_writes_a_png(plan_file: Path, capsys) -> None:
    assert main(["plot", str(plan_file)]) == 0
    png = plan_file.with_suffix(".png")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    assert main(["plot", str(plan_file.parent / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_research_figures(tmp_path: Path) -> None:
    times = pd.DataFrame({"method": ["dp", "dp", "parametric", "parametric"],
                          "n": [100, 1000, 100, 1000], "seconds": [0.01, 0.3, 0.001, 0.005]})
    assert plot_solve_times(times, tmp_path / "t.png").read_bytes()[:8] == PNG_MAGIC
    needed = pd.DataFrame({"model": ["a", "a", "b"], "tier": ["hbm", "l2", "hbm"],
                           "devices_needed": [1, 40, 2]})
    assert plot_devices_needed(needed, tmp_path / "d.png").read_bytes()[:8] == PNG_MAGIC
