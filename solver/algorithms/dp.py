"""Exact dynamic program over (stages used, boundary position), vectorised with numpy.

f_k[e] = the best bottleneck covering layers [0, e) with at most k stages
       = min(f_{k-1}[e], min over s < e of max(f_{k-1}[s], T(s, e))),
where T(s, e) is +inf for a stage that does not fit. O(n^2 K) time, O(n^2) memory for the
stage-time matrix (so it is limited to n <= DP_MAX_LAYERS; the parametric method has no such
limit). Iteration stops early once f stops changing, since the recurrence is then at a fixed
point.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import InvalidInputError
from ..feasibility import canonical_partition, lower_bound
from ..partition import Partition
from ..problem import Problem
from ..status import Status
from .base import SolveOptions

__all__ = ["DP_MAX_LAYERS", "dp_bottleneck", "solve_dp"]

DP_MAX_LAYERS = 4000


def _stage_time_matrix(problem: Problem) -> np.ndarray:
    """T[s, e] for 0 <= s < n, 0 <= e <= n; +inf where [s, e) is empty or does not fit."""
    n = problem.n
    pre, x = problem.prefix_latency, problem.transfer_s
    times = (pre[None, :] - pre[:n, None]) + x[:, None]
    ends = np.arange(n + 1)[None, :]
    valid = (ends > np.arange(n)[:, None]) & (ends <= problem.capacity_reach[:, None])
    return np.where(valid, times, np.inf)


def dp_bottleneck(problem: Problem) -> tuple[float, tuple[int, ...] | None]:
    """The optimal bottleneck and the DP's own partition (None if infeasible)."""
    n = problem.n
    if n > DP_MAX_LAYERS:
        raise InvalidInputError(f"dp: {n} layers is more than the {DP_MAX_LAYERS} its O(n^2) table "
                                "allows; use --method parametric")
    times = _stage_time_matrix(problem)
    f = np.full(n + 1, np.inf)
    f[0] = 0.0
    choices: list[np.ndarray] = []
    for _ in range(min(problem.max_stages, n)):
        cost = np.maximum(f[:n, None], times)
        arg = np.argmin(cost, axis=0)
        best = cost[arg, np.arange(n + 1)]
        improved = best < f
        if not improved.any():
            break
        choices.append(np.where(improved, arg, -1))
        f = np.where(improved, best, f)
    if not np.isfinite(f[n]):
        return float("inf"), None
    # Walk back: the last iteration that improved f[e] says where its final stage starts.
    bounds, e = [n], n
    for choice in reversed(choices):
        if e == 0:
            break
        if choice[e] >= 0:
            e = int(choice[e])
            bounds.append(e)
    if bounds[-1] != 0:
        raise AssertionError("dp walk-back did not reach layer 0")
    return float(f[n]), tuple(reversed(bounds))


def solve_dp(problem: Problem, options: SolveOptions) -> Partition:
    t0 = time.perf_counter()
    z, own = dp_bottleneck(problem)
    lb = lower_bound(problem)
    if own is None:
        return Partition((), Status.INFEASIBLE, None, lb, "dp", diagnosis="no partition fits")
    options.report("dp", time.perf_counter() - t0, z, z)
    bounds = canonical_partition(problem, z)
    if bounds is None or problem.objective(own) != z:
        raise AssertionError(f"dp value {z} not reproduced by its partition {own}")
    return Partition(bounds, Status.OPTIMAL, problem.objective(bounds), z, "dp",
                     info={"dp_stages": len(own) - 1})
