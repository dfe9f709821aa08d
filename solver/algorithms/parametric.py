"""Exact min-max partitioning by parametric search over the bottleneck value.

The optimal bottleneck is one of the stage times T(s, e) of stages that fit the capacity. For a
trial value z, feasibility (at most K stages, each fitting and taking <= z) is decided in
O(n log n) by the reach arrays of :mod:`solver.core.feasibility`. Each row s of the candidate set
is sorted in e, so the candidates strictly between the best infeasible value ``lo`` and the best
feasible value ``hi`` can be counted row by row with binary searches. The search probes a
uniformly drawn candidate from that open interval (a seeded generator, so runs repeat) until no
candidate remains; then ``hi`` is the optimum, exactly: every feasible bottleneck is a candidate,
none lies in (lo, hi), and nothing at or below ``lo`` is feasible. Expected probes are
O(log(#candidates)); memory is O(n).

On a cluster, a stage's times are those of its view (kind and inbound link,
solver/core/fleet.py): the candidates are the union over the distinct views, and feasibility is
the ordered reach of solver/core/ordered.py (O(n) per stage) or, for free placement, the search
over device-count vectors of solver/core/free.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..core.errors import InvalidInputError
from ..core.feasibility import canonical_partition, fewest_stages, lower_bound, reach_under
from ..core.free import free_partition, free_reach, free_views
from ..core.ordered import ordered_partition, ordered_stages, ordered_views
from ..core.partition import Partition
from ..core.problem import Problem
from ..core.status import Status
from .base import SolveOptions

__all__ = ["minmax_partition", "optimal_bottleneck", "solve_parametric"]


def _free(problem: Problem, order: Sequence[int] | None) -> bool:
    return problem.fleet is not None and problem.fleet.placement == "free" and order is None


def _feasible(problem: Problem, z: float, order: Sequence[int] | None = None) -> bool:
    if _free(problem, order):
        return free_reach(problem, z) is not None
    if problem.fleet is not None:
        return ordered_stages(problem, z, order=order) is not None
    needed = fewest_stages(reach_under(problem, z))
    return needed is not None and needed <= problem.max_stages


def _views(problem: Problem, order: Sequence[int] | None) -> list[Problem]:
    """The problems whose stage times are the candidates (one, without a cluster)."""
    if problem.fleet is None:
        return [problem]
    if problem.tensor_parallel is not None:
        raise InvalidInputError("the parametric search plans a cluster without tensor "
                                "parallelism", field="method")
    if _free(problem, order):
        return free_views(problem)
    return list({id(v): v for v in ordered_views(problem, order)}.values())


def optimal_bottleneck(problem: Problem, seed: int = 0,
                       on_probe: Callable[[int, float], None] | None = None,
                       order: Sequence[int] | None = None) -> tuple[float | None, int]:
    """The optimal bottleneck value (None if infeasible) and the number of probes used; on a
    cluster, with the stages on the ranks in ``order`` (default: rank order)."""
    views = _views(problem, order)
    if not _feasible(problem, np.inf, order):
        return None, 0
    rng = np.random.default_rng(seed)
    starts = np.arange(problem.n)
    caps = [v.capacity_reach for v in views]
    lo_reach = [starts.copy() for _ in views]  # candidates with T <= lo: none yet (lo = -inf)
    hi = np.inf
    probes = 0
    while True:
        counts = []
        for v, cap, lo_r in zip(views, caps, lo_reach, strict=True):
            hi_r = np.minimum(cap, v.time_reach(hi, strict=True)) if np.isfinite(hi) else cap
            counts.append(np.maximum(hi_r - lo_r, 0))
        totals = [int(c.sum()) for c in counts]
        total = sum(totals)
        if total == 0:
            break
        # Draw one candidate uniformly from the open interval (lo, hi).
        pick = int(rng.integers(total))
        which = 0
        while pick >= totals[which]:
            pick -= totals[which]
            which += 1
        cumulative = np.cumsum(counts[which])
        row = int(np.searchsorted(cumulative, pick, side="right"))
        offset = pick - (int(cumulative[row - 1]) if row else 0)
        end = int(lo_reach[which][row]) + 1 + offset
        view = views[which]
        z = float((view.prefix_latency[end] - view.prefix_latency[row]) + view.transfer_s[row])
        probes += 1
        if _feasible(problem, z, order):
            hi = z
        else:
            lo_reach = [np.maximum(np.minimum(cap, v.time_reach(z)), starts)
                        for v, cap in zip(views, caps, strict=True)]
        if on_probe is not None:
            on_probe(probes, hi)
    return (float(hi) if np.isfinite(hi) else None), probes


def minmax_partition(problem: Problem, seed: int = 0) -> tuple[int, ...] | None:
    """The canonical optimal partition, or None when no partition fits."""
    z, _ = optimal_bottleneck(problem, seed)
    if z is None:
        return None
    return _partition(problem, z)[0]


def _partition(problem: Problem, z: float) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """The plan every exact method returns for bottleneck z: (bounds, first rank per stage on
    a free placement)."""
    if _free(problem, None):
        found = free_partition(problem, z)
        return (None, None) if found is None else found
    if problem.fleet is not None:
        return ordered_partition(problem, z), None
    return canonical_partition(problem, z), None


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
    bounds, ranks = _partition(problem, z)
    if bounds is None:
        raise AssertionError(f"bottleneck {z} is feasible but no partition reaches it")
    objective = z if problem.fleet is not None else problem.objective(bounds)
    return Partition(bounds, Status.OPTIMAL, objective, z, "parametric", ranks=ranks,
                     info={"probes": probes})
