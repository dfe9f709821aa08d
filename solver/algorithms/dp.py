"""Exact dynamic programs over (devices used, boundary position), vectorised with numpy.

Canonical: f_k[e] = the best bottleneck covering layers [0, e) with at most k stages
         = min(f_{k-1}[e], min over s < e of max(f_{k-1}[s], T(s, e))),
where T(s, e) is +inf for a stage that does not fit. O(n^2 K) time, O(n^2) memory for the
stage-time matrix (so it is limited to n <= DP_MAX_LAYERS; the parametric method has no such
limit). Iteration stops early once f stops changing, since the recurrence is then at a fixed
point.

Tensor parallelism: f[d][e] = the best bottleneck covering [0, e) with at most d devices; each
stage picks its start s and its degree t, using t devices: f[d][e] = min(f[d-1][e],
min over s, t of max(f[d-t][s], T_t(s, e))).
"""

from __future__ import annotations

import time

import numpy as np

from ..core.errors import InvalidInputError
from ..core.extensions import stage_time_matrix
from ..core.feasibility import canonical_partition, lower_bound, tp_infeasible_reason
from ..core.fleet import Fleet
from ..core.ordered import ordered_partition
from ..core.partition import Partition
from ..core.problem import Problem
from ..core.status import Status
from .base import SolveOptions
from .dp_cluster import free_dp, ordered_dp

__all__ = ["DP_MAX_LAYERS", "dp_bottleneck", "solve_dp", "tp_dp"]

DP_MAX_LAYERS = 4000
CLUSTER_INFEASIBLE = "no placement of the layers on the cluster's devices fits"


def _check_size(problem: Problem) -> None:
    if problem.n > DP_MAX_LAYERS:
        raise InvalidInputError(f"dp: {problem.n} layers is more than the {DP_MAX_LAYERS} its "
                                "O(n^2) table allows; use the parametric method", field="method")


def dp_bottleneck(problem: Problem) -> tuple[float, tuple[int, ...] | None]:
    """The optimal bottleneck of the canonical problem and the DP's own partition (None if
    infeasible)."""
    _check_size(problem)
    n = problem.n
    times = stage_time_matrix(problem)
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


def tp_dp(problem: Problem) -> tuple[float, tuple[int, ...], tuple[int, ...]] | None:
    """The exact tensor-parallel optimum: (bottleneck, bounds, degree per stage), or None when
    no plan fits K devices."""
    _check_size(problem)
    tp = problem.tensor_parallel
    if tp is None:
        raise InvalidInputError("the problem has no tensor-parallel extension",
                                field="tensor_parallel")
    if problem.fleet is not None:
        raise InvalidInputError("tp_dp plans one kind of device; a cluster's TP plans come from "
                                "the dp method's cluster programs", field="cluster")
    n, k = problem.n, problem.stage_limit  # devices beyond n x the widest degree cannot be used
    mats = {t: stage_time_matrix(problem, t) for t in tp.degrees if t <= k}
    f = np.full((k + 1, n + 1), np.inf)
    f[:, 0] = 0.0
    arg_s = np.full((k + 1, n + 1), -1, dtype=np.int64)
    arg_t = np.zeros((k + 1, n + 1), dtype=np.int64)
    for d in range(1, k + 1):
        best = f[d - 1].copy()
        for t, mat in mats.items():
            if t > d:
                continue
            cost = np.maximum(f[d - t][:n, None], mat)
            s_best = np.argmin(cost, axis=0)
            value = cost[s_best, np.arange(n + 1)]
            better = value < best
            best = np.where(better, value, best)
            arg_s[d] = np.where(better, s_best, arg_s[d])
            arg_t[d] = np.where(better, t, arg_t[d])
        f[d] = best
        f[d, 0] = 0.0
    if not np.isfinite(f[k, n]):
        return None
    bounds, degrees = [n], []
    d, e = k, n
    while e > 0:
        while arg_s[d, e] < 0:  # f[d][e] came from f[d-1][e]
            d -= 1
        s, t = int(arg_s[d, e]), int(arg_t[d, e])
        bounds.append(s)
        degrees.append(t)
        d, e = d - t, s
    return float(f[k, n]), tuple(reversed(bounds)), tuple(reversed(degrees))


def _solve_tp(problem: Problem, options: SolveOptions, t0: float) -> Partition:
    found = tp_dp(problem)
    if found is None:
        return Partition((), Status.INFEASIBLE, None, None, "dp",
                         diagnosis=tp_infeasible_reason(problem))
    z, bounds, degrees = found
    options.report("dp", time.perf_counter() - t0, z, z)
    return Partition(bounds, Status.OPTIMAL, z, z, "dp", tp_degrees=degrees)


def _solve_cluster(problem: Problem, fleet: Fleet, options: SolveOptions, t0: float) -> Partition:
    _check_size(problem)
    tp = problem.tensor_parallel is not None
    ranks: tuple[int, ...] | None = None
    if fleet.placement == "free":
        found_free = free_dp(problem)
        if found_free is None:
            return Partition((), Status.INFEASIBLE, None, None, "dp", diagnosis=CLUSTER_INFEASIBLE)
        z, bounds, degrees, ranks = found_free
    else:
        found = ordered_dp(problem)
        if found is None:
            return Partition((), Status.INFEASIBLE, None, None, "dp", diagnosis=CLUSTER_INFEASIBLE)
        z, bounds, degrees = found
        if not tp:  # the plan every exact method returns for this optimum
            canonical = ordered_partition(problem, z)
            if canonical is None:
                raise AssertionError(f"dp value {z} not reached by an ordered plan")
            bounds, degrees = canonical, (1,) * (len(canonical) - 1)
    options.report("dp", time.perf_counter() - t0, z, z)
    return Partition(bounds, Status.OPTIMAL, z, z, "dp", tp_degrees=degrees if tp else None,
                     ranks=ranks)


def solve_dp(problem: Problem, options: SolveOptions) -> Partition:
    t0 = time.perf_counter()
    if problem.fleet is not None:
        return _solve_cluster(problem, problem.fleet, options, t0)
    if problem.training is not None:
        from .train import solve_train_dp

        return solve_train_dp(problem, options)
    if problem.tensor_parallel is not None:
        return _solve_tp(problem, options, t0)
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
