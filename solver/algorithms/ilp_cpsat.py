"""The segment ILP on OR-Tools CP-SAT, which needs integer coefficients.

Scaling: every stage time is rounded to an integer number of units of ``ref / 1e9`` seconds,
where ``ref`` is the incumbent's bottleneck (or, without one, the costliest candidate segment),
so T_int = round(T * scale) with scale = 1e9 / ref and no coefficient exceeds 1e9. The solver's
objective is therefore exact only to half a unit; the objective reported for a plan is always
recomputed in floating point from the partition (Problem.objective), the plan is certified
exactly by the caller, and the lower bound passed on is (best integer bound - 0.5) / scale,
less a sliver for the float product.

Determinism: with several workers CP-SAT's default parallel loop depends on thread timing.
``interleave_search`` runs the subsolvers in deterministic batches (sat_parameters.proto: "The
search is deterministic (independently of num_workers!)"), so it is on whenever workers > 1,
with one task per worker in a batch: the default batch (3 tasks per worker) made small models
8 to 20 times slower on 2 workers, one per worker costs about 1.0-1.6x the free-running search.
A run cut by the wall-clock limit can still end at a different point; the plan returned for a
proven optimum is the canonical one either way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from ortools.sat.python import cp_model

from ..errors import SolverError
from .base import SolveOptions
from .ilp import BackendResult, SegmentModel

__all__ = ["SCALE_UNITS", "cpsat_solver", "solve_cpsat"]

SCALE_UNITS = 1e9
"""The reference time is this many integer units."""

_SLIVER = 1e-3
"""Extra units taken off the bound: T * scale is a rounded float product."""


class _Progress(cp_model.CpSolverSolutionCallback):
    """Reports each improving solution, converted back to seconds."""

    def __init__(self, report: Callable[[float, float], None]) -> None:
        super().__init__()
        self._report = report

    def on_solution_callback(self) -> None:
        self._report(self.objective_value, self.best_objective_bound)


def _bound_seconds(bound_int: float, scale: float, lower: float) -> float:
    if not math.isfinite(bound_int):
        return lower
    return max(lower, (bound_int - 0.5 - _SLIVER) / scale)


def cpsat_solver(options: SolveOptions) -> cp_model.CpSolver:
    """A CP-SAT solver with the time limit, workers and seed of ``options``, deterministic
    (interleaved search in batches of one task per worker) when it has several workers."""
    solver = cp_model.CpSolver()
    params = solver.parameters
    params.max_time_in_seconds = float(options.time_limit_s)
    params.num_workers = max(1, int(options.workers))
    params.random_seed = int(options.seed)
    params.interleave_search = params.num_workers > 1
    params.interleave_batch_size = params.num_workers
    params.log_search_progress = False
    return solver


def solve_cpsat(model: SegmentModel, options: SolveOptions, t0: float) -> BackendResult:
    """Build and solve the CP-SAT model; ``t0`` is when the ILP method started (for progress)."""
    problem = model.problem
    times = model.times
    ref = model.upper if math.isfinite(model.upper) else float(times.max())
    scale = SCALE_UNITS / ref if ref > 0 else 1.0
    t_int = np.rint(times * scale).astype(np.int64)
    top = int(t_int.max())
    floor = min(math.floor(model.lower * scale), top)

    cp = cp_model.CpModel()
    y = [cp.new_bool_var(f"y{k}") for k in range(model.size)]
    z = cp.new_int_var(floor, top, "z")
    outs, ins = model.groups()
    n = problem.n
    cp.add_exactly_one([y[k] for k in outs[0].tolist()])
    cp.add_exactly_one([y[k] for k in ins[n].tolist()])
    for p in range(1, n):
        into, out = ins[p].tolist(), outs[p].tolist()
        if into or out:
            cp.add(cp_model.LinearExpr.weighted_sum([y[k] for k in into + out],
                                                    [1] * len(into) + [-1] * len(out)) == 0)
    cp.add(cp_model.LinearExpr.sum(y) <= problem.max_stages)
    coef = t_int.tolist()
    for p in range(n):
        out = outs[p].tolist()
        if out:  # at most one segment leaves p: the sum is that stage's time
            cp.add(cp_model.LinearExpr.weighted_sum([y[k] for k in out] + [z],
                                                    [coef[k] for k in out] + [-1]) <= 0)
    cp.minimize(z)
    if model.incumbent is not None:
        chosen = model.mask_of(model.incumbent)
        for var, on in zip(y, chosen.tolist(), strict=True):
            cp.add_hint(var, on)
        cp.add_hint(z, int(t_int[chosen].max()))

    solver = cpsat_solver(options)
    params = solver.parameters

    callback = None
    if options.progress is not None:
        def report(value: float, bound: float) -> None:
            seconds = value / scale
            options.report("ilp", time.perf_counter() - t0, seconds,
                           min(seconds, _bound_seconds(bound, scale, model.lower)))
        callback = _Progress(report)
    status = solver.solve(cp, callback)
    name = solver.status_name(status)
    info = {"scale": scale, "scale_ref_s": ref, "interleave_search": params.interleave_search}
    if status == cp_model.MODEL_INVALID:
        raise SolverError(f"ilp (cpsat): the model is invalid: {cp.validate()}")
    if status == cp_model.INFEASIBLE:
        return BackendResult(name, None, infeasible=True, info=info)
    bound = _bound_seconds(solver.best_objective_bound, scale, model.lower)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return BackendResult(name, None, bound=bound, info=info)
    values = np.asarray(solver.response_proto.solution, dtype=np.int64)
    mask = values[[v.index for v in y]] > 0
    return BackendResult(name, mask, proven=status == cp_model.OPTIMAL, bound=bound, info=info)
