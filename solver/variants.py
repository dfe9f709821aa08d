"""The richer problems that extend the canonical one: tensor parallelism per stage, and tiered
weight residency. Each keeps the canonical Problem and adds its freedom; switched off, each is the
canonical problem exactly.

Tensor parallelism (``TensorParallel``): a stage [s, e) may span t devices of one node (t among
the allowed degrees, t <= devices per node). Per device it holds W/t weights, the full
activations (each device keeps the all-reduced output) and B/t buffers (peak model: W/t + the
largest input + output + buffer/t). Its time is C/t + the all-reduces + its inbound transfer;
a ring all-reduce of b bytes over t devices costs 2 (t - 1) / t x b / bandwidth + 2 (t - 1) x
link latency, once per layer that all-reduces. The stages use at most K devices in all. The
transfer between stages uses the problem's link (where the devices sit is not modelled).

Tiered residency (``Residency``): a stage keeps some of its layers' weights in the on-chip tier
(the capacity) and streams the others from main memory. On chip it holds the resident weights plus
every activation and buffer of the stage; a resident layer takes its on-chip latency, a streamed
one its streaming latency. Which weights stay is part of the solution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .graph import LayerGraph, Link
from .problem import MemoryModel, Problem

__all__ = [
    "Residency",
    "TensorParallel",
    "allreduce_bytes_of",
    "best_residency",
    "default_allreduce_bytes",
    "residency_stage_time",
    "resident_stage_memory",
    "tp_dp",
    "tp_stage_memory",
    "tp_stage_time",
    "tp_time_matrix",
]

_ALLREDUCES_PER_KIND = {"block": 2, "attention": 1, "mlp": 1, "moe": 1, "embed": 1, "head": 1}


def default_allreduce_bytes(kinds: list[str | None], activation_bytes: np.ndarray) -> np.ndarray:
    """Bytes all-reduced per forward by each layer when tensor-parallel (Megatron style): two
    per transformer block (after attention, after the MLP), one per attention, MLP, embedding or
    head operator, none for norms; an unknown kind (a chain JSON layer) counts one."""
    counts = [_ALLREDUCES_PER_KIND.get(k or "", 0 if k == "norm" else 1) for k in kinds]
    return np.asarray(counts, dtype=np.int64) * activation_bytes


@dataclass(frozen=True, eq=False)
class TensorParallel:
    """The tensor-parallel freedom added to a Problem."""

    degrees: tuple[int, ...]
    devices_per_node: int
    allreduce_bytes: np.ndarray
    link: Link
    """The intra-node link the all-reduces use."""

    def __post_init__(self) -> None:
        if isinstance(self.devices_per_node, bool) or not isinstance(self.devices_per_node, int) \
                or self.devices_per_node < 1:
            raise InvalidInputError(f"--devices-per-node: must be a whole number >= 1, got "
                                    f"{self.devices_per_node!r}")
        if not self.degrees or any(not isinstance(t, int) or t < 1 for t in self.degrees):
            raise InvalidInputError(f"--tp: degrees must be whole numbers >= 1, got {self.degrees!r}")
        if 1 not in self.degrees:
            raise InvalidInputError(f"--tp: must include 1 (a stage on one device), got {self.degrees}")
        big = [t for t in self.degrees if t > self.devices_per_node]
        if big:
            raise InvalidInputError(f"--tp: degree {big[0]} exceeds the {self.devices_per_node} "
                                    "devices of a node")
        object.__setattr__(self, "degrees", tuple(sorted(set(self.degrees))))

    def allreduce_s(self, s: int, e: int, t: int) -> float:
        if t == 1:
            return 0.0
        arb = self.allreduce_bytes[s:e]
        count = int(np.count_nonzero(arb))
        return float(2 * (t - 1) / t * arb.sum() / self.link.bandwidth_bytes_per_s
                     + 2 * (t - 1) * self.link.latency_s * count)


def tp_stage_time(problem: Problem, tp: TensorParallel, s: int, e: int, t: int) -> float:
    """Stage [s, e) on t devices: compute / t + all-reduces + inbound transfer."""
    if t == 1:
        return problem.stage_time(s, e)  # bit-identical to the canonical problem
    compute = float(problem.prefix_latency[e] - problem.prefix_latency[s])
    return compute / t + tp.allreduce_s(s, e, t) + float(problem.transfer_s[s])


def tp_stage_memory(problem: Problem, s: int, e: int, t: int) -> int:
    """Bytes per device of stage [s, e) split t ways (weights and buffers split, activations not)."""
    if t == 1:
        return problem.stage_memory(s, e)
    w = problem.weight_bytes[s:e]
    a = problem.activation_bytes[s:e]
    b = problem.buffer_bytes[s:e]
    if problem.memory_model is MemoryModel.ADDITIVE:
        return int(math.ceil(w.sum() / t) + a.sum() + math.ceil(b.sum() / t))
    inputs = np.concatenate(([problem.input_bytes], problem.activation_bytes[:-1]))[s:e]
    return int(math.ceil(w.sum() / t) + np.max(inputs + a + np.ceil(b / t)))


@dataclass(frozen=True, eq=False)
class Residency:
    """Tiered residency: per layer, its latency with weights on chip and when streamed."""

    resident_latency_s: np.ndarray
    streamed_latency_s: np.ndarray

    def __post_init__(self) -> None:
        res = np.asarray(self.resident_latency_s, dtype=np.float64)
        stream = np.asarray(self.streamed_latency_s, dtype=np.float64)
        if res.shape != stream.shape or np.any(stream < res - 1e-15) or np.any(res < 0):
            raise InvalidInputError("residency: streamed latencies must be >= resident ones, "
                                    "one of each per layer")
        object.__setattr__(self, "resident_latency_s", res)
        object.__setattr__(self, "streamed_latency_s", stream)


def resident_stage_memory(problem: Problem, s: int, e: int, resident: Sequence[bool] | np.ndarray) -> int:
    """On-chip bytes of stage [s, e) whose layers ``resident`` (one flag per layer of the stage)
    keep their weights: those weights + every activation and buffer (additive memory)."""
    mask = np.asarray(resident, dtype=bool)
    return int((problem.weight_bytes[s:e] * mask).sum() + problem.activation_bytes[s:e].sum()
               + problem.buffer_bytes[s:e].sum())


def residency_stage_time(problem: Problem, residency: Residency, s: int, e: int,
                         resident: Sequence[bool] | np.ndarray) -> tuple[float, int]:
    """(time, on-chip bytes) of stage [s, e) with the given layers' weights resident."""
    mask = np.asarray(resident, dtype=bool)
    lat = np.where(mask, residency.resident_latency_s[s:e], residency.streamed_latency_s[s:e])
    return float(lat.sum() + problem.transfer_s[s]), resident_stage_memory(problem, s, e, mask)


def best_residency(problem: Problem, residency: Residency, s: int, e: int
                   ) -> tuple[float, tuple[bool, ...]] | None:
    """Exact best residency of one stage by enumeration (only for short stages: tests)."""
    best: tuple[float, tuple[bool, ...]] | None = None
    for choice in itertools.product((True, False), repeat=e - s):
        time, mem = residency_stage_time(problem, residency, s, e, choice)
        if mem <= problem.capacity_bytes and (best is None or time < best[0]):
            best = (time, choice)
    return best


def allreduce_bytes_of(graph: LayerGraph, problem: Problem) -> np.ndarray:
    """default_allreduce_bytes for a problem lowered from ``graph`` (kinds from its nodes)."""
    kinds = [graph.graph.nodes[n].get("kind") for n in graph.order()]
    return default_allreduce_bytes(kinds, problem.activation_bytes)


def tp_time_matrix(problem: Problem, tp: TensorParallel, t: int) -> np.ndarray:
    """T_t[s, e] for every stage [s, e) on t devices; +inf where empty or over capacity."""
    n = problem.n
    s_idx = np.arange(n)[:, None]
    e_idx = np.arange(n + 1)[None, :]
    valid = e_idx > s_idx
    if t == 1:
        times = (problem.prefix_latency[None, :] - problem.prefix_latency[:n, None]) \
            + problem.transfer_s[:, None]
        fits = e_idx <= problem.capacity_reach[:, None]
        return np.where(valid & fits, times, np.inf)
    pre_c = problem.prefix_latency
    pre_ar = np.concatenate(([0], np.cumsum(tp.allreduce_bytes)))
    pre_cnt = np.concatenate(([0], np.cumsum(tp.allreduce_bytes > 0)))
    compute = (pre_c[None, :] - pre_c[:n, None]) / t
    ar = (2 * (t - 1) / t * (pre_ar[None, :] - pre_ar[:n, None]) / tp.link.bandwidth_bytes_per_s
          + 2 * (t - 1) * tp.link.latency_s * (pre_cnt[None, :] - pre_cnt[:n, None]))
    times = compute + ar + problem.transfer_s[:, None]
    memory = np.full((n, n + 1), np.iinfo(np.int64).max, dtype=np.int64)
    for s in range(n):
        for e in range(s + 1, n + 1):
            memory[s, e] = tp_stage_memory(problem, s, e, t)
            if memory[s, e] > problem.capacity_bytes:
                break  # memory only grows with e
    fits = memory <= problem.capacity_bytes
    return np.where(valid & fits, times, np.inf)


def tp_dp(problem: Problem, tp: TensorParallel
          ) -> tuple[float, tuple[int, ...], tuple[int, ...]] | None:
    """Exact DP: f[d][e] = best bottleneck covering [0, e) with at most d devices; each stage
    picks its start s and degree t. Returns (bottleneck, bounds, degree per stage) or None."""
    n, k = problem.n, problem.max_stages
    mats = {t: tp_time_matrix(problem, tp, t) for t in tp.degrees if t <= k}
    f = np.full((k + 1, n + 1), np.inf)
    f[:, 0] = 0.0
    arg_s = np.full((k + 1, n + 1), -1, dtype=np.int64)
    arg_t = np.zeros((k + 1, n + 1), dtype=np.int64)
    for d in range(1, k + 1):
        best = f[d - 1].copy()
        for t, mat in mats.items():
            if t > d:
                continue
            cost = np.maximum(f[d - t][:n, None], mat)
            s_best = np.argmin(cost, axis=0)
            value = cost[s_best, np.arange(n + 1)]
            better = value < best
            best = np.where(better, value, best)
            arg_s[d] = np.where(better, s_best, arg_s[d])
            arg_t[d] = np.where(better, t, arg_t[d])
        f[d] = best
        f[d, 0] = 0.0
    if not np.isfinite(f[k, n]):
        return None
    bounds, degrees = [n], []
    d, e = k, n
    while e > 0:
        while arg_s[d, e] < 0:  # f[d][e] came from f[d-1][e]
            d -= 1
        s, t = int(arg_s[d, e]), int(arg_t[d, e])
        bounds.append(s)
        degrees.append(t)
        d, e = d - t, s
    return float(f[k, n]), tuple(reversed(bounds)), tuple(reversed(degrees))
