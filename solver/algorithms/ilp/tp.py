"""The tensor-parallel ILP: cuts and a degree per stage, on any backend.

One boolean per (segment [s, e), degree t) that fits t devices' capacity and is no slower than
the warm start; the shared flow rows; the degrees of the chosen stages sum to at most K; for
each start s, z >= sum over (e, t) of T_t[s, e] y (at most one stage leaves s). The exact DP
(algorithms/dp.py) gives the warm start and the pruning bound; the ILP proves it.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from ...core.errors import SolverError
from ...core.extensions import stage_time_matrix
from ...core.feasibility import lower_bound, tp_infeasible_reason
from ...core.partition import Partition
from ...core.problem import Problem
from ..base import SolveOptions
from ..dp import tp_dp
from .answer import Decided, infeasible, settle
from .backends import IlpBackend
from .model import MilpModel, Row
from .segments import chain_of, flow_rows, start_time_rows

__all__ = ["solve_tp"]


def solve_tp(problem: Problem, options: SolveOptions, backend: IlpBackend) -> Partition:
    """Minimise the slowest stage choosing cuts and a TP degree per stage."""
    tp = problem.tensor_parallel
    if tp is None:
        raise SolverError("solve_tp: the problem has no tensor-parallel extension")
    t0 = time.perf_counter()
    n, k = problem.n, problem.stage_limit
    exact = tp_dp(problem)  # the certificate; also the warm start, unless told not to
    warm = exact if options.use_hint else None
    upper = warm[0] if warm is not None else math.inf
    starts, ends, degs, times = [], [], [], []
    for t in tp.degrees:
        if t > k:
            continue
        mat = stage_time_matrix(problem, t)
        s_idx, e_idx = np.nonzero(np.isfinite(mat) & (mat <= upper))
        starts += s_idx.tolist()
        ends += e_idx.tolist()
        degs += [t] * len(s_idx)
        times += mat[s_idx, e_idx].tolist()
    if not starts:
        return infeasible(problem, backend, {"backend_status": "infeasible before solving"},
                          tp_infeasible_reason(problem))
    s_arr, e_arr = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    d_arr, t_arr = np.asarray(degs, dtype=np.int64), np.asarray(times)
    floor = lower_bound(problem)
    rows = flow_rows(s_arr, e_arr, n)
    rows.append(Row(np.arange(len(s_arr)), d_arr.astype(np.float64), "<=",
                    float(problem.stage_limit), name="devices"))
    rows += start_time_rows(s_arr, t_arr, n)
    hint = None
    if warm is not None:
        chosen = {(s, e, t) for (s, e), t in zip(itertools.pairwise(warm[1]), warm[2], strict=True)}
        hint = np.array([(s, e, t) in chosen for s, e, t in zip(starts, ends, degs, strict=True)])
    # Time unit: the exact optimum (the DP runs to certify anyway), so tolerances stay small
    # against z whether or not it warm-starts.
    ref = exact[0] if exact is not None else float(t_arr.max())
    model = MilpModel("tensor-parallel", len(s_arr), rows, floor, float(t_arr.max()),
                      ref, hint, None if warm is None else warm[0])
    result = backend.solve(model, options, t0)
    info: dict[str, object] = {"segments": len(s_arr), "backend_status": result.status,
                               **result.info, "warm_start": None if warm is None else warm[0]}

    def decode(values: np.ndarray) -> Decided:
        picked = chain_of(s_arr, e_arr, values, n)
        return Decided((*s_arr[picked].tolist(), n), float(t_arr[picked].max()),
                       {"tp_degrees": tuple(d_arr[picked].tolist())})

    return settle(result, backend=backend, options=options, decode=decode, floor=floor,
                  warm=None if warm is None else Decided(warm[1], warm[0],
                                                         {"tp_degrees": warm[2]}),
                  on_infeasible=lambda: infeasible(problem, backend, info,
                                                   tp_infeasible_reason(problem)),
                  info=info, exact=None if exact is None else exact[0])
