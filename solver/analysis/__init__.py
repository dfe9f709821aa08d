"""Research on top of plans: every method side by side, batch sweeps, the capacity frontier,
plots. (pandas and matplotlib load here, not in the planning path.)"""

from __future__ import annotations

from .batch import RESULT_COLUMNS, Sweep, SweepTask, load_sweep, run_sweep
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
    "EngineRow",
    "Fix",
    "FrontierPoint",
    "Situation",
    "Sweep",
    "SweepTask",
    "TrainRow",
    "compare",
    "compare_table",
    "devices_needed",
    "engine_rows",
    "engine_table",
    "frontier_table",
    "infeasible_message",
    "load_sweep",
    "plot_devices_needed",
    "plot_plan",
    "plot_solve_times",
    "run_sweep",
    "suggest_fixes",
    "train_rows",
]
