"""Training plans: the exact DP counted from the last stage, and the paper's greedy adapted.

A stage's stashes depend on r, the number of stages from it to the last (solver/core/
training.py), so the DP runs from the end of the chain:

    g_r[s] = the best bottleneck covering layers [s, n) with exactly r stages
           = min over e > s of max(T(s, e), g_{r-1}[e]),  the stage [s, e) fitting at r,
    g_0[n] = 0,

and the optimum is min over r <= K of g_r[0], fewest stages on a tie. The number of stages is
never guessed: a plan of P stages is g_P[0]. O(K n^2) time, O(n^2) memory. The plan returned
has the fewest stages among the optimal ones (bottlenecks within a relative 1e-12 are equal:
the same stage summed from another start can differ by an ulp) and takes the earliest cut at
every stage among those that keep the optimum; the ILP returns the same plan when it reaches
the optimum. The objective is the slowest stage (the steady-state rate); plans that tie on it
may still differ in their step time with fill and drain (plan/schedule.py).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..core.errors import InvalidInputError
from ..core.feasibility import lower_bound
from ..core.partition import Partition
from ..core.problem import Problem
from ..core.status import Status
from ..core.training import Training, train_matrices
from .base import SolveOptions

__all__ = ["TRAIN_DP_MAX_WORK", "solve_train_dp", "solve_train_greedy", "train_dp"]

TIE = 1e-12
"""Bottlenecks this close (relative) are a tie, broken by fewer stages."""
TRAIN_DP_MAX_WORK = 4_000_000_000
"""K x n^2 cells the DP may fill (about a minute of numpy on one core)."""


def _training(problem: Problem) -> Training:
    if problem.training is None:
        raise InvalidInputError("the problem has no training extension", field="training")
    return problem.training


def _fits(problem: Problem, fixed: np.ndarray, stash: np.ndarray, r: int) -> np.ndarray:
    return fixed + _training(problem).in_flight(r) * stash <= problem.capacity_bytes


def train_dp(problem: Problem) -> tuple[float, tuple[int, ...]] | None:
    """The optimal bottleneck of a training problem and its plan (earliest cuts, fewest
    stages on a tie); None when no plan of at most K stages fits."""
    n, k = problem.n, min(problem.stage_limit, problem.n)
    if k * n * n > TRAIN_DP_MAX_WORK:
        raise InvalidInputError(f"dp: {n} layers x {k} stages is beyond the training DP's "
                                f"{TRAIN_DP_MAX_WORK:.0e} cells; plan at --granularity block",
                                field="method")
    times, fixed, stash = train_matrices(problem)
    g = np.full(n + 1, np.inf)
    g[n] = 0.0
    tables = [g]
    best, best_r = math.inf, 0
    for r in range(1, k + 1):
        stage = np.where(_fits(problem, fixed, stash, r), times, np.inf)
        nxt = np.full(n + 1, np.inf)
        nxt[:n] = np.maximum(stage, tables[-1][None, :]).min(axis=1)
        tables.append(nxt)
        # fewer stages win a tie: sums in another order differ by an ulp, not a real gain
        if np.isfinite(nxt[0]) and (math.isinf(best) or nxt[0] < best * (1 - TIE)):
            best, best_r = float(nxt[0]), r
    if best_r == 0:
        return None
    bounds, s = [0], 0
    for r in range(best_r, 0, -1):
        row = np.where(_fits(problem, fixed[s:s + 1], stash[s:s + 1], r)[0], times[s], np.inf)
        ok = np.flatnonzero((row <= best) & (tables[r - 1] <= best))
        s = int(ok[0])  # exists: g_r[s] <= best by construction
        bounds.append(s)
    return best, tuple(bounds)


def solve_train_dp(problem: Problem, options: SolveOptions) -> Partition:
    t0 = time.perf_counter()
    answer = train_dp(problem)
    lb = lower_bound(problem)
    if answer is None:
        return Partition((), Status.INFEASIBLE, None, lb, "dp", diagnosis=_no_plan(problem))
    z, bounds = answer
    options.report("dp", time.perf_counter() - t0, z, z)
    return Partition(bounds, Status.OPTIMAL, z, z, "dp",
                     info={"dp_stages": len(bounds) - 1, "counted_from": "the last stage"})


def _no_plan(problem: Problem) -> str:
    tr = _training(problem)
    if tr.schedule == "gpipe":
        per, ways = "M", "more devices, fewer micro-batches, 1f1b or activation recompute"
    else:
        per, ways = "min(P - j, M)", "more devices, smaller micro-batches, activation " \
            "recompute or leaner optimizer state"
    return (f"no plan of at most {problem.max_stages} stages fits: under {tr.schedule} with "
            f"M = {tr.microbatches} micro-batches, stage j of P keeps {per} stashes beside its "
            f"weights and optimizer state; {ways} make room")


def solve_train_greedy(problem: Problem, options: SolveOptions) -> Partition:
    """The paper's greedy for a training step: for P = 1, 2, ... fill stage j (of P) with layers
    until the next would not fit its position's stashes; the first P that covers the chain is
    the plan (ending early only frees memory: a stage then has fewer stages after it)."""
    times, fixed, stash = train_matrices(problem)
    n, k = problem.n, min(problem.stage_limit, problem.n)
    lb = lower_bound(problem)
    for p in range(1, k + 1):
        bounds, s = [0], 0
        for j in range(p):
            ok = np.flatnonzero(np.isfinite(times[s]) &
                                _fits(problem, fixed[s:s + 1], stash[s:s + 1], p - j)[0])
            if ok.size == 0:
                break
            s = int(ok[-1])
            bounds.append(s)
            if s == n:
                break
        if bounds[-1] == n:
            return Partition(tuple(bounds), Status.FEASIBLE, None, lb, "greedy",
                             info={"greedy_assumed_stages": p})
    return Partition((), Status.INFEASIBLE, None, lb, "greedy",
                     diagnosis=f"greedy fills no plan of at most {problem.max_stages} stages "
                               "under the schedule's stashes")
