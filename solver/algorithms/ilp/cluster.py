"""The ILP on a cluster (solver/core/fleet.py), ordered and free placement, on any backend.

Ordered: a state (p, r) is "layers [0, p) placed on ranks [0, r)"; an arc is a stage [s, e) on
the block of ranks [r, r + t) (one node, one kind), from (s, r) to (e, r + t), its time that of
rank r's view entered from rank r - 1. One unit of flow from (0, 0) to any (n, r); for each
state, z >= the time of the arc leaving it. The exact optimum (the parametric search, or the
ordered DP with tensor parallelism) is the warm start, the pruning bound and the certificate;
without tensor parallelism the answer is the ordered plan every exact method returns.

Free: devices of one kind in one node (a class) are interchangeable. One boolean per (stage
[s, e), class c, degree t); the shared flow rows over boundaries; per class, the devices used
sum to at most its count; in all, to at most K. The stage starting at p pays its transfer over
the node's link when the stage ending at p ran in the same node, else over the inter-node link:
a boolean v[p, c] = (a stage on c starts at p) AND (a stage of c's node ends at p), written as
three rows, and for each (p, c): z >= sum of (compute + inter-node transfer) y - (inter-node -
node transfer) v. Without tensor parallelism, and where its state space is small enough, the
exact parametric search over device-count vectors (solver/core/free.py) gives the warm start,
the pruning bound and the certificate; otherwise the warm start is the best ordered plan over a
few rank orders, and OPTIMAL is the backend's proof within answer.py's tolerance (the problem
is NP-hard), cross-checked in the tests against the free-placement DP.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from ...core.errors import SolverError
from ...core.extensions import stage_time_matrix
from ...core.feasibility import lower_bound
from ...core.fleet import Fleet, ordered_ranks, rank_view, stage_view
from ...core.free import free_partition, free_search_fits
from ...core.ordered import ordered_partition
from ...core.partition import Partition, evaluate
from ...core.problem import Problem
from ..base import SolveOptions
from ..dp_cluster import FREE_DP_MAX_STATES, assign_ranks, free_dp, ordered_dp
from ..dp_cluster import free_states as free_dp_states
from ..parametric import optimal_bottleneck
from .answer import Decided, infeasible, settle
from .backends import IlpBackend
from .model import MilpModel, Row
from .segments import chain_of, flow_rows, state_flow_rows, state_time_rows

__all__ = ["solve_free", "solve_ordered"]

NO_PLACEMENT = "no placement of the layers on the cluster's devices fits"


def _fleet(problem: Problem) -> Fleet:
    if problem.fleet is None:
        raise SolverError("cluster ILP: the problem has no cluster")
    return problem.fleet


def _degrees(problem: Problem) -> tuple[int, ...]:
    return problem.tensor_parallel.degrees if problem.tensor_parallel is not None else (1,)


def _matrix(view: Problem, t: int) -> np.ndarray:
    mats: dict[int, np.ndarray] = view.__dict__.setdefault("_tp_matrices", {})
    if t not in mats:
        mats[t] = stage_time_matrix(view, t)
    return mats[t]


def _objective(problem: Problem, bounds: tuple[int, ...], degrees: tuple[int, ...],
               ranks: tuple[int, ...] | None) -> float:
    return max(c.time_s for c in evaluate(problem, bounds, tp_degrees=degrees, ranks=ranks))


def _orders(fleet: Fleet) -> list[tuple[int, ...]]:
    """Rank orders worth trying as ordered plans for a free placement: the nodes in every
    order (two orders beyond four nodes), each node's devices fastest kind first, slowest
    first, largest first, or as given."""
    time_of = fleet.latency_s.sum(axis=1)
    keys = [np.zeros(fleet.size), time_of[list(fleet.rank_kind)], -time_of[list(fleet.rank_kind)],
            -np.array([fleet.capacity_bytes[k] for k in fleet.rank_kind], dtype=np.float64)]
    by_node = [[r for r in range(fleet.size) if fleet.rank_node[r] == g]
               for g in range(fleet.nodes)]
    node_orders = list(itertools.permutations(range(fleet.nodes))) if fleet.nodes <= 4 else \
        [tuple(range(fleet.nodes)), tuple(reversed(range(fleet.nodes)))]
    orders = set()
    for key in keys:
        ranked = [sorted(ranks, key=lambda r: (float(key[r]), r)) for ranks in by_node]
        orders |= {tuple(r for g in nodes for r in ranked[g]) for nodes in node_orders}
    return sorted(orders)


def _free_warm(problem: Problem) -> tuple[float, tuple[int, ...], tuple[int, ...],
                                           tuple[int, ...]] | None:
    """The best ordered plan over _orders: (bottleneck, bounds, degrees, first rank per stage).
    With tensor parallelism, the rank order's (TP blocks must stay in one class)."""
    fleet = _fleet(problem)
    if problem.tensor_parallel is not None:
        exact = ordered_dp(problem)
        return None if exact is None else (*exact, ordered_ranks(exact[2]))
    best = None
    for order in _orders(fleet):
        z, _ = optimal_bottleneck(problem, order=order)
        if z is not None and (best is None or z < best[0]):
            bounds = ordered_partition(problem, z, order)
            if bounds is not None:
                best = (z, bounds, (1,) * (len(bounds) - 1), order[:len(bounds) - 1])
    return best


def _exact_free(problem: Problem) -> tuple[float, tuple[int, ...], tuple[int, ...],
                                            tuple[int, ...]] | None:
    """The exact free placement, the certificate and warm start: by the parametric search
    (solver/core/free.py) without tensor parallelism, by the free-placement DP with it, where
    their state spaces are small enough."""
    if problem.tensor_parallel is not None:
        return free_dp(problem) if free_dp_states(problem) <= FREE_DP_MAX_STATES else None
    if not free_search_fits(problem):
        return None
    z, _ = optimal_bottleneck(problem)
    if z is None:
        return None
    found = free_partition(problem, z)
    if found is None:
        raise SolverError(f"free optimum {z} reached by no free placement")
    bounds, ranks = found
    return z, bounds, (1,) * (len(bounds) - 1), ranks


def _exact_ordered(problem: Problem) -> tuple[float, tuple[int, ...], tuple[int, ...]] | None:
    """The best ordered plan: (bottleneck, bounds, degrees)."""
    if problem.tensor_parallel is not None:
        return ordered_dp(problem)
    ordered = problem if _fleet(problem).placement == "ordered" else \
        problem.replace(fleet=_fleet(problem).with_placement("ordered"))
    z, _ = optimal_bottleneck(ordered)
    if z is None:
        return None
    bounds = ordered_partition(ordered, z)
    if bounds is None:
        raise SolverError(f"ordered optimum {z} reached by no ordered plan")
    return z, bounds, (1,) * (len(bounds) - 1)


# ----- ordered placement ----------------------------------------------------------------------
def solve_ordered(problem: Problem, options: SolveOptions, backend: IlpBackend) -> Partition:
    fleet = _fleet(problem)
    t0 = time.perf_counter()
    n, limit = problem.n, problem.stage_limit
    tp = problem.tensor_parallel is not None
    exact = _exact_ordered(problem)
    warm = exact if options.use_hint else None
    upper = warm[0] if warm is not None else math.inf
    index = {(0, 0): 0}
    tails, heads, times, arcs = [], [], [], []
    reached = {(0, 0)}
    for r in range(limit):
        view = rank_view(problem, r, None if r == 0 else r - 1)
        starts = sorted(p for p, q in reached if q == r and p < n)
        for t in _degrees(problem):
            if r + t > limit or not fleet.block_ok(r, t):
                continue
            mat = _matrix(view, t)
            for s in starts:
                ends = np.flatnonzero(np.isfinite(mat[s]) & (mat[s] <= upper))
                for e in ends.tolist():
                    head = (e, r + t)
                    reached.add(head)
                    tails.append(index.setdefault((s, r), len(index)))
                    heads.append(index.setdefault(head, len(index)))
                    times.append(float(mat[s, e]))
                    arcs.append((s, e, r, t))
    sinks = {q for (p, _), q in index.items() if p == n}
    if not sinks:
        return infeasible(problem, backend, {"backend_status": "infeasible before solving"},
                          NO_PLACEMENT)
    m = len(arcs)
    tail_a, head_a, time_a = np.array(tails), np.array(heads), np.array(times)
    rows = state_flow_rows(tail_a, head_a, 0, sinks, len(index))
    rows += state_time_rows(tail_a, time_a, len(index))
    hint = None
    if warm is not None:
        chosen, r = set(), 0
        for (s, e), t in zip(zip(warm[1][:-1], warm[1][1:], strict=True), warm[2], strict=True):
            chosen.add((s, e, r, t))
            r += t
        hint = np.array([arc in chosen for arc in arcs])
    ref = exact[0] if exact is not None else float(time_a.max())
    model = MilpModel("cluster-ordered", m, rows, lower_bound(problem), float(time_a.max()), ref,
                      hint, None if warm is None else warm[0])
    result = backend.solve(model, options, t0)
    info: dict[str, object] = {"arcs": m, "states": len(index), "backend_status": result.status,
                               **result.info, "warm_start": None if warm is None else warm[0]}

    def decided(bounds: tuple[int, ...], degrees: tuple[int, ...]) -> Decided:
        if not tp:  # the ordered plan every exact method returns for this bottleneck
            z = _objective(problem, bounds, degrees, None)
            bounds = ordered_partition(problem, z) or bounds
            degrees = (1,) * (len(bounds) - 1)
        return Decided(bounds, _objective(problem, bounds, degrees, None),
                       {"tp_degrees": degrees} if tp else {})

    def decode(values: np.ndarray) -> Decided:
        picked = sorted((arcs[k] for k in np.flatnonzero(values)), key=lambda a: a[0])
        bounds = (*[a[0] for a in picked], n)
        if [a[1] for a in picked] != list(bounds[1:]):
            raise SolverError(f"the ILP's stages {picked} do not form a chain")
        return decided(bounds, tuple(a[3] for a in picked))

    return settle(result, backend=backend, options=options, decode=decode,
                  floor=lower_bound(problem),
                  warm=None if warm is None else decided(warm[1], warm[2]),
                  on_infeasible=lambda: infeasible(problem, backend, info, NO_PLACEMENT),
                  info=info, exact=None if exact is None else exact[0])


# ----- free placement -------------------------------------------------------------------------
def solve_free(problem: Problem, options: SolveOptions, backend: IlpBackend) -> Partition:
    fleet = _fleet(problem)
    t0 = time.perf_counter()
    n, limit = problem.n, problem.stage_limit
    tp = problem.tensor_parallel is not None
    classes = fleet.classes
    exact = _exact_free(problem)
    warm_ordered = exact or _free_warm(problem)  # an ordered plan is a free placement too
    warm = warm_ordered if options.use_hint else None
    upper = warm[0] if warm is not None else math.inf
    cut = problem.cut_bytes.astype(np.float64)

    def transfer(link_index: int) -> np.ndarray:
        link = fleet.inter_node_link if link_index < 0 else fleet.node_links[link_index]
        x = cut / link.bandwidth_bytes_per_s + link.latency_s
        x[0] = 0.0
        return x

    inter = transfer(-1)
    intra = [transfer(g) for g in range(fleet.nodes)]
    starts, ends, cls_of, degs, compute = [], [], [], [], []
    for c, cls in enumerate(classes):
        view = stage_view(problem, cls.kind, fleet.node_links[cls.node], cls.node)
        x_view = view.transfer_s
        cheapest = np.minimum(inter, intra[cls.node])
        for t in _degrees(problem):
            if t > len(cls.ranks) or t > limit:
                continue
            mat = _matrix(view, t)
            inner = mat - x_view[:, None]  # the stage's own time, without its transfer
            ok = np.isfinite(mat) & (inner + cheapest[:, None] <= upper * (1 + 1e-9))
            s_idx, e_idx = np.nonzero(ok)
            starts += s_idx.tolist()
            ends += e_idx.tolist()
            cls_of += [c] * len(s_idx)
            degs += [t] * len(s_idx)
            compute += inner[s_idx, e_idx].tolist()
    if not starts:
        return infeasible(problem, backend, {"backend_status": "infeasible before solving"},
                          NO_PLACEMENT)
    s_a, e_a = np.array(starts), np.array(ends)
    c_a, t_a, comp = np.array(cls_of), np.array(degs), np.array(compute)
    m = len(starts)
    rows = flow_rows(s_a, e_a, n)
    rows.append(Row(np.arange(m), t_a.astype(np.float64), "<=", float(limit), name="devices"))
    for c, cls in enumerate(classes):
        mine = np.flatnonzero(c_a == c)
        if mine.size:
            rows.append(Row(mine, t_a[mine].astype(np.float64), "<=", float(len(cls.ranks)),
                            name=f"class_{c}"))
    node_of = np.array([classes[c].node for c in c_a.tolist()])
    v_index: dict[tuple[int, int], int] = {}
    for p in range(n):
        for c, cls in enumerate(classes):
            begin = np.flatnonzero((s_a == p) & (c_a == c))
            if begin.size == 0:
                continue
            cost = comp[begin] + inter[p]
            if p == 0:
                rows.append(Row(begin, cost, "<=", 0.0, z_coef=-1.0, timed=True, active=1,
                                name=f"time_{p}_{c}"))
                continue
            finish = np.flatnonzero((e_a == p) & (node_of == cls.node))
            v = m + len(v_index)
            v_index[(p, c)] = v
            one = np.ones
            rows += [
                Row(np.concatenate(([v], begin)), np.concatenate(([1.0], -one(begin.size))),
                    "<=", 0.0, name=f"v_start_{p}_{c}"),
                Row(np.concatenate(([v], finish)), np.concatenate(([1.0], -one(finish.size))),
                    "<=", 0.0, name=f"v_node_{p}_{c}"),
                Row(np.concatenate((begin, finish, [v])),
                    np.concatenate((one(begin.size), one(finish.size), [-1.0])),
                    "<=", 1.0, name=f"v_and_{p}_{c}"),
                Row(np.concatenate((begin, [v])),
                    np.concatenate((cost, [-(inter[p] - intra[cls.node][p])])),
                    "<=", 0.0, z_coef=-1.0, timed=True, active=2, name=f"time_{p}_{c}"),
            ]
    hint = None
    if warm is not None:
        hint = _free_hint(problem, warm, s_a, e_a, c_a, t_a, v_index, m)
    ref = warm_ordered[0] if warm_ordered is not None else float((comp + inter[s_a]).max())
    z_top = float((comp + np.maximum(inter, np.max(intra, axis=0))[s_a]).max())
    model = MilpModel("cluster-free", m + len(v_index), rows, lower_bound(problem), z_top, ref,
                      hint, None if warm is None else warm[0])
    result = backend.solve(model, options, t0)
    info: dict[str, object] = {"segments": m, "backend_status": result.status, **result.info,
                               "warm_start": None if warm is None else warm[0]}

    def decode(values: np.ndarray) -> Decided:
        picked = chain_of(s_a, e_a, values[:m], n)
        bounds = (*s_a[picked].tolist(), n)
        degrees = tuple(t_a[picked].tolist())
        ranks = assign_ranks(classes, c_a[picked].tolist(), list(degrees))
        fields: dict[str, object] = {"ranks": ranks}
        if tp:
            fields["tp_degrees"] = degrees
        return Decided(bounds, _objective(problem, bounds, degrees, ranks), fields)

    warm_decided = None
    if warm is not None:
        fields: dict[str, object] = {"ranks": warm[3]}
        if tp:
            fields["tp_degrees"] = warm[2]
        warm_decided = Decided(warm[1], _objective(problem, warm[1], warm[2], warm[3]), fields)
    return settle(result, backend=backend, options=options, decode=decode,
                  floor=lower_bound(problem), warm=warm_decided,
                  on_infeasible=lambda: infeasible(problem, backend, info, NO_PLACEMENT),
                  info=info, exact=None if exact is None else exact[0])


def _free_hint(problem: Problem,
               warm: tuple[float, tuple[int, ...], tuple[int, ...], tuple[int, ...]],
               s_a: np.ndarray, e_a: np.ndarray, c_a: np.ndarray, t_a: np.ndarray,
               v_index: dict[tuple[int, int], int], m: int) -> np.ndarray:
    """An ordered plan (on ranks warm[3]) as values of the free model's variables."""
    fleet = _fleet(problem)
    class_of_rank = {r: c for c, cls in enumerate(fleet.classes) for r in cls.ranks}
    hint = np.zeros(m + len(v_index), dtype=bool)
    previous_node = -1
    for (s, e), t, r in zip(zip(warm[1][:-1], warm[1][1:], strict=True), warm[2], warm[3],
                            strict=True):
        c = class_of_rank[r]
        k = np.flatnonzero((s_a == s) & (e_a == e) & (c_a == c) & (t_a == t))
        if k.size:
            hint[k[0]] = True
        if (s, c) in v_index and fleet.classes[c].node == previous_node:
            hint[v_index[(s, c)]] = True
        previous_node = fleet.classes[c].node
    return hint
