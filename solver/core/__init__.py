"""The problem every method shares, and what an answer is: plain arrays, numpy only.

Nothing here imports networkx, pandas, a solver backend or torch.
"""

from __future__ import annotations

from .errors import CachepartError, InfeasibleError, InvalidInputError, SolverError
from .extensions import (
    Extension,
    Residency,
    TensorParallel,
    best_residency,
    default_allreduce_bytes,
    residency_stage_time,
    resident_stage_memory,
    stage_time_matrix,
    tp_stage_memory,
    tp_stage_time,
)
from .feasibility import canonical_partition, diagnose, fewest_stages, lower_bound
from .fleet import DeviceClass, Fleet, stage_view
from .kv import kv_tokens, smallest_kv_tokens, stage_kv_tokens
from .link import Link
from .partition import Partition, StageCost, check_partition, evaluate
from .problem import MemoryModel, Problem
from .status import Status
from .synthetic import random_problem
from .training import SCHEDULES, Training
from .units import format_bytes, parse_bytes

__all__ = [
    "SCHEDULES",
    "CachepartError",
    "DeviceClass",
    "Extension",
    "Fleet",
    "InfeasibleError",
    "InvalidInputError",
    "Link",
    "MemoryModel",
    "Partition",
    "Problem",
    "Residency",
    "SolverError",
    "StageCost",
    "Status",
    "TensorParallel",
    "Training",
    "best_residency",
    "canonical_partition",
    "check_partition",
    "default_allreduce_bytes",
    "diagnose",
    "evaluate",
    "fewest_stages",
    "format_bytes",
    "kv_tokens",
    "lower_bound",
    "parse_bytes",
    "random_problem",
    "residency_stage_time",
    "resident_stage_memory",
    "smallest_kv_tokens",
    "stage_kv_tokens",
    "stage_time_matrix",
    "stage_view",
    "tp_stage_memory",
    "tp_stage_time",
]
