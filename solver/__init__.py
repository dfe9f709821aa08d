"""cachepart: partition a model's layers across devices so every stage fits a memory tier and
the slowest pipeline stage is as fast as possible."""

from __future__ import annotations

from .algorithms import METHODS, ProgressEvent, SolveOptions
from .chain import chain_from_dict, chain_to_dict, load_chain
from .errors import CachepartError, InfeasibleError, InvalidInputError, SolverError
from .feasibility import canonical_partition, diagnose, lower_bound
from .graph import LayerGraph, Link
from .partition import Partition, check_partition
from .plan import SCHEMA_VERSION, Plan, build_plan, load_plan
from .problem import MemoryModel, Problem
from .solve import solve
from .status import Status
from .units import format_bytes, parse_bytes

__all__ = [
    "METHODS",
    "SCHEMA_VERSION",
    "CachepartError",
    "InfeasibleError",
    "InvalidInputError",
    "LayerGraph",
    "Link",
    "MemoryModel",
    "Partition",
    "Plan",
    "Problem",
    "ProgressEvent",
    "SolveOptions",
    "SolverError",
    "Status",
    "build_plan",
    "canonical_partition",
    "chain_from_dict",
    "chain_to_dict",
    "check_partition",
    "diagnose",
    "format_bytes",
    "load_chain",
    "load_plan",
    "lower_bound",
    "parse_bytes",
    "solve",
]

__version__ = "0.1.0"
