"""Partitioning methods, registered by name with the extensions each solves. Each sees a
Problem and returns a Partition; ``solve`` is the one entry point that runs them.

Importing this package loads neither a solver backend (ortools, pulp) nor pandas, networkx or
torch: the ILP backends import their solver when they run.
"""

from __future__ import annotations

from .base import DEFAULT_TIME_LIMIT_S, Method, ProgressEvent, SolveOptions
from .dp import DP_MAX_LAYERS, dp_bottleneck, tp_dp
from .greedy import greedy_bounds
from .ilp import DEFAULT_BACKEND, ILP_BACKENDS, IlpBackend, get_backend
from .kv import KV_CAPACITY, LATENCY, OBJECTIVES, KvSearch, max_kv_tokens, solve_kv
from .parametric import minmax_partition, optimal_bottleneck
from .registry import AUTO, METHODS, choose, get_method
from .solve import solve

__all__ = [
    "AUTO",
    "DEFAULT_BACKEND",
    "DEFAULT_TIME_LIMIT_S",
    "DP_MAX_LAYERS",
    "ILP_BACKENDS",
    "KV_CAPACITY",
    "LATENCY",
    "METHODS",
    "OBJECTIVES",
    "IlpBackend",
    "KvSearch",
    "Method",
    "ProgressEvent",
    "SolveOptions",
    "choose",
    "dp_bottleneck",
    "get_backend",
    "get_method",
    "greedy_bounds",
    "max_kv_tokens",
    "minmax_partition",
    "optimal_bottleneck",
    "solve",
    "solve_kv",
    "tp_dp",
]
