"""A MilpModel on OR-Tools CP-SAT, which needs integer coefficients.

Timed rows count units of the model's largest time / 1e9 (model.py says why), so each
coefficient is exact only to half a unit; every objective reported for a plan is recomputed in
floating point from the answer, and the bound passed on is (best integer bound - half a unit
for each rounded term a timed row can sum) / scale, less a sliver for the float product. Rows
enforced by a binary use CP-SAT's enforcement literals.

Determinism: with several workers CP-SAT's default parallel loop depends on thread timing.
``interleave_search`` runs the subsolvers in deterministic batches (sat_parameters.proto: "The
search is deterministic (independently of num_workers!)"), so it is on whenever workers > 1,
with one task per worker in a batch: the default batch (3 tasks per worker) made small models
8 to 20 times slower on 2 workers, one per worker costs about 1.0-1.6x the free-running search.
A run cut by the wall-clock limit can still end at a different point.

Ctrl-C: CP-SAT would catch SIGINT itself and end the search as if its time limit had come
(``catch_sigint_signal``), so an interrupted solve would go on to write a plan. It is told not
to; the search runs under ``interruptible`` (backends.py), which stops it with ``stop_search``
and lets the KeyboardInterrupt through. Progress reports each improving solution and, where
this OR-Tools has the callback, each better bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from ortools.sat.python import cp_model

from ...core.errors import SolverError
from ..base import SolveOptions
from .backends import interruptible
from .model import MilpModel, MilpResult, TimeScale

__all__ = ["solve_cpsat"]


class _Progress(cp_model.CpSolverSolutionCallback):
    """Reports each improving solution, converted back to seconds."""

    def __init__(self, report: Callable[[float | None, float], None]) -> None:
        super().__init__()
        self._report = report

    def on_solution_callback(self) -> None:
        self._report(self.objective_value, self.best_objective_bound)


def _solver(options: SolveOptions) -> cp_model.CpSolver:
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
    params.catch_sigint_signal = False  # Ctrl-C interrupts the solve (interruptible)
    return solver


def _integers(values: np.ndarray, row: str) -> list[int]:
    rounded = np.rint(values)
    if not np.array_equal(rounded, values):
        raise SolverError(f"ilp (cpsat): row {row!r} has non-integer coefficients")
    return rounded.astype(np.int64).tolist()


def solve_cpsat(model: MilpModel, options: SolveOptions, t0: float) -> MilpResult:
    """Build and solve the CP-SAT model."""
    ts = TimeScale(model.largest_time_s)
    scale = ts.scale
    terms = model.rounded_terms
    hi = int(ts.to_int(model.z_upper_s))
    lo = min(max(0, math.floor(model.z_lower_s * scale) - 1), hi)
    cp = cp_model.CpModel()
    x = [cp.new_bool_var(f"x{k}") for k in range(model.num_vars)]
    z = cp.new_int_var(lo, hi, "z")
    for row in model.rows:
        if row.timed:
            coefs = ts.to_int(row.coef).tolist()
            rhs = int(ts.to_int(row.rhs))
            z_coef = round(row.z_coef)
        else:
            coefs = _integers(row.coef, row.name)
            rhs = round(row.rhs)
            z_coef = 0
        variables = [x[k] for k in row.index.tolist()]
        if z_coef:
            variables.append(z)
            coefs.append(z_coef)
        expr = cp_model.LinearExpr.weighted_sum(variables, coefs)
        constraint = cp.add(expr == rhs) if row.sense == "==" else cp.add(expr <= rhs)
        if row.enforce is not None:
            constraint.only_enforce_if(x[row.enforce])
    cp.minimize(z)
    if model.hint is not None:
        for var, on in zip(x, model.hint.tolist(), strict=True):
            cp.add_hint(var, bool(on))
        if model.hint_z_s is not None:
            cp.add_hint(z, min(max(int(ts.to_int(model.hint_z_s)), lo), hi))

    solver = _solver(options)
    callback = None
    if options.progress is not None:
        best: list[float] = []  # the incumbent's objective, in seconds

        def report(value: float | None, bound: float) -> None:
            if value is not None:
                best[:] = [value / scale]
            if not best:  # a bound before any solution: the next solution reports it
                return
            floor = ts.int_bound_s(bound, terms)
            low = max(model.z_lower_s, floor if floor is not None else model.z_lower_s)
            options.report("ilp", time.perf_counter() - t0, best[0], min(best[0], low))
        callback = _Progress(report)
        if hasattr(solver, "best_bound_callback"):  # OR-Tools >= 9.9
            solver.best_bound_callback = lambda bound: report(None, bound)
    status = interruptible(lambda: solver.solve(cp, callback), solver.stop_search)
    name = solver.status_name(status)
    info = {"scale": scale, "scale_ref_s": ts.reference_s,
            "interleave_search": solver.parameters.interleave_search}
    if status == cp_model.MODEL_INVALID:
        raise SolverError(f"ilp (cpsat): the {model.name} model is invalid: {cp.validate()}")
    if status == cp_model.INFEASIBLE:
        return MilpResult(name, None, infeasible=True, info=info)
    floor = ts.int_bound_s(solver.best_objective_bound, terms)
    bound = model.z_lower_s if floor is None else max(model.z_lower_s, floor)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return MilpResult(name, None, bound_s=bound, info=info)
    values = np.asarray(solver.response_proto.solution, dtype=np.int64)
    chosen = values[[v.index for v in x]] > 0
    return MilpResult(name, chosen, proven=status == cp_model.OPTIMAL, bound_s=bound, info=info)
