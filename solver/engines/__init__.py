"""Serving and training engines: their rules for a pipeline split, the problem those rules
make, and their default splits. Exports of a plan to each engine's format live beside the plan
(solver/plan/export.py)."""

from __future__ import annotations

from .rules import (
    ENGINES,
    Engine,
    default_split,
    get_engine,
    parameter_split,
    sglang_memory_fraction,
    split_bounds,
)
from .shape import block_positions, engine_cuts, engine_problem

__all__ = [
    "ENGINES",
    "Engine",
    "block_positions",
    "default_split",
    "engine_cuts",
    "engine_problem",
    "get_engine",
    "parameter_split",
    "sglang_memory_fraction",
    "split_bounds",
]
