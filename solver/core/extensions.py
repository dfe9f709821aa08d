"""Typed extensions of the canonical problem. Each adds one freedom to a Problem; switched off
(the field left None), the problem is the canonical one exactly.

Tensor parallelism (``TensorParallel``): a stage [s, e) may span t devices of one node (t among
the allowed degrees, t <= devices per node). Per device it holds W/t weights, the full
activations (each device keeps the all-reduced output) and B/t buffers (peak model: W/t + the
largest input + output + buffer/t). Its time is (C - F)/t + F + the all-reduces + its inbound
transfer, where F is the layers' fixed time (kernel overheads, which splitting does not
shorten). Each all-reduce of b bytes over t devices costs 2 (t - 1) / t x b / bandwidth (ring
and tree alike move that much per device) plus its steps times the link latency: 2 (t - 1)
steps for a ring, 2 ceil(log2 t) for a tree. A layer does as many all-reduces as its
``allreduce_count`` says (a transformer block two: after attention and after the MLP), so the
time of a block does not depend on the granularity it is cut at. The stages use at most K
devices in all. The transfer between stages uses the problem's link (where the devices sit is
not modelled).

Tiered residency (``Residency``): a stage keeps some of its layers' weights in the on-chip tier
(the capacity) and streams the others from main memory. On chip it holds the resident weights plus
every activation and buffer of the stage; a resident layer takes its on-chip latency, a streamed
one its streaming latency. Which weights stay is part of the solution. Additive memory only.

The stage formulas here are the only definitions: the methods, the checks and the plan builder
all evaluate a stage through them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInputError
from .link import Link, check_whole

if TYPE_CHECKING:
    from .problem import Problem

__all__ = [
    "ALLREDUCE_ALGORITHMS",
    "Extension",
    "Residency",
    "TensorParallel",
    "allreduce_counts",
    "best_residency",
    "default_allreduce_bytes",
    "residency_stage_time",
    "resident_stage_memory",
    "stage_time_matrix",
    "tp_stage_memory",
    "tp_stage_time",
]


class Extension(str, Enum):
    """The extensions a Problem may carry; a method declares which it solves."""

    TENSOR_PARALLEL = "tensor_parallel"
    RESIDENCY = "residency"
    CLUSTER = "cluster"
    """Devices of several kinds in nodes, the stages on the ranks in order."""
    FREE_PLACEMENT = "free_placement"
    """A cluster whose devices the solver chooses, and their order."""
    CUTS = "cuts"
    """Stages may begin only at some boundaries (an engine's layout keeps layers together)."""
    TRAINING = "training"
    """A training step: backward costs, and memory that depends on a stage's position."""

    def __str__(self) -> str:
        return self.value


_ALLREDUCES_PER_KIND = {"block": 2, "attention": 1, "mlp": 1, "moe": 1, "embed": 1, "head": 1}
ALLREDUCE_ALGORITHMS = ("ring", "tree")


def allreduce_counts(kinds: Sequence[str | None]) -> np.ndarray:
    """All-reduces per forward of each layer when tensor-parallel (Megatron style): two per
    transformer block (after attention, after the MLP), one per attention, MLP, embedding or
    head operator, none for norms; an unknown kind (a chain JSON layer) counts one."""
    return np.asarray([_ALLREDUCES_PER_KIND.get(k or "", 0 if k == "norm" else 1) for k in kinds],
                      dtype=np.int64)


def default_allreduce_bytes(kinds: Sequence[str | None], activation_bytes: np.ndarray) -> np.ndarray:
    """Bytes all-reduced per forward by each layer: its output once per all-reduce it does
    (``allreduce_counts``)."""
    return allreduce_counts(kinds) * np.asarray(activation_bytes, dtype=np.int64)


def _steps(t: int, algorithm: str) -> int:
    """Latency steps of one all-reduce over t devices."""
    if t <= 1:
        return 0
    return 2 * (t - 1) if algorithm == "ring" else 2 * math.ceil(math.log2(t))


@dataclass(frozen=True, eq=False)
class TensorParallel:
    """The tensor-parallel freedom: the degrees a stage may use, and what their all-reduces cost."""

    degrees: tuple[int, ...]
    devices_per_node: int
    allreduce_bytes: np.ndarray
    """Per layer: bytes all-reduced per forward when the layer is split (0: none)."""
    link: Link
    """The intra-node link the all-reduces use."""
    uniform: bool = False
    """Every stage uses the same degree (engines take one TP size for the whole pipeline)."""
    allreduce_count: np.ndarray | None = None
    """Per layer: how many all-reduces carry its bytes (None: one per layer with bytes)."""
    fixed_s: np.ndarray | None = None
    """Per layer: seconds of its time that splitting does not shorten (None: none)."""
    algorithm: str = "ring"
    """ring or tree: how many latency steps an all-reduce takes."""

    def __post_init__(self) -> None:
        per_node = check_whole(self.devices_per_node, "devices_per_node", 1)
        if not self.degrees or isinstance(self.degrees, str):
            raise InvalidInputError(f"must be whole numbers >= 1, got {self.degrees!r}",
                                    field="tp_degrees")
        degrees = [check_whole(t, "tp_degrees", 1) for t in self.degrees]
        big = [t for t in degrees if t > per_node]
        if big:
            raise InvalidInputError(f"degree {big[0]} exceeds the {per_node} devices of a node",
                                    field="tp_degrees")
        if not isinstance(self.link, Link):
            raise InvalidInputError(f"expected a Link, got {self.link!r}", field="tp_link")
        try:
            arb = np.asarray(self.allreduce_bytes, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("expected one byte count per layer",
                                    field="allreduce_bytes") from None
        if arb.ndim != 1 or np.any(~np.isfinite(arb)) or np.any(arb < 0):
            raise InvalidInputError("expected one byte count >= 0 per layer",
                                    field="allreduce_bytes")
        arb_int = np.rint(arb).astype(np.int64)
        arb_int.setflags(write=False)
        if self.algorithm not in ALLREDUCE_ALGORITHMS:
            raise InvalidInputError(f"expected {' or '.join(ALLREDUCE_ALGORITHMS)}, got "
                                    f"{self.algorithm!r}", field="allreduce")
        count = (arb_int > 0).astype(np.int64) if self.allreduce_count is None \
            else self._per_layer(self.allreduce_count, "allreduce_count", len(arb_int))
        fixed = np.zeros(len(arb_int)) if self.fixed_s is None \
            else self._per_layer(self.fixed_s, "fixed_s", len(arb_int)).astype(np.float64)
        put = object.__setattr__
        put(self, "degrees", tuple(sorted(set(degrees))))
        put(self, "devices_per_node", per_node)
        put(self, "allreduce_bytes", arb_int)
        for name, value in (("allreduce_count", count.astype(np.int64)), ("fixed_s", fixed)):
            value.setflags(write=False)
            put(self, name, value)

    @staticmethod
    def _per_layer(values: object, name: str, n: int) -> np.ndarray:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("expected one number per layer", field=name) from None
        if arr.shape != (n,) or np.any(~np.isfinite(arr)) or np.any(arr < 0):
            raise InvalidInputError(f"expected {n} numbers >= 0 (one per layer)", field=name)
        return arr

    @property
    def steps(self) -> dict[int, int]:
        """Latency steps of one all-reduce, per allowed degree."""
        return {t: _steps(t, self.algorithm) for t in self.degrees}

    def allreduce_s(self, s: int, e: int, t: int) -> float:
        """All-reduce time of the layers [s, e) split t ways."""
        if t == 1:
            return 0.0
        assert self.allreduce_count is not None
        count = int(self.allreduce_count[s:e].sum())
        return float(2 * (t - 1) / t * self.allreduce_bytes[s:e].sum()
                     / self.link.bandwidth_bytes_per_s
                     + _steps(t, self.algorithm) * self.link.latency_s * count)

    def to_dict(self) -> dict[str, object]:
        assert self.allreduce_count is not None and self.fixed_s is not None
        return {"degrees": list(self.degrees), "devices_per_node": self.devices_per_node,
                "allreduce_bytes": self.allreduce_bytes.tolist(), "link": self.link.to_dict(),
                "uniform": self.uniform, "allreduce_count": self.allreduce_count.tolist(),
                "fixed_s": self.fixed_s.tolist(), "algorithm": self.algorithm}


@dataclass(frozen=True, eq=False)
class Residency:
    """Tiered residency: per layer, its latency with weights on chip and when streamed."""

    resident_latency_s: np.ndarray
    streamed_latency_s: np.ndarray

    def __post_init__(self) -> None:
        try:
            res = np.asarray(self.resident_latency_s, dtype=np.float64)
            stream = np.asarray(self.streamed_latency_s, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("latencies must be numbers", field="residency") from None
        if res.ndim != 1 or res.shape != stream.shape or np.any(~np.isfinite(res)) \
                or np.any(~np.isfinite(stream)) or np.any(res < 0) \
                or np.any(stream < res - 1e-15) or not math.isfinite(sum(stream.tolist())):
            raise InvalidInputError("streamed latencies must be >= resident ones >= 0, one of "
                                    "each per layer", field="residency")
        res.setflags(write=False)
        stream.setflags(write=False)
        object.__setattr__(self, "resident_latency_s", res)
        object.__setattr__(self, "streamed_latency_s", stream)


# ----- tensor parallelism -----------------------------------------------------------------------
def _tp(problem: Problem) -> TensorParallel:
    if problem.tensor_parallel is None:
        raise InvalidInputError("the problem has no tensor-parallel extension",
                                field="tensor_parallel")
    return problem.tensor_parallel


def tp_stage_time(problem: Problem, s: int, e: int, t: int) -> float:
    """Stage [s, e) on t devices: (compute - fixed) / t + fixed + all-reduces + inbound transfer."""
    if t == 1:
        return problem.stage_time(s, e)  # bit-identical to the canonical problem
    tp = _tp(problem)
    assert tp.fixed_s is not None
    compute = float(problem.prefix_latency[e] - problem.prefix_latency[s])
    fixed = float(tp.fixed_s[s:e].sum())
    return (compute - fixed) / t + fixed + tp.allreduce_s(s, e, t) + float(problem.transfer_s[s])


def tp_stage_memory(problem: Problem, s: int, e: int, t: int) -> int:
    """Bytes per device of stage [s, e) split t ways (weights and buffers split, activations not)."""
    if t == 1:
        return problem.stage_memory(s, e)
    w = problem.weight_bytes[s:e]
    a = problem.activation_bytes[s:e]
    b = problem.buffer_bytes[s:e]
    if problem.memory_model.value == "additive":
        return int(math.ceil(w.sum() / t) + a.sum() + math.ceil(b.sum() / t))
    inputs = np.concatenate(([problem.input_bytes], problem.activation_bytes[:-1]))[s:e]
    return int(math.ceil(w.sum() / t) + np.max(inputs + a + np.ceil(b / t)))


def stage_time_matrix(problem: Problem, t: int = 1) -> np.ndarray:
    """T_t[s, e] for every stage [s, e) on t devices; +inf where empty or over capacity.
    t = 1 is the canonical problem's matrix (the DP's)."""
    n = problem.n
    s_idx = np.arange(n)[:, None]
    e_idx = np.arange(n + 1)[None, :]
    valid = e_idx > s_idx
    pre = problem.prefix_latency
    if problem.allowed_cuts is not None:  # a stage begins and ends only where allowed
        valid = valid & problem.allowed_cuts[None, :] & problem.allowed_cuts[:n, None]
    if t == 1:
        times = (pre[None, :] - pre[:n, None]) + problem.transfer_s[:, None]
        fits = e_idx <= problem.capacity_reach[:, None]
        return np.where(valid & fits, times, np.inf)
    tp = _tp(problem)
    assert tp.allreduce_count is not None and tp.fixed_s is not None
    pre_ar = np.concatenate(([0], np.cumsum(tp.allreduce_bytes)))
    pre_cnt = np.concatenate(([0], np.cumsum(tp.allreduce_count)))
    pre_fix = np.concatenate(([0.0], np.cumsum(tp.fixed_s)))
    fixed = pre_fix[None, :] - pre_fix[:n, None]
    compute = (pre[None, :] - pre[:n, None] - fixed) / t + fixed
    ar = (2 * (t - 1) / t * (pre_ar[None, :] - pre_ar[:n, None]) / tp.link.bandwidth_bytes_per_s
          + _steps(t, tp.algorithm) * tp.link.latency_s * (pre_cnt[None, :] - pre_cnt[:n, None]))
    times = compute + ar + problem.transfer_s[:, None]
    memory = np.full((n, n + 1), np.iinfo(np.int64).max, dtype=np.int64)
    for s in range(n):
        for e in range(s + 1, n + 1):
            memory[s, e] = tp_stage_memory(problem, s, e, t)
            if memory[s, e] > problem.capacity_bytes:
                break  # memory only grows with e
    fits = memory <= problem.capacity_bytes
    return np.where(valid & fits, times, np.inf)


# ----- tiered residency -------------------------------------------------------------------------
def _res(problem: Problem) -> Residency:
    if problem.residency is None:
        raise InvalidInputError("the problem has no residency extension", field="residency")
    return problem.residency


def resident_stage_memory(problem: Problem, s: int, e: int,
                          resident: Sequence[bool] | np.ndarray) -> int:
    """On-chip bytes of stage [s, e) whose layers ``resident`` (one flag per layer of the stage)
    keep their weights: those weights + every activation and buffer (additive memory)."""
    mask = np.asarray(resident, dtype=bool)
    return int((problem.weight_bytes[s:e] * mask).sum() + problem.activation_bytes[s:e].sum()
               + problem.buffer_bytes[s:e].sum())


def residency_stage_time(problem: Problem, s: int, e: int,
                         resident: Sequence[bool] | np.ndarray) -> float:
    """Time of stage [s, e) with the given layers' weights resident (the rest streamed)."""
    res = _res(problem)
    mask = np.asarray(resident, dtype=bool)
    lat = np.where(mask, res.resident_latency_s[s:e], res.streamed_latency_s[s:e])
    return float(lat.sum() + problem.transfer_s[s])


def best_residency(problem: Problem, s: int, e: int) -> tuple[float, tuple[bool, ...]] | None:
    """Exact best residency of one stage by enumeration (only for short stages: tests)."""
    best: tuple[float, tuple[bool, ...]] | None = None
    for choice in itertools.product((True, False), repeat=e - s):
        if resident_stage_memory(problem, s, e, choice) > problem.capacity_bytes:
            continue
        time = residency_stage_time(problem, s, e, choice)
        if best is None or time < best[0]:
            best = (time, choice)
    return best
