"""The tiered-residency ILP: cuts and which weights stay on chip, on any backend.

One boolean per segment whose activations and buffers fit on chip (and that is no slower than
the warm start even with every weight resident), and one boolean r_i per layer (its weights stay
on chip; exactly one stage holds each layer, so r_i is that stage's choice). The shared flow rows;
at most K segments; for a chosen segment: resident weights <= capacity - its activations and
buffers, and z + sum of the savings of its resident layers >= its all-streamed time; both rows
are enforced only when the segment is chosen. Warm start: the best all-streamed plan with greedy
residency by saving per byte; lower bound: the best all-resident plan ignoring weights.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from ...core.errors import SolverError
from ...core.extensions import Residency, residency_stage_time, resident_stage_memory
from ...core.partition import Partition
from ...core.problem import Problem
from ..base import SolveOptions
from ..parametric import minmax_partition
from .answer import Decided, infeasible, settle
from .backends import IlpBackend
from .model import MilpModel, Row
from .segments import chain_of, flow_rows

__all__ = ["solve_tiered", "tiered_heuristic"]


def _streamable(problem: Problem, latency: np.ndarray) -> Problem:
    """The canonical problem where weights need no on-chip room (they stream) and layers take
    ``latency``."""
    return problem.replace(weight_bytes=np.zeros(problem.n, dtype=np.int64), latency_s=latency,
                           residency=None)


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
    return residency_stage_time(problem, s, e, chosen), chosen


def tiered_heuristic(problem: Problem) -> tuple[tuple[int, ...], tuple[bool, ...], float] | None:
    """The best all-streamed plan, then greedy residency per stage: a feasible warm start."""
    res = problem.residency
    if res is None:
        raise SolverError("tiered_heuristic: the problem has no residency extension")
    bounds = minmax_partition(_streamable(problem, res.streamed_latency_s))
    if bounds is None:
        return None
    resident: list[bool] = []
    worst = 0.0
    for s, e in itertools.pairwise(bounds):
        stage_time, chosen = _stage_residency(problem, res, s, e)
        resident += chosen
        worst = max(worst, stage_time)
    return bounds, tuple(resident), worst


def _fit(problem: Problem, res: Residency, bounds: tuple[int, ...],
         resident: tuple[bool, ...]) -> tuple[bool, ...]:
    """A backend's residency with layers unpinned, smallest saving per byte first, where a
    stage breaks the capacity: a MIP backend meets byte rows only to its tolerance (seen: one
    byte over 50 MiB on CBC)."""
    out = list(resident)
    save = res.streamed_latency_s - res.resident_latency_s
    w = problem.weight_bytes
    for s, e in itertools.pairwise(bounds):
        while resident_stage_memory(problem, s, e, out[s:e]) > problem.capacity_bytes:
            pinned = [j for j in range(s, e) if out[j]]
            if not pinned:
                break  # activations alone do not fit: the answer check says so
            out[min(pinned, key=lambda j: save[j] / max(1, int(w[j])))] = False
    return tuple(out)


def _worst(problem: Problem, bounds: tuple[int, ...], resident: tuple[bool, ...]) -> float:
    return max(residency_stage_time(problem, s, e, resident[s:e])
               for s, e in itertools.pairwise(bounds))


def solve_tiered(problem: Problem, options: SolveOptions, backend: IlpBackend) -> Partition:
    """Minimise the slowest stage choosing cuts and which weights stay on chip."""
    res = problem.residency
    if res is None:
        raise SolverError("solve_tiered: the problem has no residency extension")
    t0 = time.perf_counter()
    n = problem.n
    heuristic = tiered_heuristic(problem)
    warm = heuristic if options.use_hint else None
    if heuristic is None:
        # activations and buffers alone do not fit in K stages
        return infeasible(problem, backend, {"backend_status": "infeasible before solving"},
                          "no plan fits")
    upper = warm[2] if warm is not None else math.inf
    relaxed_problem = _streamable(problem, res.resident_latency_s)
    relaxed = minmax_partition(relaxed_problem)
    floor = relaxed_problem.objective(relaxed) if relaxed else 0.0
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
    m = len(segs)
    starts = np.array([s for s, _ in segs], dtype=np.int64)
    ends = np.array([e for _, e in segs], dtype=np.int64)
    stream_t = np.array([(pre_str[e] - pre_str[s]) + x[s] for s, e in segs])
    save = res.streamed_latency_s - res.resident_latency_s
    rows = flow_rows(starts, ends, n)
    rows.append(Row(np.arange(m), np.ones(m), "<=", float(problem.stage_limit), name="stages"))
    w = problem.weight_bytes
    for i, (s, e) in enumerate(segs):
        layers = m + np.arange(s, e)  # r_j is binary m + j
        room = cap - int(ab[e] - ab[s])
        if int(pre_w[e] - pre_w[s]) > room:  # the resident weights must fit what is left
            rows.append(Row(layers, w[s:e].astype(np.float64), "<=", float(room), enforce=i,
                            name=f"room_{i}"))
        # z >= all-streamed time - savings of the resident layers, written as <=
        rows.append(Row(layers, -save[s:e], "<=", -float(stream_t[i]), z_coef=-1.0, timed=True,
                        enforce=i, name=f"time_{i}"))
    hint = None
    if warm is not None:
        chosen = set(itertools.pairwise(warm[0]))
        hint = np.concatenate((np.array([seg in chosen for seg in segs], dtype=bool),
                               np.array(warm[1], dtype=bool)))
    # Time unit: the heuristic's bottleneck, near the optimum whether or not it warm-starts, so
    # a MIP's absolute tolerances stay small against z (the costliest segment can be 1000x it).
    ref = heuristic[2]
    model = MilpModel("tiered-residency", m + n, rows, floor, float(stream_t.max()),
                      ref, hint, None if warm is None else warm[2])
    result = backend.solve(model, options, t0)
    info: dict[str, object] = {"segments": m, "backend_status": result.status, **result.info,
                               "warm_start": None if warm is None else warm[2]}

    def decided(bounds: tuple[int, ...], resident: tuple[bool, ...]) -> Decided:
        return Decided(bounds, _worst(problem, bounds, resident), {"resident": resident})

    def decode(values: np.ndarray) -> Decided:
        picked = chain_of(starts, ends, values[:m], n)
        bounds = (*starts[picked].tolist(), n)
        return decided(bounds, _fit(problem, res, bounds,
                                    tuple(bool(v) for v in values[m:].tolist())))

    return settle(result, backend=backend, options=options, decode=decode, floor=floor,
                  warm=None if warm is None else decided(warm[0], warm[1]),
                  on_infeasible=lambda: infeasible(problem, backend, info, "no plan fits"),
                  info=info)
