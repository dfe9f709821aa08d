"""The training ILP: stages counted from the end, so a stage's stashes are known on its arc.

A state (p, r) is boundary p with r stages still to come, this one included; r is capped at
R (R = min(M, K) under 1F1B, where a stage r from the end keeps min(r, M) stashes; R = 1 under
GPipe, where every stage keeps M), and state (p, R) means "R or more". An arc is a stage [s, e)
from (s, r): to (e, r - 1), and from (s, R) also to (e, R) (more than R stages were left, the
stashes are the same). A super source leads to every (0, r); the sink is (n, 0). Flow rows make
one path, one row keeps the stages to at most K, and for each state z >= the time of the arc
that leaves it. An arc exists only where the stage fits at its r and is no slower than the warm
start. The exact DP (algorithms/train.py) is the warm start, the pruning bound and the
certificate, as for tensor parallelism.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ...core.errors import SolverError
from ...core.feasibility import lower_bound
from ...core.partition import Partition
from ...core.problem import Problem
from ...core.training import train_matrices
from ..base import SolveOptions
from ..train import TIE, train_dp
from .answer import Decided, infeasible, settle
from .backends import IlpBackend
from .model import MilpModel, Row
from .segments import state_flow_rows, state_time_rows

__all__ = ["solve_train"]


def solve_train(problem: Problem, options: SolveOptions, backend: IlpBackend) -> Partition:
    """Minimise the slowest stage of a training step under its schedule."""
    tr = problem.training
    if tr is None:
        raise SolverError("solve_train: the problem has no training extension")
    t0 = time.perf_counter()
    n, k = problem.n, min(problem.stage_limit, problem.n)
    cap = problem.capacity_bytes
    exact = train_dp(problem)
    warm = exact if options.use_hint else None
    upper = warm[0] if warm is not None else math.inf
    cap_r = min(tr.microbatches, k) if tr.schedule == "1f1b" else 1
    times, fixed, stash = train_matrices(problem)
    index: dict[tuple[int, int], int] = {(-1, -1): 0}  # the super source

    def state(p: int, r: int) -> int:
        return index.setdefault((p, r), len(index))

    tails: list[int] = []
    heads: list[int] = []
    arc_times: list[float] = []
    arcs: list[tuple[int, int, int, int]] = []  # (s, e, r at s, r at e)
    for r in range(1, cap_r + 1):
        tails.append(0)
        heads.append(state(0, r))
        arc_times.append(0.0)
        arcs.append((-1, 0, -1, r))
    for r in range(1, cap_r + 1):
        fits = (fixed + tr.in_flight(r) * stash <= cap) & np.isfinite(times) & (times <= upper)
        for s, e in zip(*np.nonzero(fits), strict=True):
            s, e = int(s), int(e)
            nexts = [r - 1] + ([r] if r == cap_r else [])
            for after in nexts:
                if (e == n) != (after == 0):
                    continue  # only the last stage reaches n, and it leaves none to come
                tails.append(state(s, r))
                heads.append(state(e, after))
                arc_times.append(float(times[s, e]))
                arcs.append((s, e, r, after))
    sink = index.get((n, 0))
    if sink is None:
        return infeasible(problem, backend, {"backend_status": "infeasible before solving"},
                          "no plan of at most K stages fits the schedule's stashes")
    tail_a, head_a, time_a = np.array(tails), np.array(heads), np.array(arc_times)
    stages = np.array([a[0] >= 0 for a in arcs])
    rows = state_flow_rows(tail_a, head_a, 0, {sink}, len(index))
    rows.append(Row(np.flatnonzero(stages), np.ones(int(stages.sum())), "<=", float(k),
                    name="stages"))
    rows += state_time_rows(tail_a, time_a, len(index), first=1)  # not the source's arcs
    hint = None
    if warm is not None:
        bounds = warm[1]
        p = len(bounds) - 1
        chosen = {(-1, 0, -1, min(p, cap_r))}
        for j in range(p):
            r = p - j  # stages from this one to the last
            chosen.add((bounds[j], bounds[j + 1], min(r, cap_r), min(r - 1, cap_r)))
        hint = np.array([a in chosen for a in arcs])
    timed = time_a[stages]
    ref = exact[0] if exact is not None else float(timed.max())
    model = MilpModel("training", len(arcs), rows, lower_bound(problem), float(timed.max()), ref,
                      hint, None if warm is None else warm[0])
    result = backend.solve(model, options, t0)
    info: dict[str, object] = {"arcs": len(arcs), "states": len(index),
                               "backend_status": result.status, **result.info,
                               "warm_start": None if warm is None else warm[0]}

    def decode(values: np.ndarray) -> Decided:
        picked = [arcs[i] for i in np.flatnonzero(values > 0.5) if arcs[i][0] >= 0]
        picked.sort()
        bounds = [0]
        for s, e, _, _ in picked:
            if s != bounds[-1]:
                raise SolverError(f"the ILP's stages {[(a[0], a[1]) for a in picked]} do not "
                                  "form a chain from the first layer to the last")
            bounds.append(e)
        if bounds[-1] != n:
            raise SolverError("the ILP's stages do not reach the last layer")
        value = max(float(times[s, e]) for s, e, _, _ in picked)
        if exact is not None and value <= exact[0] * (1 + TIE):
            return Decided(exact[1], exact[0])  # the optimum: the DP's canonical plan of it
        return Decided(tuple(bounds), value)

    return settle(result, backend=backend, options=options, decode=decode,
                  floor=lower_bound(problem),
                  warm=None if warm is None else Decided(warm[1], warm[0]),
                  on_infeasible=lambda: infeasible(problem, backend, info,
                                                   "no plan of at most K stages fits the "
                                                   "schedule's stashes"),
                  info=info, exact=None if exact is None else exact[0])
