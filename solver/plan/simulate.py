"""A forward-only GPipe pipeline simulator: makespan, throughput, TPOT, bubble, Gantt slots.

The model (what is simulated, and what is not):

- S stages in a chain; stage j takes ``T_j`` seconds for one micro-batch, its inbound transfer
  included (``StagePlan.latency_s`` already counts it). Every micro-batch takes the same time.
- M micro-batches enter stage 0 at time 0. Stage j starts micro-batch i once stage j finished the
  micro-batch before it and stage j-1 finished micro-batch i (the GPipe forward schedule). No
  backward pass, no recomputation, no communication overlap beyond what ``T_j`` already counts.
- Decode: a sequence emits one token per pass through the whole pipeline, and its next pass needs
  that token, so ``decode_steps`` passes are simulated in which step k+1 of a micro-batch cannot
  start on stage 0 before step k of that micro-batch left the last stage. Each stage serves the
  work waiting for it first-come first-served, ties by (step, micro-batch): a returning
  micro-batch queues behind the step-k micro-batches already waiting. With equal stage times t
  this gives makespan = ((K - 1) max(M, S) + S + M - 1) t: when M < S the pipeline drains and
  stalls on every step, when M >= S it stays full.
- Closed form for one forward pass (K = 1): makespan = sum_j T_j + (M - 1) max_j T_j, which for
  equal stages is (S + M - 1) t with bubble fraction (S - 1) / (S + M - 1).

It is a discrete-event simulation (a heap of completion events, one FIFO queue per stage) rather
than the closed form, so that the decode dependency and the Gantt chart come from the same run and
the closed form stays an independent check in the tests.

Two readings of "time per output token" are reported side by side, because they differ by orders
of magnitude (see shared/reference/models.md):

- ``tpot_per_sequence_s``: what one sequence waits per token it emits = makespan / decode_steps,
  i.e. the makespan of one decode step of the whole batch when decode_steps is 1. None in
  prefill: a prefill pass emits no stream of output tokens (its makespan is a time to first
  token), and dividing by seq_len would make a per-input-token number that no user waits for.
- ``tpot_paper_s``: 1 / tokens_per_s, the paper's reading (its 0.078 ms is 1 / 12,800 tok/s).

Serving at a context length L (``kv_serving``): the plan's KV capacity (the tokens of KV cache
its tightest stage's free memory holds) holds floor(capacity / L) sequences of L tokens at once.
Assumed: those N sequences decode together, each one token per pass through every stage, and a
pass takes the plan's stage times as planned (their sum; not re-costed for N sequences, whose
larger KV reads would lengthen a memory-bound step), so decode yields N / pass tokens/s.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..core.errors import InvalidInputError
from ..core.link import check_whole
from .types import Plan

__all__ = ["KV_ASSUMPTION", "KvServing", "Phase", "SimResult", "Slot", "kv_serving", "simulate",
           "simulate_plan"]

Phase = Literal["prefill", "decode"]

KV_ASSUMPTION = ("the sequences decode together, one token each per pass through every stage; a "
                 "pass takes the sum of the plan's stage times, not re-costed for these sequences "
                 "(their KV reads would lengthen a memory-bound step)")


@dataclass(frozen=True)
class Slot:
    """One bar of the Gantt chart: stage ``stage`` working on ``microbatch`` at decode ``step``."""

    stage: int
    microbatch: int
    step: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SimResult:
    stage_times_s: tuple[float, ...]
    """Seconds per micro-batch per stage, inbound transfer included (the input)."""
    microbatches: int
    decode_steps: int
    phase: Phase | None
    """None when the plan does not say (a chain JSON's empty workload)."""
    makespan_s: float
    """End-to-end latency of the batch: first start to last end, all decode steps."""
    fill_latency_s: float
    """Latency of one micro-batch through an empty pipeline: the sum of stage times."""
    bottleneck_stage: int
    tokens_per_microbatch: int | None
    """Tokens one micro-batch yields per pass (prefill: micro_batch x seq_len; decode: micro_batch)."""
    tokens: int | None
    """Tokens of the whole batch over all decode steps; None when the workload is unknown."""
    tokens_per_s: float | None
    """tokens / makespan: the batch's throughput, fill and drain included."""
    steady_tokens_per_s: float | None
    """tokens_per_microbatch / max stage time: the throughput of a pipeline kept full."""
    tpot_per_sequence_s: float | None
    """Decode: makespan / decode_steps, the time between two tokens of one sequence. Prefill: None."""
    tpot_paper_s: float | None
    """1 / tokens_per_s, the paper's TPOT reading; not a per-sequence time."""
    bubble_fraction: float
    """1 - busy time / (stages x makespan)."""
    busy_s: tuple[float, ...]
    utilisation: tuple[float, ...]
    """Per stage: busy time / makespan."""
    slots: tuple[Slot, ...]
    """Start and end of every (stage, micro-batch, step), sorted by start then stage."""

    @property
    def stages(self) -> int:
        return len(self.stage_times_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = self.stages
        data["stage_times_s"] = list(self.stage_times_s)
        data["busy_s"] = list(self.busy_s)
        data["utilisation"] = list(self.utilisation)
        data["slots"] = [asdict(s) for s in self.slots]
        return data


def _stage_times(stage_times: Sequence[float]) -> tuple[float, ...]:
    times = []
    for j, value in enumerate(stage_times):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value < 0:
            raise InvalidInputError(f"stages/{j}/latency_s: must be a finite number >= 0, "
                                    f"got {value!r}")
        times.append(float(value))
    if not times:
        raise InvalidInputError("stages: at least one stage is needed, got none")
    if max(times) <= 0:
        raise InvalidInputError("stages/*/latency_s: every stage takes 0 s; nothing to simulate")
    return tuple(times)


def _run(times: tuple[float, ...], microbatches: int, steps: int) -> list[Slot]:
    """The event loop: returns every slot. Jobs are (step, micro-batch) pairs."""
    n_stages = len(times)
    # ready[j]: heap of (time it became ready, step, micro-batch), i.e. FIFO with fixed ties.
    ready: list[list[tuple[float, int, int]]] = [[] for _ in range(n_stages)]
    ready[0] = [(0.0, 0, i) for i in range(microbatches)]
    heapq.heapify(ready[0])
    idle = [True] * n_stages
    events: list[tuple[float, int, int, int]] = []  # (end time, stage, step, micro-batch)
    slots: list[Slot] = []
    now = 0.0
    while True:
        # Start every idle stage that has work; only after all events of `now` were applied, so
        # that ties are broken by (step, micro-batch) and not by event order.
        for j in range(n_stages):
            if idle[j] and ready[j]:
                _, step, mb = heapq.heappop(ready[j])
                end = now + times[j]
                slots.append(Slot(j, mb, step, now, end))
                heapq.heappush(events, (end, j, step, mb))
                idle[j] = False
        if not events:
            break
        now = events[0][0]
        while events and events[0][0] == now:
            _, j, step, mb = heapq.heappop(events)
            idle[j] = True
            if j + 1 < n_stages:
                heapq.heappush(ready[j + 1], (now, step, mb))
            elif step + 1 < steps:  # autoregressive: the token just produced feeds the next step
                heapq.heappush(ready[0], (now, step + 1, mb))
    slots.sort(key=lambda s: (s.start_s, s.stage))
    return slots


def simulate(
    stage_times: Sequence[float],
    microbatches: int,
    *,
    tokens_per_microbatch: int | None = None,
    phase: Phase | None = "prefill",
    decode_steps: int = 1,
    tokens: int | None = None,
) -> SimResult:
    """Simulate M micro-batches (times ``decode_steps`` in decode) through the stages.

    ``tokens`` is the batch's token count over all steps when it is not M x decode_steps x
    tokens_per_microbatch (a last micro-batch that is only partly filled).
    """
    times = _stage_times(stage_times)
    m = check_whole(microbatches, "microbatches")
    steps = check_whole(decode_steps, "decode_steps")
    if phase not in ("prefill", "decode", None):
        raise InvalidInputError(f"expected prefill or decode, got {phase!r}", field="phase")
    if phase == "prefill" and steps != 1:
        raise InvalidInputError(f"must be 1 in the prefill phase, got {steps}",
                                field="decode_steps")
    per_mb = None if tokens_per_microbatch is None else check_whole(tokens_per_microbatch,
                                                               "tokens_per_microbatch")
    if tokens is not None:
        tokens = check_whole(tokens, "tokens")
    elif per_mb is not None:
        tokens = m * steps * per_mb

    slots = _run(times, m, steps)
    makespan = max(s.end_s for s in slots)
    busy = tuple(t * m * steps for t in times)
    bottleneck = max(times)
    tokens_per_s = None if tokens is None else tokens / makespan
    return SimResult(
        stage_times_s=times,
        microbatches=m,
        decode_steps=steps,
        phase=phase,
        makespan_s=makespan,
        fill_latency_s=sum(times),
        bottleneck_stage=times.index(bottleneck),
        tokens_per_microbatch=per_mb,
        tokens=tokens,
        tokens_per_s=tokens_per_s,
        steady_tokens_per_s=None if per_mb is None else per_mb / bottleneck,
        tpot_per_sequence_s=makespan / steps if phase == "decode" else None,
        tpot_paper_s=None if not tokens_per_s else 1.0 / tokens_per_s,  # 0: too slow to count
        # rounding leaves ~1e-16 where no stage ever waits (one stage): that is no bubble
        bubble_fraction=_no_noise(1.0 - sum(busy) / (len(times) * makespan)),
        busy_s=busy,
        utilisation=tuple(b / makespan for b in busy),
        slots=tuple(slots),
    )


def _workload_int(workload: dict[str, Any], key: str) -> int | None:
    value = workload.get(key)
    return None if value is None else check_whole(value, f"workload.{key}")


def simulate_plan(plan: Plan, microbatches: int | None = None, decode_steps: int = 1) -> SimResult:
    """Simulate a plan with its own workload.

    M defaults to ceil(batch / micro_batch) (1 when the workload gives no batch). The batch's
    tokens count its real sequences, so a partly filled last micro-batch is timed as a full one
    but yields only its own tokens; an explicit M means M full micro-batches. An empty workload
    (a chain JSON's plan) leaves tokens and throughputs None; the times are still simulated.
    """
    workload = plan.workload
    steps = check_whole(decode_steps, "decode_steps")
    # A workload without a phase is a prefill one (as Workload and build_plan read it); an empty
    # workload (a chain JSON's plan) says nothing, so the phase is unknown.
    phase = workload.get("phase", "prefill" if workload else None)
    if phase not in ("prefill", "decode", None):
        raise InvalidInputError(f"expected prefill or decode, got {phase!r}",
                                field="workload.phase")
    batch = _workload_int(workload, "batch")
    micro = _workload_int(workload, "micro_batch") or batch  # Workload's default: the whole batch
    seq_len = _workload_int(workload, "seq_len")
    if batch is not None and micro is not None and micro > batch:
        raise InvalidInputError(f"must be in 1..{batch}, got {micro}",
                                field="workload.micro_batch")
    if microbatches is None:
        m = -(-batch // micro) if batch is not None and micro is not None else 1
        sequences = batch
    else:
        m = check_whole(microbatches, "microbatches")
        sequences = None if micro is None else m * micro
    # Tokens each sequence yields per pass; an unknown phase makes the count unknown.
    per_token = {"decode": 1, "prefill": seq_len, None: None}[phase]
    if workload.get("throughput_unit") == "samples":
        per_token = 1  # a vision model's throughput counts images
    per_mb = None if micro is None or per_token is None else micro * per_token
    tokens = None if sequences is None or per_token is None else sequences * per_token * steps
    return simulate([st.latency_s for st in plan.stages], m, tokens_per_microbatch=per_mb,
                    phase=phase, decode_steps=steps, tokens=tokens)


@dataclass(frozen=True)
class KvServing:
    """What a plan's KV capacity serves at one context length (module docstring)."""

    context: int
    """Tokens of context per sequence (L)."""
    kv_capacity_tokens: int
    """The plan's: the tokens of KV cache its tightest stage's free memory holds."""
    sequences: int
    """floor(kv_capacity_tokens / context): sequences of that length held at once."""
    pass_s: float
    """One decode pass through every stage: the sum of the plan's stage times."""
    tokens_per_s: float
    """sequences / pass_s: each sequence decodes one token per pass."""
    assumption: str = KV_ASSUMPTION
    planned_cache: str | None = None
    """For a decode plan: the KV cache its stage memory already holds (its own micro-batch),
    which these sequences come on top of."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kv_serving(plan: Plan, context: int) -> KvServing:
    """The sequences of ``context`` tokens the plan's KV capacity holds and the decode
    throughput they give; InvalidInputError when the plan records no KV capacity."""
    length = check_whole(context, "context")
    capacity = plan.objective.get("kv_capacity_tokens")
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        shown = "null" if capacity is None else repr(capacity)
        raise InvalidInputError(f"objective/kv_capacity_tokens: {shown}: the plan records no KV "
                                "capacity (no stage holds KV cache, or the plan predates the "
                                "field)")
    pass_s = sum(st.latency_s for st in plan.stages)
    sequences = capacity // length
    planned = None
    workload = plan.workload
    if workload.get("phase") == "decode":
        micro = workload.get("micro_batch") or workload.get("batch")
        planned = (f"the stage memory already holds the KV cache of the plan's own micro-batch "
                   f"({micro} sequences at context {workload.get('seq_len')}); these come on top")
    return KvServing(length, capacity, sequences, pass_s,
                     sequences / pass_s if pass_s > 0 else 0.0, planned_cache=planned)


def _no_noise(fraction: float) -> float:
    """A fraction within floating-point noise of 0 is 0."""
    return 0.0 if abs(fraction) < 1e-12 else fraction
