"""The canonical problem as plain arrays (design.md), lowered from a LayerGraph.

Stages are half-open index ranges [s, e) over the layers in execution order:
- memory, additive (the paper's formula): sum over the stage of w + a + b;
- memory, peak: sum of w + max over the stage's layers of (input + a + b), the input of
  layer i being the bytes that flow into it (``input_bytes`` for layer 0);
- time: sum of t, plus the inbound transfer when the stage does not start at layer 0 and a
  link is given (cut bytes / bandwidth + link latency).

Byte quantities are int64 so capacity checks are exact; times are float64 and every method
evaluates a stage's time through :meth:`Problem.stage_time`, so equal partitions give
bit-identical objectives.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Literal

import numpy as np

from .errors import InvalidInputError
from .graph import MAX_BYTES, LayerGraph, Link

__all__ = ["MemoryModel", "Problem"]


class MemoryModel(str, Enum):
    """How a stage's memory is counted."""

    ADDITIVE = "additive"
    PEAK = "peak"

    def __str__(self) -> str:
        return self.value


def _as_array(values: Any, name: str, dtype: type) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D list of numbers")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        raise InvalidInputError(f"{name}[{bad[0]}]: must be a finite number >= 0, got {arr[bad[0]]}")
    if dtype is np.int64:
        big = np.flatnonzero(arr >= MAX_BYTES)
        if big.size:
            raise InvalidInputError(f"{name}[{big[0]}]: {arr[big[0]]:.3g} bytes is beyond the 2^62 "
                                    "this tool counts")
        return np.rint(arr).astype(np.int64)
    return arr


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Problem:
    """A chain partitioning instance: every method sees only this."""

    names: tuple[str, ...]
    weight_bytes: np.ndarray
    activation_bytes: np.ndarray
    buffer_bytes: np.ndarray
    latency_s: np.ndarray
    capacity_bytes: int
    max_stages: int
    memory_model: MemoryModel = MemoryModel.ADDITIVE
    input_bytes: int = 0
    link: Link | None = None
    cut_bytes: np.ndarray = field(default=None)  # type: ignore[arg-type]  # filled in
    """Bytes that cross the boundary before layer p (index 0 unused); default a[p-1]."""

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise InvalidInputError("layers: a problem needs at least one layer")
        if len(set(self.names)) != n:
            raise InvalidInputError("layers: layer names must be unique")
        put = object.__setattr__
        put(self, "weight_bytes", _frozen(_as_array(self.weight_bytes, "weight_bytes", np.int64)))
        put(self, "activation_bytes",
            _frozen(_as_array(self.activation_bytes, "activation_bytes", np.int64)))
        put(self, "buffer_bytes", _frozen(_as_array(self.buffer_bytes, "buffer_bytes", np.int64)))
        put(self, "latency_s", _frozen(_as_array(self.latency_s, "latency_s", np.float64)))
        for name in ("weight_bytes", "activation_bytes", "buffer_bytes", "latency_s"):
            if len(getattr(self, name)) != n:
                raise InvalidInputError(f"{name}: has {len(getattr(self, name))} entries, "
                                        f"expected {n} (one per layer)")
        if isinstance(self.capacity_bytes, bool) or not isinstance(self.capacity_bytes, int | float) \
                or self.capacity_bytes <= 0:
            raise InvalidInputError(f"capacity: must be a positive byte count, "
                                    f"got {self.capacity_bytes!r}")
        put(self, "capacity_bytes", int(self.capacity_bytes))
        if isinstance(self.max_stages, bool) or not isinstance(self.max_stages, int) \
                or self.max_stages < 1:
            raise InvalidInputError(f"devices: must be a whole number >= 1, got {self.max_stages!r}")
        put(self, "memory_model", MemoryModel(self.memory_model))
        if self.input_bytes < 0:
            raise InvalidInputError(f"input_bytes: must be >= 0, got {self.input_bytes!r}")
        put(self, "input_bytes", int(self.input_bytes))
        if self.cut_bytes is None:
            cut = np.concatenate(([self.input_bytes], self.activation_bytes[:-1])).astype(np.int64)
        else:
            cut = _as_array(self.cut_bytes, "cut_bytes", np.int64)
            if len(cut) != n:
                raise InvalidInputError(f"cut_bytes: has {len(cut)} entries, expected {n}")
        put(self, "cut_bytes", _frozen(cut))
        total = int(self.weight_bytes.sum() + self.activation_bytes.sum() + self.buffer_bytes.sum()
                    + self.input_bytes)
        if total >= MAX_BYTES or self.capacity_bytes >= MAX_BYTES:
            raise InvalidInputError(f"capacity/layers: byte counts beyond 2^62 (model {total}, "
                                    f"capacity {self.capacity_bytes}) would overflow int64 sums")

    # ----- sizes and derived arrays -------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.names)

    @cached_property
    def prefix_latency(self) -> np.ndarray:
        return _frozen(np.concatenate(([0.0], np.cumsum(self.latency_s))))

    @cached_property
    def transfer_s(self) -> np.ndarray:
        """Inbound transfer time of a stage starting at p (0 for p = 0 or without a link)."""
        x = np.zeros(self.n)
        if self.link is not None and self.n > 1:
            x[1:] = self.cut_bytes[1:] / self.link.bandwidth_bytes_per_s + self.link.latency_s
        return _frozen(x)

    @cached_property
    def _prefix_weight(self) -> np.ndarray:
        return _frozen(np.concatenate(([0], np.cumsum(self.weight_bytes))).astype(np.int64))

    @cached_property
    def _prefix_additive(self) -> np.ndarray:
        per_layer = self.weight_bytes + self.activation_bytes + self.buffer_bytes
        return _frozen(np.concatenate(([0], np.cumsum(per_layer))).astype(np.int64))

    @cached_property
    def layer_peak_bytes(self) -> np.ndarray:
        """Per layer: its input + its output + its buffer (the peak model's live tensors)."""
        inputs = np.concatenate(([self.input_bytes], self.activation_bytes[:-1]))
        return _frozen((inputs + self.activation_bytes + self.buffer_bytes).astype(np.int64))

    # ----- stage evaluation (the single definition every method uses) ---------------------
    def _check_range(self, s: int, e: int) -> None:
        if not 0 <= s < e <= self.n:
            raise IndexError(f"stage [{s}, {e}) is not a non-empty range of 0..{self.n}")

    def stage_time(self, s: int, e: int) -> float:
        """Latency of the stage [s, e): its layers' time plus its inbound transfer."""
        self._check_range(s, e)
        pre = self.prefix_latency
        return float((pre[e] - pre[s]) + self.transfer_s[s])

    def stage_memory(self, s: int, e: int) -> int:
        """Bytes the stage [s, e) needs under the problem's memory model."""
        self._check_range(s, e)
        if self.memory_model is MemoryModel.ADDITIVE:
            return int(self._prefix_additive[e] - self._prefix_additive[s])
        weights = self._prefix_weight[e] - self._prefix_weight[s]
        return int(weights + self.layer_peak_bytes[s:e].max())

    def stage_times(self, bounds: tuple[int, ...] | list[int]) -> list[float]:
        return [self.stage_time(s, e) for s, e in itertools.pairwise(bounds)]

    def objective(self, bounds: tuple[int, ...] | list[int]) -> float:
        """The bottleneck: the largest stage time of a partition."""
        return max(self.stage_times(bounds))

    # ----- reach arrays used by the exact methods -----------------------------------------
    @cached_property
    def capacity_reach(self) -> np.ndarray:
        """For each start s, the largest end e such that [s, e) fits; e == s if layer s alone
        does not fit. Nondecreasing in s, since dropping a layer never adds memory."""
        n, cap = self.n, self.capacity_bytes
        if self.memory_model is MemoryModel.ADDITIVE:
            pre = self._prefix_additive
            reach = np.searchsorted(pre, pre[:-1] + cap, side="right") - 1
            return _frozen(np.maximum(reach, np.arange(n)).astype(np.int64))
        # Peak: two pointers with a monotone deque for the sliding maximum.
        pre_w, peak = self._prefix_weight.tolist(), self.layer_peak_bytes.tolist()
        out = [0] * n
        window: list[int] = []  # indices with decreasing peak, window[head:] live
        head, e = 0, 0
        for s in range(n):
            if e < s:
                e = s
            while head < len(window) and window[head] < s:
                head += 1
            while e < n:
                cand_max = peak[e] if head == len(window) else max(peak[window[head]], peak[e])
                if pre_w[e + 1] - pre_w[s] + cand_max > cap:
                    break
                while len(window) > head and peak[window[-1]] <= peak[e]:
                    window.pop()
                window.append(e)
                e += 1
            out[s] = e
        return _frozen(np.array(out, dtype=np.int64))

    def time_reach(self, z: float, *, strict: bool = False) -> np.ndarray:
        """For each start s, the largest end e with stage_time(s, e) <= z (< z when strict);
        e == s when no stage starting at s qualifies. Exact against :meth:`stage_time`."""
        pre, x, n = self.prefix_latency, self.transfer_s, self.n
        starts = np.arange(n)
        target = z + pre[:-1] - x
        side: Literal["left", "right"] = "left" if strict else "right"
        e = np.searchsorted(pre, target, side=side) - 1
        e = np.clip(e, starts, n)

        def over(ends: np.ndarray) -> np.ndarray:
            t = (pre[ends] - pre[starts]) + x
            return t >= z if strict else t > z

        # The shifted comparison can differ from the stage-time formula by an ulp: repair.
        while True:
            bad = (e > starts) & over(e)
            if not bad.any():
                break
            e = np.where(bad, e - 1, e)
        while True:
            nxt = np.minimum(e + 1, n)
            good = (e < n) & ~over(nxt)
            if not good.any():
                break
            e = np.where(good, nxt, e)
        return e

    # ----- construction and round trip ----------------------------------------------------
    @classmethod
    def from_graph(
        cls,
        graph: LayerGraph,
        capacity_bytes: int,
        max_stages: int,
        memory_model: MemoryModel | str = MemoryModel.ADDITIVE,
    ) -> Problem:
        """Lower a LayerGraph: layers in topological order, cut bytes from the edges that cross
        each boundary (for a chain, the previous layer's activation)."""
        graph.validate()
        order = graph.order()
        position = {name: i for i, name in enumerate(order)}
        nodes = graph.graph.nodes
        cut = np.zeros(len(order), dtype=np.int64)
        cut[0] = graph.input_bytes
        diff = np.zeros(len(order) + 1, dtype=np.int64)
        for u, v, data in graph.graph.edges(data=True):
            nbytes = int(data.get("bytes", nodes[u].get("activation_bytes", 0)))
            # The edge crosses every boundary p with position[u] < p <= position[v].
            diff[position[u] + 1] += nbytes
            diff[position[v] + 1] -= nbytes
        cut[1:] = np.cumsum(diff)[1:len(order)]
        return cls(
            names=tuple(order),
            weight_bytes=np.array([nodes[n]["weight_bytes"] for n in order], dtype=np.float64),
            activation_bytes=np.array([nodes[n]["activation_bytes"] for n in order],
                                      dtype=np.float64),
            buffer_bytes=np.array([nodes[n].get("buffer_bytes", 0) for n in order],
                                  dtype=np.float64),
            latency_s=np.array([nodes[n]["latency_s"] for n in order], dtype=np.float64),
            capacity_bytes=capacity_bytes,
            max_stages=max_stages,
            memory_model=MemoryModel(memory_model),
            input_bytes=graph.input_bytes,
            link=graph.link,
            cut_bytes=cut,
        )

    def replace(self, **changes: Any) -> Problem:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields.update(changes)
        return Problem(**fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "weight_bytes": self.weight_bytes.tolist(),
            "activation_bytes": self.activation_bytes.tolist(),
            "buffer_bytes": self.buffer_bytes.tolist(),
            "latency_s": self.latency_s.tolist(),
            "capacity_bytes": self.capacity_bytes,
            "max_stages": self.max_stages,
            "memory_model": self.memory_model.value,
            "input_bytes": self.input_bytes,
            "link": None if self.link is None else self.link.to_dict(),
            "cut_bytes": self.cut_bytes.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        fields = dict(data)
        fields["names"] = tuple(fields["names"])
        if fields.get("link") is not None:
            fields["link"] = Link(**fields["link"])
        return cls(**fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
