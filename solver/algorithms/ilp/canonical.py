"""The canonical ILP: a segment model of the chain, on any backend.

Model. Stages are half-open ranges [s, e). One boolean y[s, e] per candidate segment; flow
conservation at positions 1..n-1, exactly one segment leaving 0 and one entering n, at most K
segments; z >= lower_bound(problem) and, for every start s, z >= sum over e of T[s, e] y[s, e]
(at most one segment leaves s, so the sum is the chosen stage's time); minimise z.

Candidates. With an incumbent (``options.hint``, else the parametric method's plan when
``options.use_hint``) of bottleneck UB, a segment costlier than UB cannot be in a better plan,
and a segment [s, e) with f(s) + 1 + g(e) > K (f, g: fewest candidate segments from 0 to s and
from e to n) lies on no plan of at most K stages. Both prunings keep every plan with
bottleneck <= UB, the incumbent included. Without an incumbent only the K pruning applies.

Why per-start rows and not one row per layer (z >= sum of T over the segments containing the
layer): both LP relaxations stay at the average-load bound on these chains, and the per-layer
rows hold sum-of-lengths nonzeros (47 million at n = 1,000 without an incumbent). Measured on 2
workers (tests/helpers.py random chains with links, no K pruning): n = 200, K = 16, no
incumbent, CP-SAT 36 s per layer against 5-11 s per start, HiGHS 52 s against 7 s; n = 1,000,
K = 64 with the incumbent, CP-SAT unproven after 60 s against 16 s, HiGHS 12 s against 0.7 s.
With the K pruning the incumbent case shrinks to a few hundred segments and takes < 0.5 s.

Status. The partition read from y is checked, its objective recomputed in floating point, and
certified: it is optimal iff no partition has every stage strictly faster, an exact
O(n log n) test on the reach arrays. OPTIMAL needs both the backend's proof and the
certificate; anything else is FEASIBLE with a lower bound. Every answer is then replaced by
``canonical_partition(problem, objective)``, so all exact methods return the same plan for an
optimum (the raw ILP plan stays in ``info["ilp_partition"]``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.errors import InvalidInputError, SolverError
from ...core.feasibility import canonical_partition, diagnose, fewest_stages, lower_bound
from ...core.partition import Partition, check_partition
from ...core.problem import Problem
from ...core.status import Status
from ..base import SolveOptions
from ..parametric import minmax_partition
from .answer import no_solution
from .backends import IlpBackend
from .model import MilpModel, Row
from .segments import chain_of, flow_rows, start_time_rows

__all__ = ["SegmentModel", "build_segment_model", "solve_canonical"]

_UNREACHED = np.iinfo(np.int64).max // 4


@dataclass(frozen=True, eq=False)
class SegmentModel:
    """The candidate segments of one solve, as parallel arrays sorted by (start, end)."""

    problem: Problem
    starts: np.ndarray
    ends: np.ndarray
    times: np.ndarray
    """Stage time of each segment, the same float formula as Problem.stage_time."""
    lower: float
    """lower_bound(problem): a valid floor for z."""
    incumbent: tuple[int, ...] | None
    upper: float
    """The incumbent's bottleneck, or inf without one."""
    capacity_segments: int
    """Segments that fit the capacity, before pruning (for the record)."""

    @property
    def size(self) -> int:
        return len(self.starts)

    def has_path(self) -> bool:
        """Whether some plan of at most K candidate segments covers the layers."""
        return self.size > 0 and bool(self.starts[0] == 0)

    def mask_of(self, bounds: tuple[int, ...]) -> np.ndarray:
        """Boolean mask of the segments of a partition (all of them must be candidates)."""
        n1 = self.problem.n + 1
        keys = self.starts * n1 + self.ends
        wanted = np.array(bounds[:-1], dtype=np.int64) * n1 + np.array(bounds[1:], dtype=np.int64)
        pos = np.searchsorted(keys, wanted)
        if np.any(pos >= len(keys)) or np.any(keys[np.minimum(pos, len(keys) - 1)] != wanted):
            raise SolverError(f"incumbent {bounds} is not among the candidate segments")
        mask = np.zeros(self.size, dtype=bool)
        mask[pos] = True
        return mask

    def bounds_of(self, mask: np.ndarray) -> tuple[int, ...]:
        """The partition a solution's chosen segments form; SolverError if they are no chain."""
        picked = chain_of(self.starts, self.ends, mask, self.problem.n)
        return (*self.starts[picked].tolist(), self.problem.n)


# ----- candidate segments -------------------------------------------------------------------
def _stage_counts(reach: np.ndarray, max_stages: int) -> tuple[np.ndarray, np.ndarray]:
    """f[p]: fewest segments from 0 to p; g[p]: fewest from p to n (_UNREACHED beyond K).

    The candidates from s are exactly the ends (s, reach[s]], so the positions reachable from 0
    in j steps form a prefix; those that reach n in j steps need not (reach is not monotone
    once transfer costs vary), so g goes level by level over prefix counts."""
    n = len(reach)
    f = np.full(n + 1, _UNREACHED, dtype=np.int64)
    f[0] = 0
    prefix_max = np.maximum.accumulate(reach)
    covered, steps = 0, 0
    while covered < n and steps < max_stages:
        nxt = int(prefix_max[covered])
        if nxt <= covered:
            break
        steps += 1
        f[covered + 1:nxt + 1] = steps
        covered = nxt
    g = np.full(n + 1, _UNREACHED, dtype=np.int64)
    g[n] = 0
    hit = np.zeros(n + 1, dtype=bool)
    hit[n] = True
    for level in range(1, max_stages + 1):
        before = np.concatenate(([0], np.cumsum(hit)))  # before[k] = hits at positions < k
        new = (before[reach + 1] - before[np.arange(n) + 1] > 0) & ~hit[:n]
        if not new.any():
            break
        g[:n][new] = level
        hit[:n] |= new
    return f, g


def build_segment_model(problem: Problem, incumbent: tuple[int, ...] | None) -> SegmentModel:
    """Candidate segments under the incumbent (if any), pruned as the module doc says."""
    n, k = problem.n, problem.stage_limit
    upper = problem.objective(incumbent) if incumbent is not None else float("inf")
    cap = problem.capacity_reach
    reach = cap if incumbent is None else problem.snap(np.minimum(cap, problem.time_reach(upper)))
    reach = np.maximum(reach, np.arange(n))
    f, g = _stage_counts(reach, k)
    count = reach - np.arange(n)
    starts = np.repeat(np.arange(n, dtype=np.int64), count)
    first = np.repeat(np.cumsum(count) - count, count)
    ends = starts + 1 + (np.arange(len(starts), dtype=np.int64) - first)
    keep = f[starts] + 1 + g[ends] <= k
    if problem.allowed_cuts is not None:  # stages end only where the layout allows
        keep &= problem.allowed_cuts[ends]
    starts, ends = starts[keep], ends[keep]
    pre, x = problem.prefix_latency, problem.transfer_s
    times = (pre[ends] - pre[starts]) + x[starts]
    return SegmentModel(problem, starts, ends, times, lower_bound(problem), incumbent, upper,
                        int((cap - np.arange(n)).sum()))


def to_milp(model: SegmentModel) -> MilpModel:
    """The segment model's rows: flow, at most K segments, per-start time rows."""
    n = model.problem.n
    rows = flow_rows(model.starts, model.ends, n)
    rows.append(Row(np.arange(model.size), np.ones(model.size), "<=",
                    float(model.problem.stage_limit), name="stages"))
    rows += start_time_rows(model.starts, model.times, n)
    ref = model.upper if np.isfinite(model.upper) else float(model.times.max())
    hint = hint_z = None
    if model.incumbent is not None:
        hint = model.mask_of(model.incumbent)
        hint_z = float(model.times[hint].max())
    return MilpModel("segments", model.size, rows, model.lower, float(model.times.max()),
                     ref, hint, hint_z)


# ----- the method ---------------------------------------------------------------------------
def _incumbent(problem: Problem, options: SolveOptions) -> tuple[int, ...] | None:
    if options.hint is not None:
        try:
            hint = tuple(int(b) for b in options.hint)
            check_partition(problem, hint)
        except (SolverError, TypeError, ValueError, IndexError) as err:
            raise InvalidInputError(str(err), field="hint") from err
        return hint
    if options.use_hint:
        return minmax_partition(problem, options.seed)
    return None


def _optimal_certificate(problem: Problem, objective: float) -> bool:
    """True iff no partition within K has every stage strictly faster than ``objective``."""
    strict = problem.snap(np.minimum(problem.capacity_reach,
                                     problem.time_reach(objective, strict=True)))
    needed = fewest_stages(strict)
    return needed is None or needed > problem.max_stages


def solve_canonical(problem: Problem, options: SolveOptions, backend: IlpBackend) -> Partition:
    """Minimise the slowest stage of the canonical problem with the segment ILP on ``backend``."""
    t0 = time.perf_counter()
    incumbent = _incumbent(problem, options)
    model = build_segment_model(problem, incumbent)
    lb = model.lower
    record: dict[str, Any] = {
        "segments": model.size,
        "capacity_segments": model.capacity_segments,
        "incumbent_objective": None if incumbent is None else model.upper,
    }
    if not model.has_path():
        # Only without an incumbent: no plan of at most K fitting stages exists.
        return Partition((), Status.INFEASIBLE, None, lb, "ilp", backend=backend.name,
                         diagnosis=diagnose(problem) or "the ILP found no feasible partition",
                         info={**record, "backend_status": "infeasible before solving"})
    result = backend.solve(to_milp(model), options, t0)
    record.update(result.info)
    record["backend_status"] = result.status
    if result.values is None:
        if incumbent is not None:
            # Nothing better within the limit: the incumbent stands, unproven.
            objective = problem.objective(incumbent)
            bound = min(max(lb, result.bound_s if result.bound_s is not None else lb), objective)
            fallback = canonical_partition(problem, objective) or incumbent
            return Partition(fallback, Status.FEASIBLE, problem.objective(fallback), bound, "ilp",
                             backend=backend.name, info=record)
        if result.infeasible:
            return Partition((), Status.INFEASIBLE, None, lb, "ilp", backend=backend.name,
                             diagnosis=diagnose(problem) or "the ILP found no feasible partition",
                             info=record)
        raise no_solution(backend, options, result)
    raw = model.bounds_of(result.values)
    check_partition(problem, raw)
    objective = problem.objective(raw)
    certified = _optimal_certificate(problem, objective)
    record.update(ilp_partition=list(raw), certificate=certified)
    plan = canonical_partition(problem, objective)
    if plan is None:
        raise SolverError(f"ILP plan {raw} reaches {objective} but no canonical plan does")
    final = problem.objective(plan)
    if result.proven and certified:
        return Partition(plan, Status.OPTIMAL, final, final, "ilp", backend=backend.name,
                         info=record)
    bound = result.bound_s if result.bound_s is not None else lb
    bound = min(max(bound, lb), final)
    return Partition(plan, Status.FEASIBLE, final, bound, "ilp", backend=backend.name,
                     info=record)
