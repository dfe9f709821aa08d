"""The canonical problem as plain arrays (README: "The problem every method solves").

Stages are half-open index ranges [s, e) over the layers in execution order:
- memory, additive (the paper's formula): sum over the stage of w + a + b;
- memory, peak: sum of w + max over the stage's layers of (input + a + b), the input of
  layer i being the bytes that flow into it (``input_bytes`` for layer 0);
- time: sum of t, plus the inbound transfer when the stage does not start at layer 0 and a
  link is given (cut bytes / bandwidth + link latency).

Byte quantities are int64 so capacity checks are exact; times are float64 and every method
evaluates a stage's time through :meth:`Problem.stage_time`, so equal partitions give
bit-identical objectives.

Typed extensions (solver/core/extensions.py) add freedoms to the canonical problem: per-stage
tensor-parallel degrees (``tensor_parallel``) and tiered weight residency (``residency``).
Left None, the problem is the canonical one; :attr:`Problem.extensions` says which are on, and a
method's registry entry says which it solves.

``kv_bytes_per_token`` is data, not a freedom: what one token of KV cache costs each layer. It
is no part of a stage's memory; it measures what a stage's free memory holds
(solver/core/kv.py), which the serving objective (solver/algorithms/kv.py)
maximises.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Literal

import numpy as np

from .errors import InvalidInputError
from .extensions import Extension, Residency, TensorParallel
from .fleet import Fleet
from .link import MAX_BYTES, MAX_SECONDS, Link, check_whole
from .training import Training

__all__ = ["MemoryModel", "Problem"]


class MemoryModel(str, Enum):
    """How a stage's memory is counted."""

    ADDITIVE = "additive"
    PEAK = "peak"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, value: MemoryModel | str) -> MemoryModel:
        """``value`` as a MemoryModel; InvalidInputError naming the known ones otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise InvalidInputError(f"expected additive or peak, got {value!r}",
                                    field="memory_model") from None


def _as_array(values: Any, name: str, dtype: type) -> np.ndarray:
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError("expected a 1-D list of numbers", field=name) from None
    if arr.ndim != 1:
        raise InvalidInputError("expected a 1-D list of numbers", field=name)
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        raise InvalidInputError(f"must be a finite number >= 0, got {arr[bad[0]]}",
                                field=f"{name}[{bad[0]}]")
    if dtype is np.int64:
        big = np.flatnonzero(arr >= MAX_BYTES)
        if big.size:
            raise InvalidInputError(f"{arr[big[0]]:.3g} bytes is beyond the 2^62 this tool counts",
                                    field=f"{name}[{big[0]}]")
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
    tensor_parallel: TensorParallel | None = None
    """Extension: a stage may span several devices of one node."""
    residency: Residency | None = None
    """Extension: which weights stay in the capacity tier is part of the solution."""
    fleet: Fleet | None = None
    """Extension: the cluster the stages are placed on (its kinds' capacities and times replace
    ``capacity_bytes`` and ``latency_s``, its links ``link``, for each stage)."""
    allowed_cuts: np.ndarray | None = None
    """Extension: per boundary position 0..n, whether a stage may begin (and the one before it
    end) there; 0 and n always may. An engine's layout keeps the embedding with the first
    block, say. None: every boundary."""
    training: Training | None = None
    """Extension: a training step under a pipeline schedule (backward costs, stashes, optimizer
    state; a stage's memory depends on its position: solver/core/training.py)."""
    kv_bytes_per_token: np.ndarray | None = None
    """Per layer: KV-cache bytes one token of context adds (0 for a layer without attention);
    None: the model gives none. Not counted in stage memory: see solver/core/kv.py."""

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise InvalidInputError("a problem needs at least one layer", field="layers")
        if len(set(self.names)) != n:
            raise InvalidInputError("layer names must be unique", field="layers")
        put = object.__setattr__
        put(self, "weight_bytes", _frozen(_as_array(self.weight_bytes, "weight_bytes", np.int64)))
        put(self, "activation_bytes",
            _frozen(_as_array(self.activation_bytes, "activation_bytes", np.int64)))
        put(self, "buffer_bytes", _frozen(_as_array(self.buffer_bytes, "buffer_bytes", np.int64)))
        put(self, "latency_s", _frozen(_as_array(self.latency_s, "latency_s", np.float64)))
        for name in ("weight_bytes", "activation_bytes", "buffer_bytes", "latency_s"):
            if len(getattr(self, name)) != n:
                raise InvalidInputError(f"has {len(getattr(self, name))} entries, expected {n} "
                                        "(one per layer)", field=name)
        if isinstance(self.capacity_bytes, bool) or not isinstance(self.capacity_bytes, int | float) \
                or self.capacity_bytes <= 0:
            raise InvalidInputError(f"must be a positive byte count, got {self.capacity_bytes!r}",
                                    field="capacity_bytes")
        put(self, "capacity_bytes", int(self.capacity_bytes))
        put(self, "max_stages", check_whole(self.max_stages, "max_stages"))
        put(self, "memory_model", MemoryModel.of(self.memory_model))
        if self.input_bytes < 0:
            raise InvalidInputError(f"must be >= 0, got {self.input_bytes!r}", field="input_bytes")
        put(self, "input_bytes", int(self.input_bytes))
        if self.cut_bytes is None:
            cut = np.concatenate(([self.input_bytes], self.activation_bytes[:-1])).astype(np.int64)
        else:
            cut = _as_array(self.cut_bytes, "cut_bytes", np.int64)
            if len(cut) != n:
                raise InvalidInputError(f"has {len(cut)} entries, expected {n}", field="cut_bytes")
        put(self, "cut_bytes", _frozen(cut))
        if self.kv_bytes_per_token is not None:
            kv = _as_array(self.kv_bytes_per_token, "kv_bytes_per_token", np.int64)
            if len(kv) != n:
                raise InvalidInputError(f"has {len(kv)} entries, expected {n} (one per layer)",
                                        field="kv_bytes_per_token")
            put(self, "kv_bytes_per_token", _frozen(kv))
        total = int(self.weight_bytes.sum() + self.activation_bytes.sum() + self.buffer_bytes.sum()
                    + self.input_bytes)
        if total >= MAX_BYTES or self.capacity_bytes >= MAX_BYTES:
            raise InvalidInputError(f"byte counts beyond 2^62 (model {total}, capacity "
                                    f"{self.capacity_bytes}) would overflow int64 sums",
                                    field="capacity_bytes")
        total = sum(self.latency_s.tolist())
        if not total < MAX_SECONDS:
            raise InvalidInputError(f"the layers' latencies add up to {total:.3g} s, beyond the "
                                    f"{MAX_SECONDS:.0e} s this tool counts", field="latency_s")
        if not float(self.transfer_s.max()) < MAX_SECONDS:
            raise InvalidInputError(f"a transfer takes {float(self.transfer_s.max()):.3g} s, beyond "
                                    f"the {MAX_SECONDS:.0e} s this tool counts", field="link")
        self._check_cuts()
        self._check_extensions()

    def _check_cuts(self) -> None:
        cuts = self.allowed_cuts
        if cuts is None:
            return
        try:
            mask = np.array(cuts, dtype=bool)
        except (TypeError, ValueError):
            raise InvalidInputError("expected one true/false per boundary 0..n",
                                    field="allowed_cuts") from None
        if mask.shape != (self.n + 1,):
            raise InvalidInputError(f"has {mask.size} entries, expected {self.n + 1} (boundaries "
                                    "0..n)", field="allowed_cuts")
        if not (mask[0] and mask[-1]):
            raise InvalidInputError("boundaries 0 and n must be allowed", field="allowed_cuts")
        object.__setattr__(self, "allowed_cuts", _frozen(mask))

    def _check_extensions(self) -> None:
        tp, res = self.tensor_parallel, self.residency
        if tp is not None:
            if not isinstance(tp, TensorParallel):
                raise InvalidInputError(f"expected a TensorParallel, got {tp!r}",
                                        field="tensor_parallel")
            if len(tp.allreduce_bytes) != self.n:
                raise InvalidInputError(f"has {len(tp.allreduce_bytes)} entries, expected "
                                        f"{self.n} (one per layer)", field="allreduce_bytes")
        if res is not None:
            if not isinstance(res, Residency):
                raise InvalidInputError(f"expected a Residency, got {res!r}", field="residency")
            if len(res.resident_latency_s) != self.n:
                raise InvalidInputError(f"has {len(res.resident_latency_s)} latencies per kind, "
                                        f"expected {self.n} (one per layer)", field="residency")
            if self.memory_model is not MemoryModel.ADDITIVE:
                raise InvalidInputError("supported with the additive memory model only, got "
                                        f"{self.memory_model.value}", field="residency")
        if tp is not None and res is not None:
            raise InvalidInputError("tensor parallelism and partial residency cannot be combined "
                                    "yet", field="residency")
        if res is not None and self.allowed_cuts is not None and not self.allowed_cuts.all():
            raise InvalidInputError("an engine's layout and partial residency cannot be combined "
                                    "yet", field="residency")
        fleet = self.fleet
        if fleet is not None:
            if not isinstance(fleet, Fleet):
                raise InvalidInputError(f"expected a Fleet, got {fleet!r}", field="cluster")
            if fleet.latency_s.shape[1] != self.n:
                raise InvalidInputError(f"has {fleet.latency_s.shape[1]} layer times per kind, "
                                        f"expected {self.n} (one per layer)",
                                        field="cluster.latency_s")
            if res is not None:
                raise InvalidInputError("a cluster and partial residency cannot be combined yet",
                                        field="residency")
        self._check_training()

    def _check_training(self) -> None:
        tr = self.training
        if tr is None:
            return
        if not isinstance(tr, Training):
            raise InvalidInputError(f"expected a Training, got {tr!r}", field="training")
        if len(tr.stash_bytes) != self.n:
            raise InvalidInputError(f"has {len(tr.stash_bytes)} entries per field, expected "
                                    f"{self.n} (one per layer)", field="training")
        for other, name in ((self.tensor_parallel, "tensor parallelism"),
                            (self.residency, "partial residency"), (self.fleet, "a cluster")):
            if other is not None:
                raise InvalidInputError(f"training plans cannot be combined with {name} yet",
                                        field="training")
        held = int(self.weight_bytes.sum() + tr.train_state_bytes.sum() + self.buffer_bytes.sum()
                   + self.activation_bytes.sum()) \
            + tr.microbatches * int(tr.stash_bytes.sum())
        if held >= MAX_BYTES:
            raise InvalidInputError(f"{tr.microbatches} micro-batches' stashes and the training "
                                    "state pass the 2^62 bytes this tool counts",
                                    field="microbatches")
        total = sum(tr.backward_latency_s.tolist())
        if not total < MAX_SECONDS:
            raise InvalidInputError(f"the backward latencies add up to {total:.3g} s, beyond the "
                                    f"{MAX_SECONDS:.0e} s this tool counts",
                                    field="backward_latency_s")

    @property
    def extensions(self) -> frozenset[Extension]:
        """The extensions this problem carries (empty: the canonical problem)."""
        on = set()
        if self.tensor_parallel is not None:
            on.add(Extension.TENSOR_PARALLEL)
        if self.residency is not None:
            on.add(Extension.RESIDENCY)
        if self.fleet is not None:
            on.add(Extension.CLUSTER)
            if self.fleet.placement == "free":
                on.add(Extension.FREE_PLACEMENT)
        if self.allowed_cuts is not None and not self.allowed_cuts.all():
            on.add(Extension.CUTS)
        if self.training is not None:
            on.add(Extension.TRAINING)
        return frozenset(on)

    @property
    def stage_limit(self) -> int:
        """K, or fewer where K exceeds what a plan can use (one layer a device; a stage spans
        at most the widest TP degree): what a formulation may count up to."""
        widest = max(self.tensor_parallel.degrees) if self.tensor_parallel is not None else 1
        limit = min(self.max_stages, self.n * widest)
        return limit if self.fleet is None else min(limit, self.fleet.size)

    def canonical(self) -> Problem:
        """The same chain with every extension switched off."""
        return self.replace(tensor_parallel=None, residency=None, fleet=None, allowed_cuts=None)

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

    def stage_kv_bytes(self, s: int, e: int) -> int:
        """KV-cache bytes one token of context adds to the stage [s, e) (0 without the field)."""
        self._check_range(s, e)
        if self.kv_bytes_per_token is None:
            return 0
        return int(self.kv_bytes_per_token[s:e].sum())

    def stage_times(self, bounds: tuple[int, ...] | list[int]) -> list[float]:
        return [self.stage_time(s, e) for s, e in itertools.pairwise(bounds)]

    def objective(self, bounds: tuple[int, ...] | list[int]) -> float:
        """The bottleneck: the largest stage time of a partition."""
        return max(self.stage_times(bounds))

    # ----- reach arrays used by the exact methods -----------------------------------------
    @cached_property
    def capacity_reach(self) -> np.ndarray:
        """For each start s, the largest end e such that [s, e) fits; e == s if layer s alone
        does not fit. Nondecreasing in s, since dropping a layer never adds memory. With
        allowed cuts: the largest allowed end, and e == s where a stage may not begin."""
        return self.snap(self._fit_reach)

    def snap(self, reach: np.ndarray) -> np.ndarray:
        """``reach`` (per start, the largest end) moved down to an allowed boundary; a start that
        is not one reaches nothing. Without allowed cuts, ``reach`` itself."""
        if self.allowed_cuts is None:
            return reach
        starts = np.arange(self.n)
        allowed = np.flatnonzero(self.allowed_cuts)
        snapped = allowed[np.searchsorted(allowed, reach, side="right") - 1]
        ok = self.allowed_cuts[:-1] & (snapped > starts)
        return _frozen(np.where(ok, snapped, starts).astype(np.int64))

    @cached_property
    def _fit_reach(self) -> np.ndarray:
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
            "tensor_parallel": None if self.tensor_parallel is None
            else self.tensor_parallel.to_dict(),
            "residency": None if self.residency is None else {
                "resident_latency_s": self.residency.resident_latency_s.tolist(),
                "streamed_latency_s": self.residency.streamed_latency_s.tolist()},
            "fleet": None if self.fleet is None else self.fleet.to_dict(),
            "kv_bytes_per_token": None if self.kv_bytes_per_token is None
            else self.kv_bytes_per_token.tolist(),
            "training": None if self.training is None else self.training.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        fields = dict(data)
        fields["names"] = tuple(fields["names"])
        if fields.get("link") is not None:
            fields["link"] = Link(**fields["link"])
        if fields.get("tensor_parallel") is not None:
            tp = dict(fields["tensor_parallel"])
            fields["tensor_parallel"] = TensorParallel(
                tuple(tp["degrees"]), tp["devices_per_node"], np.asarray(tp["allreduce_bytes"]),
                Link(**tp["link"]), bool(tp.get("uniform", False)), tp.get("allreduce_count"),
                tp.get("fixed_s"), tp.get("algorithm", "ring"))
        if fields.get("residency") is not None:
            fields["residency"] = Residency(**fields["residency"])
        if fields.get("fleet") is not None:
            fields["fleet"] = Fleet.from_dict(fields["fleet"])
        if fields.get("training") is not None:
            fields["training"] = Training(**fields["training"])
        return cls(**fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
