"""Solving the richer problems, and ``auto``: which method runs, and why.

``auto`` picks the parametric search for the canonical problem (exact, and the fastest of the
exact methods at every size measured: benchmarks/bench_scaling.py), and the ILP where the problem
has freedoms only the ILP models (tensor-parallel degrees, tiered residency). The plan records
the choice and the reason in ``solver.info``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np

from .algorithms import SolveOptions
from .algorithms.ilp_variants import solve_tiered_ilp, solve_tp_ilp
from .errors import InvalidInputError, SolverError
from .feasibility import diagnose
from .partition import Partition
from .problem import Problem
from .solve import solve
from .status import Status
from .variants import Residency, TensorParallel, tp_dp, tp_stage_memory, tp_stage_time

__all__ = ["AUTO", "solve_extended"]

AUTO = "auto"


def _why_auto(tp: TensorParallel | None, residency: Residency | None) -> tuple[str, str]:
    if tp is not None:
        return "ilp", "tensor-parallel degrees per stage: an ILP-only freedom"
    if residency is not None:
        return "ilp", "tiered residency: an ILP-only freedom"
    return "parametric", ("canonical problem: the parametric search is exact and faster than "
                          "proving the optimum with the ILP")


def solve_extended(problem: Problem, method: str = AUTO, options: SolveOptions | None = None, *,
                   tp: TensorParallel | None = None,
                   residency: Residency | None = None) -> Partition:
    """Solve the canonical problem or one of its extensions; ``method`` may be ``auto``."""
    options = options or SolveOptions()
    why = None
    if method == AUTO:
        method, why = _why_auto(tp, residency)
    if tp is not None and residency is not None:
        raise InvalidInputError("--tp and --residency partial cannot be combined yet")
    if tp is None and residency is None:
        part = solve(problem, method, options)
    elif tp is not None:
        part = _solve_tp(problem, tp, method, options)
    else:
        assert residency is not None
        part = _solve_tiered(problem, residency, method, options)
    if why is not None:
        part = dataclasses.replace(part, info={**part.info, "chosen_by": AUTO, "why": why})
    return part


def _infeasible_tp(problem: Problem, tp: TensorParallel, method: str) -> Partition:
    widest = max(t for t in tp.degrees if t <= problem.max_stages)
    for i in range(problem.n):
        need = tp_stage_memory(problem, i, i + 1, widest)
        if need > problem.capacity_bytes:
            return Partition((), Status.INFEASIBLE, None, None, method, diagnosis=(
                f"layer {problem.names[i]!r} cannot fit even split {widest} ways: {need} bytes "
                f"per device > capacity {problem.capacity_bytes} bytes"))
    return Partition((), Status.INFEASIBLE, None, None, method, diagnosis=(
        f"no plan fits {problem.max_stages} devices with tensor-parallel degrees "
        f"{list(tp.degrees)} at capacity {problem.capacity_bytes} bytes"))


def _solve_tp(problem: Problem, tp: TensorParallel, method: str,
              options: SolveOptions) -> Partition:
    t0 = time.perf_counter()
    if method == "dp":
        found = tp_dp(problem, tp)
        if found is None:
            return _infeasible_tp(problem, tp, method)
        z, bounds, degrees = found
        status, bound, info, backend = Status.OPTIMAL, z, {}, None
    elif method == "ilp":
        if options.backend not in (None, "cpsat"):
            raise InvalidInputError("--tp: the tensor-parallel ILP runs on CP-SAT only "
                                    f"(--solver cpsat), got {options.backend!r}")
        plan = solve_tp_ilp(problem, tp, options)
        if plan is None:
            return _infeasible_tp(problem, tp, method)
        bounds, degrees, status, bound, info = (plan.bounds, plan.degrees, plan.status,
                                                plan.bound, dict(plan.info))
        backend = "cpsat"
    else:
        raise InvalidInputError(f"--tp: needs --method ilp, dp or auto, got {method!r}")
    # Check what any method returns: capacity per device, devices in all, recomputed times.
    if sum(degrees) > problem.max_stages:
        raise SolverError(f"tp plan uses {sum(degrees)} devices > {problem.max_stages}")
    times = []
    for (s, e), t in zip(itertools.pairwise(bounds), degrees, strict=True):
        if tp_stage_memory(problem, s, e, t) > problem.capacity_bytes:
            raise SolverError(f"tp plan stage [{s}, {e}) on {t} devices breaks the capacity")
        times.append(tp_stage_time(problem, tp, s, e, t))
    objective = max(times)
    return Partition(tuple(bounds), status, objective, min(bound, objective), method,
                     backend=backend, wall_s=time.perf_counter() - t0,
                     info={**info, "tp_degrees": list(degrees), "stage_times_s": times})


def _solve_tiered(problem: Problem, residency: Residency, method: str,
                  options: SolveOptions) -> Partition:
    if method != "ilp":
        raise InvalidInputError(f"--residency partial: needs --method ilp or auto, got {method!r}")
    if options.backend not in (None, "cpsat"):
        raise InvalidInputError("--residency partial: the tiered ILP runs on CP-SAT only "
                                f"(--solver cpsat), got {options.backend!r}")
    plan = solve_tiered_ilp(problem, residency, options)
    if plan is None:
        reason = diagnose(problem.replace(weight_bytes=np.zeros(problem.n, dtype=np.int64)))
        return Partition((), Status.INFEASIBLE, None, None, method, diagnosis=(
            "even with every weight streamed from main memory: "
            + (reason or "no plan fits")).replace("its weights, output and buffer",
                                                  "its output and buffer"))
    return Partition(plan.bounds, plan.status, plan.objective, plan.bound, method,
                     backend="cpsat", wall_s=plan.wall_s,
                     info={**plan.info, "resident": list(plan.resident)})
