"""A discrete-event simulator of training pipeline schedules (GPipe and 1F1B): step time,
bubble, per-stage busy fraction, activations in flight, Gantt slots.

What is modelled:

- P stages in a chain and M micro-batches. Stage j spends ``forward_s[j]`` on one micro-batch's
  forward (its inbound activation transfer folded in) and ``backward_s[j]`` on its backward (its
  outbound gradient transfer and any recomputation folded in). Every micro-batch costs the same.
- Dependencies: F(j, m) needs F(j-1, m); B(j, m) needs F(j, m) and B(j+1, m). A stage runs one
  op at a time, in a fixed order set by the schedule, and an op starts at the later of the end
  of its dependencies and the end of the previous op on its stage:

  - ``gpipe``: F(j, 0..M-1), then B(j, 0..M-1) (Huang et al. 2019, GPipe).
  - ``1f1b``: the non-interleaved 1F1B order of PipeDream-Flush (Narayanan et al. 2021,
    "Memory-Efficient Pipeline-Parallel DNN Training") as Megatron-LM runs it (Narayanan et al.
    2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM",
    section 2.2.1): w_j = min(P - j - 1, M) warm-up forwards, then F(j, w_j + i), B(j, i)
    alternating for i = 0 .. M - w_j - 1, then the remaining backwards. It bounds the
    micro-batches whose activations a stage holds to min(P - j, M) instead of GPipe's M.

- ``step_s`` is the time the last op ends: one optimizer step's forward and backward work.

What is not modelled: the optimizer update, the all-reduce of gradients across data-parallel
replicas, communication as a separate resource (transfers are folded into the stage times, so
they never overlap with compute), more than one op at a time on a stage, interleaved (virtual)
stages, and variation between micro-batches.

With identical stages both schedules take (M + P - 1)(F + B), bubble (P - 1) / (M + P - 1)
(``uniform_step_s``); the simulation is kept separate from that closed form so that the tests can
check one against the other.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..core.errors import InvalidInputError, SolverError
from ..core.link import check_whole

__all__ = ["MAX_OPS", "SCHEDULES", "Schedule", "TrainSim", "TrainSlot", "simulate_training",
           "stage_order", "uniform_step_s"]

MAX_OPS = 2_000_000
"""Forward and backward operations one simulated step may hold (about 18 s and 1 GB here)."""

Schedule = Literal["gpipe", "1f1b"]
Kind = Literal["F", "B"]

SCHEDULES: tuple[Schedule, ...] = ("gpipe", "1f1b")


@dataclass(frozen=True)
class TrainSlot:
    """One bar of the Gantt chart: stage ``stage`` running ``kind`` ("F" forward, "B" backward)
    of ``microbatch``."""

    stage: int
    microbatch: int
    kind: Kind
    start_s: float
    end_s: float


@dataclass(frozen=True)
class TrainSim:
    schedule: Schedule
    microbatches: int
    stages: int
    forward_s: tuple[float, ...]
    """Per stage: seconds of one micro-batch's forward, inbound transfer included (the input)."""
    backward_s: tuple[float, ...]
    """Per stage: seconds of one micro-batch's backward, outbound transfer included (the input)."""
    step_s: float
    """Time the last op ends: forward and backward of all M micro-batches, no optimizer update."""
    bubble_fraction: float
    """1 - sum_j M (F_j + B_j) / (P x step_s)."""
    busy_fraction: tuple[float, ...]
    """Per stage: M (F_j + B_j) / step_s."""
    peak_in_flight: tuple[int, ...]
    """Per stage: the most micro-batches whose forward has run and backward has not, i.e. whose
    activations the stage holds at once (M for gpipe, min(P - j, M) for 1f1b)."""
    tokens_per_s: float | None
    """tokens_per_microbatch x M / step_s; None when tokens_per_microbatch is not given."""
    mfu: float | None
    """flops_per_microbatch x M / (step_s x P x peak_flops); None unless both are given."""
    slots: tuple[TrainSlot, ...]
    """Every op's start and end, sorted by start, then stage, then its place in the stage order."""

    def to_dict(self, *, with_slots: bool = True) -> dict[str, Any]:
        """A JSON-ready dict. Slots are included by default (a Gantt chart needs them) and can be
        left out with ``with_slots=False``, since they number 2 x P x M."""
        data = asdict(self)
        for key in ("forward_s", "backward_s", "busy_fraction", "peak_in_flight"):
            data[key] = list(data[key])
        if with_slots:
            data["slots"] = [asdict(s) for s in self.slots]
        else:
            del data["slots"]
        return data


def _times(values: Any, field: str) -> tuple[float, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise InvalidInputError(f"expected a sequence of seconds per stage, got "
                                f"{type(values).__name__}", field=field)
    if not values:
        raise InvalidInputError("at least one stage is needed, got none", field=field)
    return tuple(_seconds(value, field, f"stage {j}: ") for j, value in enumerate(values))


def _seconds(value: Any, field: str, where: str = "") -> float:
    # bool is a numbers.Real too, but True seconds is a mistake, not a time
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{where}must be a finite number >= 0, got {value!r}", field=field)
    return float(value)


def _positive(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"must be a finite number > 0, got {value!r}", field=field)
    return float(value)


def _schedule(value: Any) -> Schedule:
    for name in SCHEDULES:
        if value == name:
            return name
    raise InvalidInputError(f"expected one of {', '.join(SCHEDULES)}, got {value!r}",
                            field="schedule")


def stage_order(schedule: Schedule, stage: int, stages: int,
                microbatches: int) -> list[tuple[Kind, int]]:
    """The ops stage ``stage`` of ``stages`` runs, in order, as (kind, micro-batch) pairs."""
    m = microbatches
    forwards: list[tuple[Kind, int]] = [("F", i) for i in range(m)]
    backwards: list[tuple[Kind, int]] = [("B", i) for i in range(m)]
    if schedule == "gpipe":
        return forwards + backwards
    warmup = min(stages - stage - 1, m)
    order = forwards[:warmup]
    for i in range(m - warmup):
        order += [("F", warmup + i), ("B", i)]
    return order + backwards[m - warmup:]


def _run(order: list[list[tuple[Kind, int]]], fwd: tuple[float, ...],
         bwd: tuple[float, ...], m: int) -> list[tuple[float, int, int, TrainSlot]]:
    """Start and end of every op, as (start, stage, place in the stage's order, slot).

    Start times are a longest path over the dependency DAG with the stage orders as extra edges;
    the order of evaluation only has to respect the edges. A worklist of stages does that in
    O(P x M): a stage advances while its next op's dependencies have ended, and a stage that
    advanced wakes its neighbours, the only stages whose next op can depend on it.
    """
    p = len(order)
    f_end: list[list[float | None]] = [[None] * m for _ in range(p)]
    b_end: list[list[float | None]] = [[None] * m for _ in range(p)]
    nxt = [0] * p
    free_at = [0.0] * p
    out: list[tuple[float, int, int, TrainSlot]] = []
    queue = deque(range(p))
    queued = [True] * p
    while queue:
        j = queue.popleft()
        queued[j] = False
        advanced = False
        while nxt[j] < len(order[j]):
            kind, mb = order[j][nxt[j]]
            deps: list[float | None]
            if kind == "F":
                deps = [f_end[j - 1][mb]] if j > 0 else []
            else:
                deps = [f_end[j][mb]] + ([b_end[j + 1][mb]] if j + 1 < p else [])
            if any(d is None for d in deps):
                break
            start = max([free_at[j], *(d for d in deps if d is not None)])
            end = start + (fwd[j] if kind == "F" else bwd[j])
            (f_end if kind == "F" else b_end)[j][mb] = end
            free_at[j] = end
            out.append((start, j, nxt[j], TrainSlot(j, mb, kind, start, end)))
            nxt[j] += 1
            advanced = True
        if advanced:
            for k in (j - 1, j + 1):
                if 0 <= k < p and not queued[k] and nxt[k] < len(order[k]):
                    queue.append(k)
                    queued[k] = True
    stuck = [j for j in range(p) if nxt[j] < len(order[j])]
    if stuck:
        # Cannot happen for the GPipe and 1F1B orders; guards a wrong order, which would
        # otherwise return a schedule with ops missing.
        j = stuck[0]
        kind, mb = order[j][nxt[j]]
        raise SolverError(f"pipeline schedule deadlocks: stage {j} waits on {kind}({j}, {mb}) "
                          f"whose dependencies never run ({len(stuck)} stages stuck)")
    return out


def simulate_training(
    forward_s: Sequence[float],
    backward_s: Sequence[float],
    microbatches: int,
    schedule: Schedule,
    *,
    tokens_per_microbatch: int | None = None,
    flops_per_microbatch: float | None = None,
    peak_flops: float | None = None,
) -> TrainSim:
    """Simulate one training step of ``microbatches`` micro-batches under ``schedule``.

    ``flops_per_microbatch`` is the whole model's work on one micro-batch (forward and backward,
    all stages) and ``peak_flops`` one device's peak, so mfu is over the P devices together.
    InvalidInputError names the offending argument; SolverError means the schedule deadlocked.
    """
    fwd = _times(forward_s, "forward_s")
    bwd = _times(backward_s, "backward_s")
    if len(bwd) != len(fwd):
        raise InvalidInputError(f"has {len(bwd)} stages but forward_s has {len(fwd)}; they must "
                                "match", field="backward_s")
    m = check_whole(microbatches, "microbatches")
    if len(fwd) * m > MAX_OPS // 2:
        raise InvalidInputError(f"{len(fwd)} stages x {m} micro-batches is more than the "
                                f"{MAX_OPS:,} operations a simulated step may hold",
                                field="microbatches")
    name = _schedule(schedule)
    tokens = None if tokens_per_microbatch is None else check_whole(tokens_per_microbatch,
                                                                    "tokens_per_microbatch")
    flops = None if flops_per_microbatch is None else _positive(flops_per_microbatch,
                                                                "flops_per_microbatch")
    peak = None if peak_flops is None else _positive(peak_flops, "peak_flops")
    busy = tuple(m * (f + b) for f, b in zip(fwd, bwd, strict=True))
    if max(busy) <= 0:
        # step_s would be 0 and every ratio below 0 / 0
        raise InvalidInputError("every forward and backward time is 0 s; nothing to simulate",
                                field="forward_s")

    p = len(fwd)
    order = [stage_order(name, j, p, m) for j in range(p)]
    timed = _run(order, fwd, bwd, m)
    timed.sort(key=lambda t: t[:3])
    step = max(t[3].end_s for t in timed)

    peaks = []
    for ops in order:
        held = most = 0
        for kind, _ in ops:
            held += 1 if kind == "F" else -1
            most = max(most, held)
        peaks.append(most)

    # step_s adds up 2M op times while M (F_j + B_j) is a product, so a stage that is never idle
    # can round to a busy fraction of 1 + 1e-16; clamp so that no bubble reads below 0.
    fractions = tuple(min(1.0, b / step) for b in busy)
    bubble = max(0.0, 1.0 - sum(busy) / (p * step))
    return TrainSim(
        schedule=name,
        microbatches=m,
        stages=p,
        forward_s=fwd,
        backward_s=bwd,
        step_s=step,
        bubble_fraction=bubble,
        busy_fraction=fractions,
        peak_in_flight=tuple(peaks),
        tokens_per_s=None if tokens is None else tokens * m / step,
        mfu=None if flops is None or peak is None else flops * m / (step * p * peak),
        slots=tuple(t[3] for t in timed),
    )


def uniform_step_s(forward: float, backward: float, stages: int, microbatches: int) -> float:
    """Closed-form step time of identical stages, (M + P - 1)(F + B), for GPipe and 1F1B alike:
    a bubble of (P - 1) / (M + P - 1)."""
    f = _seconds(forward, "forward")
    b = _seconds(backward, "backward")
    p = check_whole(stages, "stages")
    m = check_whole(microbatches, "microbatches")
    return (m + p - 1) * (f + b)
