"""Training: a pipeline schedule makes a stage's memory depend on its position.

Each layer carries a forward latency (the problem's ``latency_s``), a backward latency, the
bytes it saves for its backward pass per micro-batch (``stash_bytes``) and its gradients and
optimizer state (``train_state_bytes``). With M micro-batches, stage j of a plan of P stages
(0-based) keeps f(j) micro-batches in flight: M under GPipe (every forward runs before the first
backward), min(P - j, M) under 1F1B (stage j runs P - j - 1 warm-up forwards, then one forward
per backward).

- Memory of a stage [s, e): the sum of (weight + train state + buffer) over its layers plus
  f(j) x the sum of their stash bytes (additive model); the peak model adds, instead of the
  buffers, the largest single layer's live tensors (input + output + buffer), as for inference.
- Time per micro-batch: the sum of its layers' forward and backward latencies, plus the inbound
  activation transfer (every stage but the first) and the outbound transfer of the gradient of
  its last layer's activation (every stage but the last), each over the link.

f depends on P and j only through r = P - j, the number of stages from this one to the last:
f = min(r, M) (1F1B) or M (GPipe). The exact methods count stages from the end, so the number of
stages never has to be guessed (algorithms/train.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInputError
from .link import MAX_BYTES, check_whole

if TYPE_CHECKING:
    from .problem import Problem

__all__ = ["MAX_MICROBATCHES", "SCHEDULES", "TRAIN_MAX_LAYERS", "Training", "train_matrices",
           "train_stage_memory", "train_stage_time"]

SCHEDULES = ("gpipe", "1f1b")
MAX_MICROBATCHES = 100_000
"""More micro-batches than a step is ever split into; the schedule simulator runs 2 x P x M
operations."""
TRAIN_MAX_LAYERS = 3000
"""The exact training methods keep a few n x n tables (about 50 bytes a cell)."""


def _per_layer(values: object, field: str, dtype: type) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError("expected one number >= 0 per layer", field=field) from None
    if arr.ndim != 1 or np.any(~np.isfinite(arr)) or np.any(arr < 0):
        raise InvalidInputError("expected one finite number >= 0 per layer", field=field)
    if dtype is np.int64 and arr.size and float(arr.max()) >= MAX_BYTES:
        raise InvalidInputError(f"{float(arr.max()):.3g} bytes is beyond the 2^62 this tool counts",
                                field=field)
    out = np.rint(arr).astype(np.int64) if dtype is np.int64 else arr
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Training:
    """A training step's schedule and each layer's backward costs (module docstring)."""

    schedule: str
    microbatches: int
    backward_latency_s: np.ndarray
    stash_bytes: np.ndarray
    """Per layer: bytes saved for the backward pass, per micro-batch in flight."""
    train_state_bytes: np.ndarray
    """Per layer: gradients and optimizer state (held once, whatever the micro-batches)."""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise InvalidInputError(f"expected {' or '.join(SCHEDULES)}, got {self.schedule!r}",
                                    field="schedule")
        put = object.__setattr__
        m = self.microbatches
        if isinstance(m, np.integer):
            m = int(m)
        put(self, "microbatches", check_whole(m, "microbatches", 1))
        if self.microbatches > MAX_MICROBATCHES:
            raise InvalidInputError(f"{self.microbatches} is more than the {MAX_MICROBATCHES:,} "
                                    "a step is modelled with", field="microbatches")
        put(self, "backward_latency_s",
            _per_layer(self.backward_latency_s, "backward_latency_s", np.float64))
        put(self, "stash_bytes", _per_layer(self.stash_bytes, "stash_bytes", np.int64))
        put(self, "train_state_bytes",
            _per_layer(self.train_state_bytes, "train_state_bytes", np.int64))
        lengths = {len(self.backward_latency_s), len(self.stash_bytes),
                   len(self.train_state_bytes)}
        if len(lengths) != 1:
            raise InvalidInputError("backward_latency_s, stash_bytes and train_state_bytes need "
                                    "one entry per layer each", field="training")

    def in_flight(self, stages_from_here: int) -> int:
        """Micro-batches a stage keeps in flight, r = stages from it to the last (P - j)."""
        if self.schedule == "gpipe":
            return self.microbatches
        return min(stages_from_here, self.microbatches)

    def to_dict(self) -> dict[str, object]:
        return {"schedule": self.schedule, "microbatches": self.microbatches,
                "backward_latency_s": self.backward_latency_s.tolist(),
                "stash_bytes": self.stash_bytes.tolist(),
                "train_state_bytes": self.train_state_bytes.tolist()}


def _training(problem: Problem) -> Training:
    if problem.training is None:
        raise InvalidInputError("the problem has no training extension", field="training")
    return problem.training


def _live(problem: Problem) -> np.ndarray:
    """Per layer: its live tensors while it runs (input + output + buffer), the peak model's."""
    inputs = np.concatenate(([problem.input_bytes], problem.activation_bytes[:-1]))
    return inputs + problem.activation_bytes + problem.buffer_bytes


def train_stage_memory(problem: Problem, s: int, e: int, in_flight: int) -> int:
    """Bytes of stage [s, e) keeping ``in_flight`` micro-batches' stashes."""
    tr = _training(problem)
    fixed = int(problem.weight_bytes[s:e].sum() + tr.train_state_bytes[s:e].sum())
    stash = int(tr.stash_bytes[s:e].sum())
    if problem.memory_model.value == "additive":
        return fixed + int(problem.buffer_bytes[s:e].sum()) + in_flight * stash
    return fixed + in_flight * stash + int(_live(problem)[s:e].max())


def train_stage_time(problem: Problem, s: int, e: int) -> float:
    """Seconds per micro-batch of stage [s, e): forward + backward + both transfers."""
    tr = _training(problem)
    pre = problem.prefix_latency
    back = float(tr.backward_latency_s[s:e].sum())
    out = float(problem.transfer_s[e]) if e < problem.n else 0.0
    return float(pre[e] - pre[s]) + back + float(problem.transfer_s[s]) + out


def train_matrices(problem: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every stage [s, e): its time (+inf where empty or where the allowed cuts forbid it),
    its memory without the stashes, and its stash bytes per micro-batch in flight. A stage at r
    stages from the end fits when fixed + in_flight(r) x stash <= capacity."""
    tr = _training(problem)
    n = problem.n
    if n > TRAIN_MAX_LAYERS:
        raise InvalidInputError(f"{n} layers is more than the {TRAIN_MAX_LAYERS} the exact "
                                "training methods' tables allow; plan at --granularity block",
                                field="layers")
    s_idx = np.arange(n)[:, None]
    e_idx = np.arange(n + 1)[None, :]
    valid = e_idx > s_idx
    if problem.allowed_cuts is not None:
        valid = valid & problem.allowed_cuts[None, :] & problem.allowed_cuts[:n, None]
    pre = problem.prefix_latency
    pre_back = np.concatenate(([0.0], np.cumsum(tr.backward_latency_s)))
    out = np.zeros(n + 1)  # the gradient leaving a stage that ends at e crosses the cut at e
    out[1:n] = problem.transfer_s[1:n]
    times = (pre[None, :] - pre[:n, None]) + (pre_back[None, :] - pre_back[:n, None]) \
        + problem.transfer_s[:, None] + out[None, :]
    times = np.where(valid, times, np.inf)

    def prefix(values: np.ndarray) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(values))).astype(np.int64)

    fixed_per_layer = problem.weight_bytes + tr.train_state_bytes
    if problem.memory_model.value == "additive":
        fixed_per_layer = fixed_per_layer + problem.buffer_bytes
    pf, ps = prefix(fixed_per_layer), prefix(tr.stash_bytes)
    fixed = pf[None, :] - pf[:n, None]
    stash = ps[None, :] - ps[:n, None]
    if problem.memory_model.value == "peak":
        live = _live(problem)
        run = np.zeros((n, n + 1), dtype=np.int64)
        for s in range(n):
            run[s, s + 1:] = np.maximum.accumulate(live[s:])
        fixed = fixed + run
    big = np.iinfo(np.int64).max // 4
    fixed = np.where(valid, fixed, big)
    stash = np.where(valid, stash, 0)
    return times, fixed, stash
