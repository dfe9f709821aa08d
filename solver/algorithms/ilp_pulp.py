"""The segment ILP through PuLP: HiGHS (highspy) or the CBC binary bundled with PuLP.

Coefficients stay floats; stage times are only divided by a reference time (the incumbent's
bottleneck, else the costliest candidate) so that the MIP's absolute tolerances act as relative
ones whatever unit the latencies come in. The objective reported for a plan is recomputed from
the partition by the caller, so the division costs nothing there; a MIP dual bound is relaxed
by the integrality tolerance before it is passed on, since it only holds to tolerances.

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

from ..errors import SolverError
from .base import SolveOptions
from .ilp import BackendResult, SegmentModel

__all__ = ["cbc_available", "solve_pulp"]

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
    passed to HiGHS with setSolution before it runs (HiGHS takes them as an incumbent)."""

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
        lp.solverModel.run()


def _build(model: SegmentModel, ref: float) -> tuple[pulp.LpProblem, list[Any], Any]:
    problem = model.problem
    n = problem.n
    prob = pulp.LpProblem("cachepart_segments", pulp.LpMinimize)
    y = [prob.add_variable(f"y{k}", 0, 1, cat=pulp.LpBinary) for k in range(model.size)]
    z = prob.add_variable("z", lowBound=model.lower / ref, cat=pulp.LpContinuous)
    outs, ins = model.groups()

    def add(name: str, terms: list[tuple[Any, float]], sense: int, rhs: float) -> None:
        prob.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms), sense=sense,
                                             rhs=rhs, name=name))

    add("leave_0", [(y[k], 1.0) for k in outs[0].tolist()], pulp.LpConstraintEQ, 1.0)
    add("enter_n", [(y[k], 1.0) for k in ins[n].tolist()], pulp.LpConstraintEQ, 1.0)
    for p in range(1, n):
        terms = [(y[k], 1.0) for k in ins[p].tolist()] + [(y[k], -1.0) for k in outs[p].tolist()]
        if terms:
            add(f"flow_{p}", terms, pulp.LpConstraintEQ, 0.0)
    add("stages", [(v, 1.0) for v in y], pulp.LpConstraintLE, float(problem.max_stages))
    coef = (model.times / ref).tolist()
    for p in range(n):
        out = outs[p].tolist()
        if out:  # at most one segment leaves p: the sum is that stage's time
            add(f"time_{p}", [(y[k], coef[k]) for k in out] + [(z, -1.0)],
                pulp.LpConstraintLE, 0.0)
    prob.setObjective(pulp.LpAffineExpression([(z, 1.0)]))
    if model.incumbent is not None:
        chosen = model.mask_of(model.incumbent)
        for var, on in zip(y, chosen.tolist(), strict=True):
            var.setInitialValue(1 if on else 0)
        worst = max(coef[k] for k in np.flatnonzero(chosen).tolist())
        z.setInitialValue(max(worst, z.lowBound))  # lower / ref can pass UB / ref by an ulp
    return prob, y, z


def solve_pulp(model: SegmentModel, options: SolveOptions, t0: float,
               which: str) -> BackendResult:
    """Solve the segment model with ``which`` ('highs' or 'cbc') through PuLP."""
    ref = model.upper if math.isfinite(model.upper) else float(model.times.max())
    if ref <= 0:
        ref = 1.0
    prob, y, _z = _build(model, ref)
    warm = model.incumbent is not None
    threads = max(1, int(options.workers))
    limit = float(options.time_limit_s)
    info: dict[str, Any] = {"time_unit_s": ref}
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
        except pulp.PulpSolverError as err:
            raise SolverError(f"ilp ({which}): {err}") from err
        if which == "highs":
            highs = prob.solverModel
            dual = float(highs.getInfo().mip_dual_bound)
            info["highs_status"] = highs.modelStatusToString(highs.getModelStatus())
    status = f"{pulp.LpStatus[prob.status]}/{pulp.LpSolution[prob.sol_status]}"
    bound = None
    if dual is not None and math.isfinite(dual):
        bound = (dual - _MIP_SLACK) * ref
    if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        infeasible = prob.status == pulp.LpStatusInfeasible
        return BackendResult(status, None, infeasible=infeasible, bound=bound, info=info)
    values = np.array([v.varValue or 0.0 for v in y])
    mask = values > 0.5
    proven = prob.sol_status == pulp.LpSolutionOptimal
    objective = float(model.times[mask].max()) if mask.any() else None
    options.report("ilp", time.perf_counter() - t0, objective,
                   bound if bound is not None else model.lower)
    return BackendResult(status, mask, proven=proven, bound=bound, info=info)
