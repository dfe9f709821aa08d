"""Partitioning methods, registered by name. Each sees a Problem and returns a Partition."""

from __future__ import annotations

from .base import DEFAULT_TIME_LIMIT_S, Method, ProgressEvent, SolveOptions
from .baselines import solve_params, solve_uniform
from .dp import solve_dp
from .greedy import solve_greedy
from .ilp import ILP_BACKENDS, solve_ilp
from .parametric import solve_parametric

__all__ = [
    "DEFAULT_TIME_LIMIT_S",
    "ILP_BACKENDS",
    "METHODS",
    "Method",
    "ProgressEvent",
    "SolveOptions",
]

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ilp", solve_ilp, True,
               "segment ILP minimising the slowest stage (CP-SAT, or HiGHS/CBC through PuLP)"),
        Method("dp", solve_dp, True, "exact dynamic program, O(n^2 K)"),
        Method("parametric", solve_parametric, True,
               "exact parametric search over the bottleneck, O(n log n) per probe"),
        Method("greedy", solve_greedy, False,
               "the paper's greedy aggregation: fill a device until the next layer won't fit"),
        Method("uniform", solve_uniform, False, "equal layer counts per device"),
        Method("params", solve_params, False, "stages balanced by weight bytes"),
    )
}
