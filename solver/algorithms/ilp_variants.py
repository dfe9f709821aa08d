"""CP-SAT models for the richer problems (solver/variants.py): tensor parallelism per stage and
tiered weight residency. Both are segment models like the canonical ILP: one boolean per
candidate stage, flow from layer 0 to n, a shared bottleneck z; times are scaled to integers
in units of (reference time) / 1e9 and every reported objective is recomputed in floating point.

Tensor parallelism: one boolean per (segment, degree t) that fits; sum of t over the chosen
stages <= K; for each start s, z >= sum over (e, t) of T_t[s, e] y (at most one stage leaves s).
The exact DP (variants.tp_dp) gives the warm start and the pruning bound; the ILP proves it.

Tiered residency: one boolean per segment whose activations and buffers fit on chip, and one
boolean r_i per layer (its weights stay on chip; exactly one stage holds each layer, so r_i
is that stage's choice). For a chosen segment: resident weights <= capacity - its activations
and buffers, and z + sum of the savings of its resident layers >= its all-streamed time; both
rows are relaxed when the segment is not chosen. Warm start: the best all-streamed plan with
greedy residency by saving per byte; lower bound: the best all-resident plan ignoring weights.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from ..errors import InvalidInputError
from ..problem import MemoryModel, Problem
from ..status import Status
from ..variants import Residency, TensorParallel, residency_stage_time, tp_dp, tp_time_matrix
from .base import SolveOptions
from .ilp_cpsat import cpsat_solver
from .parametric import minmax_partition

__all__ = ["TieredPlan", "TpPlan", "solve_tiered_ilp", "solve_tp_ilp", "tiered_heuristic"]

_UNITS = 1e9


@dataclass(frozen=True)
class TpPlan:
    bounds: tuple[int, ...]
    degrees: tuple[int, ...]
    status: Status
    objective: float
    bound: float
    wall_s: float
    info: dict[str, object]


@dataclass(frozen=True)
class TieredPlan:
    bounds: tuple[int, ...]
    resident: tuple[bool, ...]
    """Per layer: its weights stay in the on-chip tier."""
    status: Status
    objective: float
    bound: float
    wall_s: float
    info: dict[str, object]


def _flow(cp: cp_model.CpModel, y: list[cp_model.IntVar], starts: list[int], ends: list[int],
          n: int) -> None:
    """Exactly one stage leaves 0 and one enters n; what enters p leaves p."""
    out: list[list[int]] = [[] for _ in range(n + 1)]
    into: list[list[int]] = [[] for _ in range(n + 1)]
    for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
        out[s].append(k)
        into[e].append(k)
    cp.add_exactly_one([y[k] for k in out[0]])
    cp.add_exactly_one([y[k] for k in into[n]])
    for p in range(1, n):
        if out[p] or into[p]:
            cp.add(sum(y[k] for k in into[p]) == sum(y[k] for k in out[p]))


def _bound(solver: cp_model.CpSolver, scale: float, floor: float, objective: float) -> float:
    raw = solver.best_objective_bound
    value = (raw - 0.5 - 1e-3) / scale if math.isfinite(raw) else floor
    return min(max(value, floor), objective)


# ----- tensor parallelism ----------------------------------------------------------------------
def solve_tp_ilp(problem: Problem, tp: TensorParallel, options: SolveOptions) -> TpPlan | None:
    """Minimise the slowest stage choosing cuts and a TP degree per stage; None if infeasible."""
    t0 = time.perf_counter()
    n, k = problem.n, problem.max_stages
    warm = tp_dp(problem, tp) if options.use_hint else None
    upper = warm[0] if warm is not None else math.inf
    starts, ends, degs, times = [], [], [], []
    for t in tp.degrees:
        if t > k:
            continue
        mat = tp_time_matrix(problem, tp, t)
        s_idx, e_idx = np.nonzero(np.isfinite(mat) & (mat <= upper))
        starts += s_idx.tolist()
        ends += e_idx.tolist()
        degs += [t] * len(s_idx)
        times += mat[s_idx, e_idx].tolist()
    if not starts:
        return None
    t_arr = np.asarray(times)
    ref = upper if math.isfinite(upper) else float(t_arr.max())
    scale = _UNITS / ref if ref > 0 else 1.0
    coef = np.rint(t_arr * scale).astype(np.int64).tolist()
    floor = float(problem.prefix_latency[-1]) / k  # sum of t_j T_j >= total compute
    cp = cp_model.CpModel()
    y = [cp.new_bool_var(f"y{i}") for i in range(len(starts))]
    z = cp.new_int_var(min(max(0, int(floor * scale) - 1), max(coef)), max(coef), "z")
    _flow(cp, y, starts, ends, n)
    cp.add(sum(t * v for t, v in zip(degs, y, strict=True)) <= k)
    by_start: list[list[int]] = [[] for _ in range(n)]
    for i, s in enumerate(starts):
        by_start[s].append(i)
    for group in by_start:
        if group:
            cp.add(sum(coef[i] * y[i] for i in group) <= z)
    cp.minimize(z)
    if warm is not None:
        chosen = {(s, e, t) for (s, e), t in zip(itertools.pairwise(warm[1]), warm[2], strict=True)}
        for i, var in enumerate(y):
            cp.add_hint(var, (starts[i], ends[i], degs[i]) in chosen)
    solver = cpsat_solver(options)
    status = solver.solve(cp)
    if status == cp_model.MODEL_INVALID:
        raise AssertionError(f"tp ilp: invalid model: {cp.validate()}")
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if status == cp_model.INFEASIBLE and warm is None:
            return None
        if warm is None:
            raise InvalidInputError(f"tp ilp: no solution within {options.time_limit_s:g} s")
        return TpPlan(warm[1], warm[2], Status.FEASIBLE, warm[0], floor,
                      time.perf_counter() - t0, {"backend_status": solver.status_name(status)})
    picked = sorted((i for i, v in enumerate(y) if solver.value(v)), key=lambda i: starts[i])
    bounds = (*[starts[i] for i in picked], n)
    degrees = tuple(degs[i] for i in picked)
    objective = max(times[i] for i in picked)
    proven = status == cp_model.OPTIMAL
    return TpPlan(bounds, degrees, Status.OPTIMAL if proven else Status.FEASIBLE, objective,
                  objective if proven else _bound(solver, scale, floor, objective),
                  time.perf_counter() - t0,
                  {"segments": len(y), "backend_status": solver.status_name(status),
                   "scale": scale, "warm_start": None if warm is None else warm[0]})


# ----- tiered residency ------------------------------------------------------------------------
def _streamable(problem: Problem, latency: np.ndarray) -> Problem:
    """The problem where weights need no on-chip room (they stream) and layers take ``latency``."""
    return problem.replace(weight_bytes=np.zeros(problem.n, dtype=np.int64), latency_s=latency)


def _stage_residency(problem: Problem, res: Residency, s: int, e: int) -> tuple[float, list[bool]]:
    """Greedy residency of one stage: the largest saving per byte first, while it fits."""
    room = problem.capacity_bytes - int(problem.activation_bytes[s:e].sum()
                                        + problem.buffer_bytes[s:e].sum())
    save = res.streamed_latency_s[s:e] - res.resident_latency_s[s:e]
    w = problem.weight_bytes[s:e]
    order = sorted(range(e - s), key=lambda i: -save[i] / max(1, int(w[i])))
    chosen = [False] * (e - s)
    for i in order:
        if save[i] > 0 and w[i] <= room:
            chosen[i] = True
            room -= int(w[i])
    lat = np.where(chosen, res.resident_latency_s[s:e], res.streamed_latency_s[s:e])
    return float(lat.sum() + problem.transfer_s[s]), chosen


def tiered_heuristic(problem: Problem, res: Residency) -> tuple[tuple[int, ...], tuple[bool, ...],
                                                                 float] | None:
    """The best all-streamed plan, then greedy residency per stage: a feasible warm start."""
    bounds = minmax_partition(_streamable(problem, res.streamed_latency_s))
    if bounds is None:
        return None
    resident: list[bool] = []
    worst = 0.0
    for s, e in itertools.pairwise(bounds):
        time_, chosen = _stage_residency(problem, res, s, e)
        resident += chosen
        worst = max(worst, time_)
    return bounds, tuple(resident), worst


def solve_tiered_ilp(problem: Problem, res: Residency, options: SolveOptions) -> TieredPlan | None:
    """Minimise the slowest stage choosing cuts and which weights stay on chip."""
    if problem.memory_model is not MemoryModel.ADDITIVE:
        raise InvalidInputError("--residency partial: supported with the additive memory model")
    t0 = time.perf_counter()
    n = problem.n
    warm = tiered_heuristic(problem, res) if options.use_hint else None
    if warm is None and minmax_partition(_streamable(problem, res.streamed_latency_s)) is None:
        return None  # activations and buffers alone do not fit in K stages
    upper = warm[2] if warm is not None else math.inf
    relaxed = minmax_partition(_streamable(problem, res.resident_latency_s))
    floor = _streamable(problem, res.resident_latency_s).objective(relaxed) if relaxed else 0.0
    ab = np.concatenate(([0], np.cumsum(problem.activation_bytes + problem.buffer_bytes)))
    pre_w = np.concatenate(([0], np.cumsum(problem.weight_bytes)))
    pre_res = np.concatenate(([0.0], np.cumsum(res.resident_latency_s)))
    pre_str = np.concatenate(([0.0], np.cumsum(res.streamed_latency_s)))
    x = problem.transfer_s
    cap = problem.capacity_bytes
    segs: list[tuple[int, int]] = []
    for s in range(n):
        for e in range(s + 1, n + 1):
            if ab[e] - ab[s] > cap:
                break
            if (pre_res[e] - pre_res[s]) + x[s] > upper * (1 + 1e-9):
                break  # even all resident it is slower than the warm start (1e-9: sum order)
            segs.append((s, e))
    stream_t = np.array([(pre_str[e] - pre_str[s]) + x[s] for s, e in segs])
    ref = upper if math.isfinite(upper) else float(stream_t.max())
    scale = _UNITS / ref if ref > 0 else 1.0
    save = np.rint((res.streamed_latency_s - res.resident_latency_s) * scale).astype(np.int64)
    cp = cp_model.CpModel()
    y = [cp.new_bool_var(f"y{i}") for i in range(len(segs))]
    r = [cp.new_bool_var(f"r{i}") for i in range(n)]
    top = int(np.rint(stream_t.max() * scale)) + 1
    z = cp.new_int_var(min(max(0, int(floor * scale) - 1), top), top, "z")
    _flow(cp, y, [s for s, _ in segs], [e for _, e in segs], n)
    cp.add(sum(y) <= problem.max_stages)
    w = problem.weight_bytes.tolist()
    for i, (s, e) in enumerate(segs):
        room = cap - int(ab[e] - ab[s])
        weights = int(pre_w[e] - pre_w[s])
        if weights > room:  # the resident weights must fit what activations leave
            cp.add(sum(w[j] * r[j] for j in range(s, e)) <= room).only_enforce_if(y[i])
        full = int(np.rint(stream_t[i] * scale))
        cp.add(z + sum(int(save[j]) * r[j] for j in range(s, e)) >= full).only_enforce_if(y[i])
    cp.minimize(z)
    if warm is not None:
        chosen = set(itertools.pairwise(warm[0]))
        for i, var in enumerate(y):
            cp.add_hint(var, segs[i] in chosen)
        for j, var in enumerate(r):
            cp.add_hint(var, warm[1][j])
    solver = cpsat_solver(options)
    status = solver.solve(cp)
    if status == cp_model.MODEL_INVALID:
        raise AssertionError(f"tiered ilp: invalid model: {cp.validate()}")
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if warm is None:
            if status == cp_model.INFEASIBLE:
                return None
            raise InvalidInputError(f"tiered ilp: no solution within {options.time_limit_s:g} s")
        times = _evaluate(problem, res, warm[0], warm[1])
        return TieredPlan(warm[0], warm[1], Status.FEASIBLE, max(times), floor,
                          time.perf_counter() - t0, {"backend_status": solver.status_name(status),
                                                     "stage_times_s": times})
    picked = [segs[i] for i, v in enumerate(y) if solver.value(v)]
    bounds = (*[s for s, _ in sorted(picked)], n)
    resident = tuple(bool(solver.value(v)) for v in r)
    times = _evaluate(problem, res, bounds, resident)
    worst = max(times)
    proven = status == cp_model.OPTIMAL
    return TieredPlan(bounds, resident, Status.OPTIMAL if proven else Status.FEASIBLE,
                      worst, worst if proven else _bound(solver, scale, floor, worst),
                      time.perf_counter() - t0,
                      {"segments": len(segs), "backend_status": solver.status_name(status),
                       "scale": scale, "warm_start": None if warm is None else warm[2],
                       "stage_times_s": times})


def _evaluate(problem: Problem, res: Residency, bounds: tuple[int, ...],
              resident: tuple[bool, ...]) -> list[float]:
    """Stage times in floating point, each stage checked against the capacity."""
    times = []
    for s, e in itertools.pairwise(bounds):
        stage_time, used = residency_stage_time(problem, res, s, e, resident[s:e])
        if used > problem.capacity_bytes:
            raise AssertionError(f"tiered plan stage [{s}, {e}) uses {used} > "
                                 f"{problem.capacity_bytes} bytes")
        times.append(stage_time)
    return times
