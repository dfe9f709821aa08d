"""Batch sweeps: one row per combination, infeasible rows, resumable after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from solver import InvalidInputError, Sweep, Workload, load_sweep, run_sweep
from solver.analysis import RESULT_COLUMNS
from solver.analysis.batch import JOURNAL
from solver.cli import main

SMALL = Sweep(models=("tiny-llama", "gpt2"), devices=(2, 4), capacities=("hbm", "l2", "10kB"),
              methods=("greedy", "dp", "parametric"), workload=Workload(batch=2, seq_len=64))


def test_sweep_rows(tmp_path: Path) -> None:
    table = run_sweep(SMALL, tmp_path, workers=1)
    assert list(table.columns) == RESULT_COLUMNS
    assert len(table) == 2 * 2 * 3 * 3
    assert not table.duplicated(["model", "devices", "capacity", "method"]).any()
    infeasible = table[table["capacity"] == "10kB"]
    assert (infeasible["status"] == "infeasible").all()
    assert infeasible["diagnosis"].str.contains("cannot fit").all()
    exact = table[table["method"].isin(["dp", "parametric"]) & (table["status"] == "optimal")]
    paired = exact.pivot_table(index=["model", "devices", "capacity"], columns="method",
                               values="objective")
    assert (paired["dp"] == paired["parametric"]).all()
    assert pd.read_parquet(tmp_path / "results.parquet").shape == table.shape
    assert (tmp_path / "results.csv").exists()


def test_parallel_equals_serial(tmp_path: Path) -> None:
    serial = run_sweep(SMALL, tmp_path / "a", workers=1)
    parallel = run_sweep(SMALL, tmp_path / "b", workers=2)
    cols = ["model", "devices", "capacity", "method", "status", "objective", "stages"]
    pd.testing.assert_frame_equal(serial[cols], parallel[cols])


def test_resume_after_a_cut_line(tmp_path: Path) -> None:
    full = run_sweep(SMALL, tmp_path / "full", workers=1)
    journal = (tmp_path / "full" / JOURNAL).read_text().splitlines()
    partial = tmp_path / "partial"
    partial.mkdir()
    # Settings line, 7 rows, then half a row: what a kill during a write leaves.
    (partial / JOURNAL).write_text("\n".join(journal[:8]) + "\n" + journal[8][: len(journal[8]) // 2])
    resumed = run_sweep(SMALL, partial, workers=1)
    assert len(resumed) == len(full)
    cols = ["model", "devices", "capacity", "method", "status", "objective"]
    pd.testing.assert_frame_equal(resumed[cols], full[cols])
    keys = []
    for line in (partial / JOURNAL).read_text().splitlines()[1:]:
        try:
            keys.append(json.loads(line)["key"])
        except json.JSONDecodeError:
            assert line == journal[8][: len(journal[8]) // 2]  # only the cut line is unreadable
    assert len(keys) == len(set(keys)) == len(full)


def test_resume_after_sigkill(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "solver.cli", "batch", "--models", "llama2-7b,mistral-7b",
            "--devices", "4,8,16,32", "--capacities", "hbm,40GB,20GB,10GB", "--methods",
            "dp,parametric,greedy,uniform,params", "--batch", "1", "--seq", "256",
            "--granularity", "op", "--workers", "1", "--out", str(out), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / JOURNAL
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.csv").exists()  # killed before the end
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 * 4 * 4 * 5
    assert not table.duplicated(["model", "devices", "capacity", "method"]).any()


def test_sweep_file_and_errors(tmp_path: Path, capsys) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("models: [tiny-llama]\ndevices: [2]\ncapacities: [hbm]\nmethods: [dp]\n"
                    "workload: {batch: 2, seq: 32}\n")
    sweep = load_sweep(path)
    assert sweep.workload.batch == 2 and sweep.workload.seq_len == 32
    assert main(["batch", "--sweep", str(path), "--out", str(tmp_path / "o"), "-q"]) == 0
    assert "1 solves (1 optimal)" in capsys.readouterr().out
    with pytest.raises(InvalidInputError, match="methods: unknown method 'magic'"):
        Sweep(models=("gpt2",), devices=(2,), capacities=("hbm",), methods=("magic",))
    assert main(["batch", "--models", "nope", "--devices", "2", "--capacities", "hbm",
                 "--out", str(tmp_path / "x")]) == 2
    assert "neither a file nor a zoo model" in capsys.readouterr().err
    assert main(["batch", "--models", "gpt2", "--devices", "two", "--capacities", "hbm",
                 "--out", str(tmp_path / "x")]) == 2
    changed = Sweep(models=("tiny-llama",), devices=(2,), capacities=("hbm",), methods=("dp",),
                    workload=Workload(batch=3))
    with pytest.raises(InvalidInputError, match="other settings"):
        run_sweep(changed, tmp_path / "o")


def test_tables_carry_the_workload_and_whole_numbers(tmp_path: Path) -> None:
    """Each row says what was solved (the sweep's workload), and counts stay integers in the
    CSV and the Parquet file even where an infeasible row leaves them empty."""
    import pandas as pd

    sweep = Sweep(models=("gpt2",), devices=(1, 4), capacities=("l2", "hbm"), methods=("dp",),
                  workload=Workload(batch=4, seq_len=256, micro_batch=2))
    run_sweep(sweep, tmp_path, workers=1)
    csv = pd.read_csv(tmp_path / "results.csv")
    assert set(csv["status"]) >= {"optimal", "infeasible"}
    assert (csv["batch"] == 4).all() and (csv["seq_len"] == 256).all()
    assert (csv["micro_batch"] == 2).all() and (csv["phase"] == "prefill").all()
    assert (csv["dtype"] == "bf16").all() and (csv["memory_model"] == "additive").all()
    raw = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    for column in ("devices", "capacity_bytes", "stages", "params", "micro_batch"):
        assert all(v == "" or v.isdigit() for v in raw[column]), (column, list(raw[column]))
    parquet = pd.read_parquet(tmp_path / "results.parquet")
    for column in ("batch", "seq_len", "micro_batch", "devices", "capacity_bytes", "stages",
                   "params"):
        assert str(parquet[column].dtype) == "Int64", column
    infeasible = parquet[parquet["status"] == "infeasible"]
    assert infeasible["stages"].isna().all()
    feasible = parquet[parquet["status"] == "optimal"]
    assert (feasible["stages"] >= 1).all()
