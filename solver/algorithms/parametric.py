"""Exact min-max partitioning by parametric search over the bottleneck value.

The optimal bottleneck is one of the stage times T(s, e) of stages that fit the capacity. For a
trial value z, feasibility (at most K stages, each fitting and taking <= z) is decided in
O(n log n) by the reach arrays of :mod:`solver.core.feasibility`. Each row s of the candidate set is
sorted in e, so the candidates strictly between the best infeasible value ``lo`` and the best
feasible value ``hi`` can be counted row by row with binary searches. The search probes a
uniformly drawn candidate from that open interval (a seeded generator, so runs repeat) until no
candidate remains; then ``hi`` is the optimum, exactly: every feasible bottleneck is a candidate,
none lies in (lo, hi), and nothing at or below ``lo`` is feasible. Expected probes are
O(log(#candidates)); memory is O(n).
"""

from __future__ import annotations

import time

import numpy as np

from ..core.feasibility import canonical_partition, fewest_stages, lower_bound, reach_under
from ..core.partition import Partition
from ..core.problem import Problem
from ..core.status import Status
from .base import SolveOptions

__all__ = ["minmax_partition", "optimal_bottleneck", "solve_parametric"]


def _feasible(problem: Problem, z: float) -> bool:
    needed = fewest_stages(reach_under(problem, z))
    return needed is not None and needed <= problem.max_stages


def optimal_bottleneck(problem: Problem, seed: int = 0,
                       on_probe: object = None) -> tuple[float | None, int]:
    """The optimal bottleneck value (None if infeasible) and the number of probes used."""
    cap = problem.capacity_reach
    starts = np.arange(problem.n)
    if fewest_stages(cap) is None or not _feasible(problem, np.inf):
        return None, 0
    rng = np.random.default_rng(seed)
    pre, x = problem.prefix_latency, problem.transfer_s
    lo_reach = starts.copy()  # candidates with T <= lo: none yet (lo = -inf)
    hi = np.inf
    probes = 0
    while True:
        hi_reach = np.minimum(cap, problem.time_reach(hi, strict=True)) if np.isfinite(hi) else cap
        counts = np.maximum(hi_reach - lo_reach, 0)
        total = int(counts.sum())
        if total == 0:
            break
        # Draw one candidate uniformly from the open interval (lo, hi).
        pick = int(rng.integers(total))
        cumulative = np.cumsum(counts)
        row = int(np.searchsorted(cumulative, pick, side="right"))
        offset = pick - (int(cumulative[row - 1]) if row else 0)
        end = int(lo_reach[row]) + 1 + offset
        z = float((pre[end] - pre[row]) + x[row])
        probes += 1
        if _feasible(problem, z):
            hi = z
        else:
            lo_reach = np.maximum(np.minimum(cap, problem.time_reach(z)), starts)
        if callable(on_probe):
            on_probe(probes, hi)
    return (float(hi) if np.isfinite(hi) else None), probes


def minmax_partition(problem: Problem, seed: int = 0) -> tuple[int, ...] | None:
    """The canonical optimal partition, or None when no partition fits."""
    z, _ = optimal_bottleneck(problem, seed)
    return None if z is None else canonical_partition(problem, z)


def solve_parametric(problem: Problem, options: SolveOptions) -> Partition:
    t0 = time.perf_counter()
    lb = lower_bound(problem)

    def on_probe(probes: int, hi: float) -> None:
        options.report("parametric", time.perf_counter() - t0,
                       hi if np.isfinite(hi) else None, lb)

    z, probes = optimal_bottleneck(problem, options.seed, on_probe)
    if z is None:
        return Partition((), Status.INFEASIBLE, None, lb, "parametric",
                         diagnosis="no partition fits")
    bounds = canonical_partition(problem, z)
    if bounds is None:
        raise AssertionError(f"bottleneck {z} is feasible but no partition reaches it")
    return Partition(bounds, Status.OPTIMAL, problem.objective(bounds), z, "parametric",
                     info={"probes": probes})
