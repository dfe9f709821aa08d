"""A MilpModel through PuLP: HiGHS (highspy) or the CBC binary bundled with PuLP.

Coefficients stay floats; timed rows are only divided by the model's reference time (the
incumbent's bottleneck, else the costliest candidate) so that the MIP's absolute tolerances act
as relative ones whatever unit the latencies come in. The objective reported for a plan is
recomputed from the answer by the caller, so the division costs nothing there; a MIP dual bound
is relaxed by the integrality tolerance before it is passed on, since it only holds to
tolerances. Rows of whole numbers (bytes) are divided by their largest coefficient. A row
enforced by a binary becomes a big-M row, M being the largest amount by which the row's left
side can exceed its right side.

Neither backend may print or leave files behind: output is off, CBC's model and solution files
go to a private temporary directory, and HiGHS's one-off start-up banner (written by its C++
constructor straight to file descriptor 1, whatever ``output_flag`` says) is swallowed once.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import time
import warnings
from typing import Any

import numpy as np
import pulp

from ...core.errors import SolverError
from ..base import SolveOptions
from .model import MilpModel, MilpResult

__all__ = ["cbc_available", "solve_mip"]

_GAP_REL = 1e-9
"""Stop only at a proven optimum, not at the solvers' default 1e-4 / 1e-6 gaps."""

_MIP_SLACK = 1e-6
"""Integrality tolerance (normalised units) taken off a MIP dual bound."""

_CBC_DEPRECATION = "PULP_CBC_CMD is deprecated"


def _cbc(**kwargs: Any) -> pulp.PULP_CBC_CMD:
    # PuLP 3 warns that the bundled binary goes away in PuLP 4; it is the one we ship with.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CBC_DEPRECATION, category=DeprecationWarning)
        return pulp.PULP_CBC_CMD(**kwargs)


def cbc_available() -> bool:
    """True when PuLP's bundled CBC binary can run here."""
    return bool(_cbc(msg=False).available())


_banner_lock = threading.Lock()
_banner_done = False


def _swallow_highs_banner() -> None:
    """Construct one Highs with fd 1 pointed at /dev/null: HiGHS prints its banner once per
    process from C++, which neither ``output_flag`` nor sys.stdout redirection can stop."""
    global _banner_done
    with _banner_lock:
        if _banner_done:
            return
        import highspy

        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as sink:
                os.dup2(sink.fileno(), 1)
                highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _banner_done = True


class _WarmHiGHS(pulp.HiGHS):
    """PuLP's HiGHS API, which has no warm start, given one: the variables' initial values are
    passed to HiGHS with setSolution before it runs (HiGHS takes them as an incumbent).

    HiGHS 1.16 can report a better objective than the solution it hands back, which is still the
    start (seen on a free-placement model: objective 0.9776, z = 1.0 in the solution). When the
    two disagree, the model is solved again without the start."""

    warm_start = False

    def callSolver(self, lp: pulp.LpProblem) -> None:
        if self.warm_start:
            import highspy

            values = [0.0] * len(lp.variables())
            for var in lp.variables():
                values[var.index] = float(var.varValue or 0.0)
            solution = highspy.HighsSolution()
            solution.col_value = values
            solution.value_valid = True
            lp.solverModel.setSolution(solution)
        highs = lp.solverModel
        highs.run()
        if self.warm_start and highs.getInfo().primal_solution_status == 2:  # a feasible point
            cost = np.asarray(highs.getLp().col_cost_)
            held = float(cost @ np.asarray(highs.getSolution().col_value))
            claimed = float(highs.getInfo().objective_function_value)
            if abs(held - claimed) > 1e-9 * (1.0 + abs(claimed)):
                highs.clearSolver()
                highs.run()


def _big_m(coef: np.ndarray, rhs: float, z_coef: float, z_low: float, z_high: float) -> float:
    """How far the row's left side can exceed its right side over the binaries and z's range."""
    most = float(coef[coef > 0].sum())
    if z_coef > 0:
        most += z_coef * z_high
    elif z_coef < 0:
        most += z_coef * z_low
    return max(0.0, most - rhs)


def _build(model: MilpModel) -> tuple[pulp.LpProblem, list[Any], Any]:
    unit = model.time_unit_s if model.time_unit_s > 0 else 1.0
    prob = pulp.LpProblem(f"cachepart_{model.name}", pulp.LpMinimize)
    x = [prob.add_variable(f"x{k}", 0, 1, cat=pulp.LpBinary) for k in range(model.num_vars)]
    z_low = model.z_lower_s / unit
    z = prob.add_variable("z", lowBound=z_low, cat=pulp.LpContinuous)
    z_high = max(model.z_upper_s / unit, z_low)
    for row in model.rows:
        if row.timed:
            coef, rhs = row.coef / unit, row.rhs / unit
        else:  # byte rows: HiGHS refuses coefficients >= 1e15, so bring them near 1
            size = max(1.0, float(np.abs(row.coef).max(initial=0.0)))
            coef, rhs = row.coef.astype(np.float64) / size, float(row.rhs) / size
        terms = [(x[k], c) for k, c in zip(row.index.tolist(), coef.tolist(), strict=True)]
        if row.z_coef:
            terms.append((z, float(row.z_coef)))
        if row.enforce is not None:
            if row.sense != "<=":
                raise SolverError(f"ilp: enforced row {row.name!r} must be an inequality")
            big = _big_m(coef, rhs, row.z_coef, z_low, z_high)
            terms.append((x[row.enforce], big))
            rhs += big  # lhs <= rhs + M (1 - x_enforce)
        sense = pulp.LpConstraintEQ if row.sense == "==" else pulp.LpConstraintLE
        prob.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms), sense=sense,
                                             rhs=rhs, name=row.name or None))
    prob.setObjective(pulp.LpAffineExpression([(z, 1.0)]))
    if model.hint is not None:
        for var, on in zip(x, model.hint.tolist(), strict=True):
            var.setInitialValue(1 if on else 0)
        start = model.hint_z_s / unit if model.hint_z_s is not None else z_high
        z.setInitialValue(max(start, z_low))  # lower / ref can pass UB / ref by an ulp
    return prob, x, z


def solve_mip(model: MilpModel, options: SolveOptions, t0: float, which: str) -> MilpResult:
    """Solve ``model`` with ``which`` ('highs' or 'cbc') through PuLP."""
    unit = model.time_unit_s if model.time_unit_s > 0 else 1.0
    prob, x, z = _build(model)
    warm = model.hint is not None
    threads = max(1, int(options.workers))
    limit = float(options.time_limit_s)
    info: dict[str, Any] = {"time_unit_s": unit}
    dual: float | None = None
    with tempfile.TemporaryDirectory(prefix="cachepart-ilp-") as tmp:
        if which == "highs":
            _swallow_highs_banner()
            solver: Any = _WarmHiGHS(msg=False, timeLimit=limit, gapRel=_GAP_REL,
                                     gapAbs=_GAP_REL, threads=threads)
            solver.warm_start = warm
        elif which == "cbc":
            solver = _cbc(msg=False, timeLimit=limit, gapRel=_GAP_REL, threads=threads,
                          warmStart=warm)
            solver.tmpDir = tmp  # never the cwd, whatever TMPDIR says
        else:
            raise SolverError(f"ilp: no PuLP backend named {which!r}")
        try:
            prob.solve(solver)
        except Exception as err:  # PuLP reads a rejected model's missing solution and fails
            raise SolverError(f"ilp ({which}): the solver failed ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})"
                              ) from err
        if which == "highs":
            highs = prob.solverModel
            dual = float(highs.getInfo().mip_dual_bound)
            info["highs_status"] = highs.modelStatusToString(highs.getModelStatus())
    status = f"{pulp.LpStatus[prob.status]}/{pulp.LpSolution[prob.sol_status]}"
    bound = None
    if dual is not None and math.isfinite(dual):
        bound = (dual - _MIP_SLACK) * unit
    if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        infeasible = prob.status == pulp.LpStatusInfeasible
        return MilpResult(status, None, infeasible=infeasible, bound_s=bound, info=info)
    values = np.array([v.varValue or 0.0 for v in x]) > 0.5
    proven = prob.sol_status == pulp.LpSolutionOptimal
    objective = None if z.varValue is None else float(z.varValue) * unit
    if bound is None and proven and z.varValue is not None:
        # CBC through PuLP gives no dual bound; a proof at gapRel means z within it of one
        bound = (float(z.varValue) * (1 - _GAP_REL) - _MIP_SLACK) * unit
    options.report("ilp", time.perf_counter() - t0, objective,
                   bound if bound is not None else model.z_lower_s)
    return MilpResult(status, values, proven=proven, bound_s=bound, info=info)
