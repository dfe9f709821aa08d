"""Reach-based feasibility, the canonical partition, lower bounds and infeasibility diagnosis.

For a start s, the stages [s, e) that fit a capacity and a time budget z are exactly those with
e <= reach(s) (memory and time only grow as a stage grows). The boundaries reachable with at most
k stages are then a prefix [0, R_k] of positions, with R_{k+1} = max over p <= R_k of reach(p),
so the fewest stages needed under z costs O(n) after the reach array.

``lower_bound`` and ``diagnose`` take a problem's extensions into account; the reach arrays and
the canonical partition are the canonical problem's.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools

import numpy as np

from .extensions import TensorParallel, tp_stage_memory
from .fleet import Fleet
from .ordered import ordered_reach, ordered_stages
from .problem import MemoryModel, Problem
from .units import format_bytes

__all__ = [
    "canonical_partition",
    "diagnose",
    "fewest_stages",
    "lower_bound",
    "reach_under",
    "tp_infeasible_reason",
]


def reach_under(problem: Problem, z: float | None) -> np.ndarray:
    """Per start, the largest end that fits the capacity and (when z is given) time <= z."""
    cap = problem.capacity_reach
    if z is None:
        return cap
    return problem.snap(np.minimum(cap, problem.time_reach(z)))


def fewest_stages(reach: np.ndarray) -> int | None:
    """Fewest stages covering all layers using stages [s, e) with e <= reach[s]; None if none."""
    n = len(reach)
    prefix_max = np.maximum.accumulate(reach)
    covered, count = 0, 0
    while covered < n:
        nxt = int(prefix_max[covered])
        if nxt <= covered:
            return None
        covered, count = nxt, count + 1
    return count


def canonical_partition(problem: Problem, z: float | None) -> tuple[int, ...] | None:
    """The partition with every stage time <= z (if given) that uses the fewest stages, then the
    least total inbound transfer time, then the earliest cuts. None if none exists within K.

    Exact methods all pass their optimum through this, so they return the same plan."""
    reach = reach_under(problem, z).tolist()
    x = problem.transfer_s.tolist()
    n = problem.n
    # dist[p] = (stages, transfer) to place a boundary at p; a heap of settled starts p.
    parent = [-1] * (n + 1)
    dist: list[tuple[int, float] | None] = [None] * (n + 1)
    dist[0] = (0, 0.0)
    heap: list[tuple[int, float, int]] = []
    for q in range(n + 1):
        if q > 0:
            while heap and reach[heap[0][2]] < q:
                heapq.heappop(heap)  # that start cannot end a stage at q or later
            if not heap:
                return None
            count, transfer, p = heap[0]
            dist[q], parent[q] = (count, transfer), p
        if q < n and reach[q] > q:
            c, t = dist[q]  # type: ignore[misc]
            heapq.heappush(heap, (c + 1, t + x[q], q))
    final = dist[n]
    if final is None or final[0] > problem.max_stages:
        return None
    bounds = [n]
    while bounds[-1] != 0:
        bounds.append(parent[bounds[-1]])
    return tuple(reversed(bounds))


def lower_bound(problem: Problem) -> float:
    """A valid lower bound on the optimal bottleneck: the slowest single layer (with its
    cheapest possible inbound cost) and the average load over the stages available.

    Tensor parallelism: the total compute over K devices (a stage on t devices takes at least
    its compute / t, and the degrees sum to at most K). Residency: the canonical bound with
    every layer at its resident (fastest) latency."""
    fleet = problem.fleet
    if fleet is not None:
        # every kind's times at their fastest, every transfer over the fastest link
        t = fleet.latency_s.min(axis=0)
        x = np.zeros(problem.n)
        if problem.n > 1:
            x[1:] = np.min([problem.cut_bytes[1:] / link.bandwidth_bytes_per_s + link.latency_s
                            for link in fleet.links()], axis=0)
    elif problem.residency is not None:
        t, x = problem.residency.resident_latency_s, problem.transfer_s
    elif problem.training is not None:
        # forward + backward; a transfer may be avoided by sharing the stage, so none counted
        t, x = problem.latency_s + problem.training.backward_latency_s, np.zeros(problem.n)
    else:
        t, x = problem.latency_s, problem.transfer_s
    total = float(np.concatenate(([0.0], np.cumsum(t)))[-1])
    if problem.tensor_parallel is not None:
        return total / problem.stage_limit * (1 - 1e-12)
    k = min(problem.stage_limit, problem.n)
    # Layer i > 0 either starts its stage (pays x_i) or shares it with layer i - 1.
    single = t.copy()
    if problem.n > 1:
        single[1:] = t[1:] + np.minimum(x[1:], t[:-1])
    # Stage times are prefix-sum differences, which can round an ulp below these direct sums:
    # shave a relative 1e-12 so the bound stays valid.
    return float(max(single.max(), total / k)) * (1 - 1e-12)


def diagnose(problem: Problem) -> str | None:
    """Why no partition fits, in one line; None when one does (or, with tensor parallelism,
    when every layer fits some degree: whether K devices suffice is the method's answer)."""
    if problem.fleet is not None:
        return _diagnose_fleet(problem, problem.fleet)
    if problem.training is not None:
        return _diagnose_training(problem)
    if problem.tensor_parallel is not None:
        return _diagnose_tp(problem, problem.tensor_parallel)
    if problem.residency is not None:
        # Streaming every weight is the most room residency can give.
        streamed = problem.replace(weight_bytes=np.zeros(problem.n, dtype=np.int64),
                                   residency=None)
        reason = _diagnose(streamed, "its output and buffer")
        return None if reason is None else \
            f"even with every weight streamed from main memory: {reason}"
    what = "its weights, output and buffer" if problem.memory_model is MemoryModel.ADDITIVE \
        else "its weights plus its live input, output and buffer"
    return _diagnose(problem, what)


def _diagnose_training(problem: Problem) -> str | None:
    """A layer (or a group the allowed cuts keep together) that does not fit even as the last
    stage, with the fewest micro-batches in flight; whether K stages suffice is the methods'
    answer. Linear in the layers: it runs before any method."""
    tr = problem.training
    assert tr is not None
    least = tr.in_flight(1)
    n, cap = problem.n, problem.capacity_bytes
    cuts = problem.allowed_cuts
    starts = [0] + [p for p in range(1, n) if cuts is None or cuts[p]] + [n]
    fixed = problem.weight_bytes + tr.train_state_bytes
    additive = problem.memory_model is MemoryModel.ADDITIVE
    if additive:
        fixed = fixed + problem.buffer_bytes
    live = np.concatenate(([problem.input_bytes], problem.activation_bytes[:-1])) \
        + problem.activation_bytes + problem.buffer_bytes
    for s, e in itertools.pairwise(starts):
        need = int(fixed[s:e].sum() + least * tr.stash_bytes[s:e].sum())
        if not additive:
            need += int(live[s:e].max())
        if need > cap:
            what = f"layer {problem.names[s]!r}" if e == s + 1 else \
                f"layers {problem.names[s]!r} .. {problem.names[e - 1]!r} (kept together)"
            return (f"{what} cannot fit on one device in training: weights, gradients and "
                    f"optimizer state, buffers and {least} micro-batch stash"
                    f"{'es' if least > 1 else ''} ({tr.schedule}) need {need} bytes "
                    f"({format_bytes(need)}) > capacity {cap} bytes ({format_bytes(cap)})")
    return None


def _diagnose(problem: Problem, what: str) -> str | None:
    reach = problem.capacity_reach
    cap = problem.capacity_bytes
    if problem.allowed_cuts is not None:
        reason = _diagnose_groups(problem, reach, what)
        if reason is not None:
            return reason
    too_big = np.flatnonzero(reach <= np.arange(problem.n))
    if problem.allowed_cuts is not None:
        too_big = np.array([], dtype=np.int64)  # the groups were checked above
    if too_big.size:
        i = int(too_big[0])
        need = problem.stage_memory(i, i + 1)
        more = f" ({too_big.size - 1} more layers do not fit either)" if too_big.size > 1 else ""
        return (f"layer {problem.names[i]!r} cannot fit on one device: {what} need {need} bytes "
                f"({format_bytes(need)}) > capacity {cap} bytes ({format_bytes(cap)}){more}")
    needed = fewest_stages(reach)
    if needed is None:  # unreachable: every layer fits alone, so a cover exists
        raise AssertionError("no cover although every layer fits alone")
    if needed > problem.max_stages:
        return (f"the layers need at least {needed} devices at capacity {cap} bytes "
                f"({format_bytes(cap)}), but only {problem.max_stages} were given")
    return None


def _diagnose_groups(problem: Problem, reach: np.ndarray, what: str) -> str | None:
    """With allowed cuts the smallest stages are the groups between allowed boundaries: the
    first group that fits no device, or None."""
    cuts = problem.allowed_cuts if problem.allowed_cuts is not None else np.ones(problem.n + 1)
    bounds = np.flatnonzero(cuts).tolist()
    cap = problem.capacity_bytes
    for s, e in itertools.pairwise(bounds):
        if reach[s] < e:
            need = problem.stage_memory(s, e)
            names = problem.names[s] if e - s == 1 else \
                f"{problem.names[s]} .. {problem.names[e - 1]} (kept together)"
            return (f"layer {names!r} cannot fit on one device: {what} need {need} bytes "
                    f"({format_bytes(need)}) > capacity {cap} bytes ({format_bytes(cap)})")
    return None


def _diagnose_fleet(problem: Problem, fleet: Fleet) -> str | None:
    """The layer no device kind holds, the devices needed at the largest kind's capacity; for
    ordered placement, how far the ranks in order hold the layers."""
    kind = max(range(len(fleet.kinds)), key=lambda k: fleet.capacity_bytes[k])
    largest = problem.replace(fleet=None, capacity_bytes=fleet.capacity_bytes[kind],
                              max_stages=problem.stage_limit)
    if problem.tensor_parallel is not None:
        widest = max(len(c.ranks) for c in fleet.classes)
        tp = problem.tensor_parallel
        fitting = dataclasses.replace(tp, degrees=tuple(t for t in tp.degrees if t <= widest))
        return _diagnose_tp(largest.replace(tensor_parallel=fitting), fitting)
    what = "its weights, output and buffer" if problem.memory_model is MemoryModel.ADDITIVE \
        else "its weights plus its live input, output and buffer"
    reason = _diagnose(largest, what)
    if reason is not None:
        return f"{reason} (the largest device kind, {fleet.kinds[kind]})"
    if fleet.placement == "ordered" and ordered_stages(problem, None) is None:
        sets, _ = ordered_reach(problem, None)
        far = max(int(np.flatnonzero(here).max()) for here in sets if here.any())
        held = "none of the layers" if far == 0 else \
            f"the layers only up to {problem.names[far - 1]!r} ({far} of {problem.n})"
        return f"placement ordered: the cluster's ranks in order hold {held}; placement free may"
    return None


def _diagnose_tp(problem: Problem, tp: TensorParallel) -> str | None:
    widest = max(t for t in tp.degrees if t <= problem.max_stages)
    for i in range(problem.n):
        need = tp_stage_memory(problem, i, i + 1, widest)
        if need > problem.capacity_bytes:
            return (f"layer {problem.names[i]!r} cannot fit even split {widest} ways: {need} "
                    f"bytes per device > capacity {problem.capacity_bytes} bytes")
    return None


def tp_infeasible_reason(problem: Problem) -> str:
    """The diagnosis when every layer fits some degree but no plan fits K devices."""
    tp = problem.tensor_parallel
    degrees = [] if tp is None else list(tp.degrees)
    return (f"no plan fits {problem.max_stages} devices with tensor-parallel degrees {degrees} at "
            f"capacity {problem.capacity_bytes} bytes")
