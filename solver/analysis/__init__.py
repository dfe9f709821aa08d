"""Research on top of plans: every method side by side, batch sweeps, the capacity frontier,
plots, and the cost model's calibration to measured times. (pandas and matplotlib load here,
not in the planning path.)"""

from __future__ import annotations

from .batch import RESULT_COLUMNS, Sweep, SweepTask, load_sweep, run_sweep
from .calibrate import (
    Calibration,
    Measurement,
    fit_factors,
    measurements_from_profile,
    predict,
    prepare,
    read_measurements,
)
from .calibrate_io import calibration_yaml
from .compare import COMPARE_COLUMNS, compare, compare_table
from .engines import (
    ENGINE_COLUMNS,
    TRAIN_COLUMNS,
    EngineRow,
    TrainRow,
    engine_rows,
    engine_table,
    train_rows,
)
from .frontier import FrontierPoint, devices_needed, frontier_table
from .plots import plot_devices_needed, plot_plan, plot_solve_times
from .suggest import Fix, Situation, infeasible_message, suggest_fixes

__all__ = [
    "COMPARE_COLUMNS",
    "ENGINE_COLUMNS",
    "RESULT_COLUMNS",
    "TRAIN_COLUMNS",
    "Calibration",
    "EngineRow",
    "Fix",
    "FrontierPoint",
    "Measurement",
    "Situation",
    "Sweep",
    "SweepTask",
    "TrainRow",
    "calibration_yaml",
    "compare",
    "compare_table",
    "devices_needed",
    "engine_rows",
    "engine_table",
    "fit_factors",
    "frontier_table",
    "infeasible_message",
    "load_sweep",
    "measurements_from_profile",
    "plot_devices_needed",
    "plot_plan",
    "plot_solve_times",
    "predict",
    "prepare",
    "read_measurements",
    "run_sweep",
    "suggest_fixes",
    "train_rows",
]
