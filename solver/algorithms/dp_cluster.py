"""The exact dynamic programs of the ``dp`` method on a cluster.

Ordered placement: g[r][e] = the best bottleneck covering layers [0, e) with the stages on ranks
[0, r) in order; a stage on the block [r, r + t) (t = 1 without tensor parallelism; one node and
one kind) ending at e comes from g[r][s]: g[r + t][e] = min over s of max(g[r][s], T(s, e)), T
from the view of rank r entered from rank r - 1. O(R x degrees x n^2) for R usable ranks.

Free placement: devices of one kind in one node are interchangeable, so a state is (boundary,
the class of the last stage, how many devices of each class are used); a stage on t devices
of class c adds t to c's count, and its inbound transfer crosses the node's link when the
previous stage's class is in the same node, the inter-node link otherwise. Exact, with a number
of states that grows as the product over classes of (devices + 1): used where that is small
(the ILP solves the rest), and to cross-check the ILP.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import InvalidInputError
from ..core.extensions import stage_time_matrix
from ..core.fleet import DeviceClass, Fleet, rank_view, stage_view
from ..core.problem import Problem

__all__ = ["FREE_DP_MAX_STATES", "assign_ranks", "free_dp", "free_states", "ordered_dp"]

FREE_DP_MAX_STATES = 200_000
"""Boundaries x classes x device-count vectors the free-placement DP may visit."""


def _degrees(problem: Problem) -> tuple[int, ...]:
    return problem.tensor_parallel.degrees if problem.tensor_parallel is not None else (1,)


def ordered_dp(problem: Problem) -> tuple[float, tuple[int, ...], tuple[int, ...]] | None:
    """(bottleneck, bounds, degree per stage) of the best ordered plan, or None."""
    fleet = _fleet(problem)
    n, limit = problem.n, problem.stage_limit
    g = np.full((limit + 1, n + 1), np.inf)
    g[0, 0] = 0.0
    arg_s = np.full((limit + 1, n + 1), -1, dtype=np.int64)
    arg_t = np.zeros((limit + 1, n + 1), dtype=np.int64)
    mats: dict[tuple[int, int], np.ndarray] = {}
    for r in range(limit):
        if not np.isfinite(g[r]).any():
            continue
        view = rank_view(problem, r, None if r == 0 else r - 1)
        for t in _degrees(problem):
            if r + t > limit or not fleet.block_ok(r, t):
                continue
            mat = mats.get((id(view), t))
            if mat is None:
                mat = mats[(id(view), t)] = stage_time_matrix(view, t)
            cost = np.maximum(g[r][:n, None], mat)
            s_best = np.argmin(cost, axis=0)
            value = cost[s_best, np.arange(n + 1)]
            better = value < g[r + t]
            g[r + t] = np.where(better, value, g[r + t])
            arg_s[r + t] = np.where(better, s_best, arg_s[r + t])
            arg_t[r + t] = np.where(better, t, arg_t[r + t])
    finals = g[:, n]
    if not np.isfinite(finals).any():
        return None
    r = int(np.argmin(finals))  # the fewest ranks among the best
    z = float(finals[r])
    bounds, degrees, e = [n], [], n
    while e > 0:
        s, t = int(arg_s[r, e]), int(arg_t[r, e])
        bounds.append(s)
        degrees.append(t)
        r, e = r - t, s
    return z, tuple(reversed(bounds)), tuple(reversed(degrees))


def _fleet(problem: Problem) -> Fleet:
    if problem.fleet is None:
        raise InvalidInputError("the problem has no cluster", field="cluster")
    return problem.fleet


def free_states(problem: Problem) -> int:
    """How many states the free-placement DP would visit at most."""
    classes = _fleet(problem).classes
    vectors = math.prod(len(c.ranks) + 1 for c in classes)
    return (problem.n + 1) * (len(classes) + 1) * vectors


def free_dp(problem: Problem) -> tuple[float, tuple[int, ...], tuple[int, ...],
                                         tuple[int, ...]] | None:
    """(bottleneck, bounds, degree per stage, first rank per stage) of the best free placement,
    or None; InvalidInputError when the state space is beyond FREE_DP_MAX_STATES."""
    fleet = _fleet(problem)
    states = free_states(problem)
    if states > FREE_DP_MAX_STATES:
        raise InvalidInputError(
            f"dp: free placement on this cluster has up to {states:,} states (layers x device "
            f"classes x device counts), more than the {FREE_DP_MAX_STATES:,} it visits; use "
            "the ilp method", field="method")
    classes = fleet.classes
    n, limit = problem.n, problem.stage_limit
    Key = tuple[int, tuple[int, ...]]  # (class of the last stage or -1, devices used per class)
    start: Key = (-1, (0,) * len(classes))
    best: list[dict[Key, tuple[float, int, Key, int]]] = [{} for _ in range(n + 1)]
    best[0][start] = (0.0, -1, start, 0)
    rows: dict[tuple[int, int, int], np.ndarray] = {}
    for p in range(n):
        for key, (value, *_rest) in sorted(best[p].items()):
            last, used = key
            for c, cls in enumerate(classes):
                for t in _degrees(problem):
                    if used[c] + t > len(cls.ranks) or sum(used) + t > limit:
                        continue
                    times = _row(problem, classes, c, last, t, p, rows)
                    count = tuple(u + (t if i == c else 0) for i, u in enumerate(used))
                    new_key: Key = (c, count)
                    for e in (np.flatnonzero(np.isfinite(times[p + 1:])) + p + 1).tolist():
                        cand = max(value, float(times[e]))
                        old = best[e].get(new_key)
                        if old is None or cand < old[0]:
                            best[e][new_key] = (cand, p, key, t)
    if not best[n]:
        return None
    key = min(best[n], key=lambda k: (best[n][k][0], sum(k[1]), k))
    z = best[n][key][0]
    bounds, degrees, stage_classes, end = [n], [], [], n
    while end > 0:
        _, p, prev, t = best[end][key]
        bounds.append(p)
        degrees.append(t)
        stage_classes.append(key[0])
        key, end = prev, p
    degrees.reverse()
    stage_classes.reverse()
    return z, tuple(reversed(bounds)), tuple(degrees), assign_ranks(classes, stage_classes, degrees)


def _row(problem: Problem, classes: tuple[DeviceClass, ...], c: int, last: int, t: int, p: int,
         rows: dict[tuple[int, int, int], np.ndarray]) -> np.ndarray:
    """Stage times from p to every end on class c after a stage on class ``last``."""
    fleet = _fleet(problem)
    cls = classes[c]
    if last < 0:
        link = fleet.node_links[cls.node]
    else:
        link = fleet.node_links[cls.node] if classes[last].node == cls.node \
            else fleet.inter_node_link
    view = stage_view(problem, cls.kind, link, cls.node)
    key = (id(view), t, p)
    row = rows.get(key)
    if row is None:
        mats = view.__dict__.setdefault("_tp_matrices", {})
        if t not in mats:
            mats[t] = stage_time_matrix(view, t)
        row = rows[key] = mats[t][p]
    return row


def assign_ranks(classes: tuple[DeviceClass, ...], stage_classes: list[int],
                 degrees: list[int]) -> tuple[int, ...]:
    """First rank of each stage: each class's devices handed out in rank order."""
    taken = [0] * len(classes)
    firsts = []
    for c, t in zip(stage_classes, degrees, strict=True):
        firsts.append(classes[c].ranks[taken[c]])
        taken[c] += t
    return tuple(firsts)
