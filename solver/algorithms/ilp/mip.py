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

Ctrl-C stops either backend and lets the KeyboardInterrupt through, leaving nothing running.
HiGHS searches in native code under ``interruptible`` (backends.py) and is cancelled through its
user-interrupt callbacks. CBC is a child process: PuLP's launcher would leave it running when
interrupted, so ``_Cbc`` starts it itself, kills it and waits for it. Progress: CBC's log
(improving solutions, the best possible bound) and HiGHS's callbacks are reported as they come.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pulp

from ...core.errors import SolverError
from ..base import SolveOptions
from .backends import interruptible
from .model import MilpModel, MilpResult

__all__ = ["cbc_available", "solve_mip"]

_GAP_REL = 1e-9
"""Stop only at a proven optimum, not at the solvers' default 1e-4 / 1e-6 gaps."""

_MIP_SLACK = 1e-6
"""Integrality tolerance (normalised units) taken off a MIP dual bound."""

_CBC_DEPRECATION = "PULP_CBC_CMD is deprecated"


_CBC_SOLUTION = re.compile(r"(?:Integer solution of|solution with cost) (\S+)")
_CBC_TREE = re.compile(r"(\S+) best solution, best possible (\S+)")
_CBC_NONE = 1e49
"""CBC writes 1e+50 for 'no solution yet'."""


class _Cbc(pulp.PULP_CBC_CMD):
    """PuLP's CBC command (its arguments for the options solve_mip sets, its solution reader),
    with the process started here: killed and waited for when the solve is interrupted, and its
    log handed line by line to ``on_log`` (else discarded; line-buffered through coreutils'
    stdbuf where there is one, else it comes in blocks)."""

    on_log: Callable[[str], None] | None = None

    def solve_CBC(self, lp: pulp.LpProblem, use_mps: bool = True) -> int:
        if lp.sense != pulp.LpMinimize:
            raise SolverError("ilp (cbc): only minimisation is supported")
        mps, sol, mst = self.create_tmp_files(lp.name, "mps", "sol", "mst")
        variables, var_names, con_names, _ = lp.writeMPS(mps, rename=1)
        args = [self.path, mps]
        if self.optionsDict.get("warmStart", False):
            self.writesol(mst, lp, variables, var_names, con_names)
            args += ["-mips", mst]
        if self.timeLimit is not None:
            args += ["-sec", str(self.timeLimit)]
        for option in (*self.options, *self.getOptions()):
            args += f"-{option}".split()
        args += ["-solve" if self.mip else "-initialSolve", "-printingOptions", "all",
                 "-solution", sol]
        log = subprocess.PIPE if self.on_log is not None else subprocess.DEVNULL
        if self.on_log is not None and (stdbuf := shutil.which("stdbuf")) is not None:
            args = [stdbuf, "-oL", *args]  # CBC's log line by line, not in 4 kB blocks
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        reader = None
        if self.on_log is not None and proc.stdout is not None:
            reader = threading.Thread(target=_read_lines, args=(proc.stdout, self.on_log),
                                      name="cachepart-cbc-log", daemon=True)
            reader.start()
        try:
            code = proc.wait()
        except BaseException:  # Ctrl-C: the search must not outlive the solve
            proc.kill()
            proc.wait()
            raise
        finally:
            if reader is not None:
                reader.join()
            if proc.stdout is not None:
                proc.stdout.close()
        if code != 0 or not os.path.exists(sol):
            raise pulp.PulpSolverError(f"CBC exited with status {code} and no solution")
        status, values, reduced, shadow, slacks, sol_status = self.readsol_MPS(
            sol, lp, variables, var_names, con_names)
        lp.assignVarsVals(values)
        lp.assignVarsDj(reduced)
        lp.assignConsPi(shadow)
        lp.assignConsSlack(slacks, activity=True)
        lp.assignStatus(status, sol_status)
        self.delete_tmp_files(mps, sol, mst)
        return int(status)


def _read_lines(stream: Any, sink: Callable[[str], None]) -> None:
    for line in stream:
        sink(line)


def _cbc(**kwargs: Any) -> _Cbc:
    # PuLP 3 warns that the bundled binary goes away in PuLP 4; it is the one we ship with.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CBC_DEPRECATION, category=DeprecationWarning)
        return _Cbc(**kwargs)


class _Reporter:
    """Progress in the MIP's normalised units -> ProgressEvents in seconds: the best solution
    and the best bound seen so far (relaxed by the integrality tolerance), once a solution
    exists."""

    def __init__(self, model: MilpModel, options: SolveOptions, t0: float, unit: float) -> None:
        self.model, self.options, self.t0, self.unit = model, options, t0, unit
        self.best: float | None = None
        self.bound = model.z_lower_s
        self._lock = threading.Lock()

    def __call__(self, objective: float | None, bound: float | None) -> None:
        with self._lock:
            changed = False
            if objective is not None and math.isfinite(objective) and objective < _CBC_NONE:
                seconds = objective * self.unit
                if self.best is None or seconds < self.best:
                    self.best, changed = seconds, True
            if bound is not None and math.isfinite(bound):
                seconds = (bound - _MIP_SLACK) * self.unit
                if seconds > self.bound:
                    self.bound, changed = seconds, True
            if changed and self.best is not None:
                self.options.report("ilp", time.perf_counter() - self.t0, self.best,
                                    min(self.best, self.bound))

    def cbc_line(self, line: str) -> None:
        tree = _CBC_TREE.search(line)
        found = None if tree else _CBC_SOLUTION.search(line)
        try:
            if tree:
                self(float(tree[1]), float(tree[2]))
            elif found:
                self(float(found[1]), None)
        except ValueError:  # not a number after all: not a progress line
            pass


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
    reporter: _Reporter | None = None

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
        if self.reporter is not None and hasattr(highs, "cbMipImprovingSolution"):
            report = self.reporter

            def improved(event: Any) -> None:
                report(event.data_out.objective_function_value, event.data_out.mip_dual_bound)
            highs.cbMipImprovingSolution += improved
        _run_highs(highs)
        if self.warm_start and highs.getInfo().primal_solution_status == 2:  # a feasible point
            cost = np.asarray(highs.getLp().col_cost_)
            held = float(cost @ np.asarray(highs.getSolution().col_value))
            claimed = float(highs.getInfo().objective_function_value)
            if abs(held - claimed) > 1e-9 * (1.0 + abs(claimed)):
                highs.clearSolver()
                _run_highs(highs)


def _run_highs(highs: Any) -> None:
    """``highs.run()``, cancelled by Ctrl-C (highspy >= 1.8 has user interrupts; an older one
    runs to its time limit before the interrupt is seen)."""
    if not hasattr(highs, "cancelSolve"):
        highs.run()
        return
    highs.HandleUserInterrupt = True
    interruptible(highs.run, highs.cancelSolve)


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
    reporter = _Reporter(model, options, t0, unit) if options.progress is not None else None
    with tempfile.TemporaryDirectory(prefix="cachepart-ilp-") as tmp:
        if which == "highs":
            _swallow_highs_banner()
            solver: Any = _WarmHiGHS(msg=False, timeLimit=limit, gapRel=_GAP_REL,
                                     gapAbs=_GAP_REL, threads=threads)
            solver.warm_start = warm
            solver.reporter = reporter
        elif which == "cbc":
            solver = _cbc(msg=False, timeLimit=limit, gapRel=_GAP_REL, threads=threads,
                          warmStart=warm)
            solver.tmpDir = tmp  # never the cwd, whatever TMPDIR says
            solver.on_log = reporter.cbc_line if reporter is not None else None
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
