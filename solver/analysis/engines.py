"""An engine's own split against the best split it can be given.

For one model on P devices of one kind and one engine: the split the engine makes when told
nothing (solver/engines/rules.py ``default_split``; DeepSpeed's ``parameters`` balance of
parameter bytes over [embed, blocks..., head]), the engine-shaped latency optimum and the
engine-shaped KV-capacity optimum, each evaluated by the same formulas (memory per stage within
the engine's share of the device, bottleneck, steady-state tokens/s, KV tokens on the tightest
stage). The default split may not fit: it is evaluated anyway and marked.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..algorithms import SolveOptions, solve, solve_kv
from ..core.errors import InvalidInputError
from ..core.feasibility import lower_bound
from ..core.kv import smallest_kv_tokens, stage_kv_tokens
from ..core.partition import Partition, evaluate
from ..core.problem import Problem
from ..core.status import Status
from ..engines import (
    block_positions,
    default_split,
    engine_problem,
    get_engine,
    parameter_split,
    split_bounds,
)
from ..frontend import load_model, problem_from_graph, training_for
from ..hardware import Workload, capacity_for, get_device
from ..plan.schedule import Schedule, simulate_training

__all__ = ["ENGINE_COLUMNS", "TRAIN_COLUMNS", "EngineRow", "TrainRow", "default_bounds",
           "default_partition", "engine_rows", "engine_table", "train_rows"]

ENGINE_COLUMNS = ["model", "engine", "devices", "plan", "blocks_per_stage", "fits",
                  "max_stage_memory_bytes", "bottleneck_s", "tokens_per_s", "kv_capacity_tokens",
                  "speedup_vs_default", "kv_vs_default"]


@dataclass(frozen=True)
class EngineRow:
    model: str
    engine: str
    devices: int
    plan: str
    """default (the engine's own split), latency or kv-capacity (the engine-shaped optima)."""
    blocks_per_stage: str
    """What the engine takes: decoder blocks per stage, comma-separated (vLLM's format)."""
    fits: bool
    max_stage_memory_bytes: int
    bottleneck_s: float
    tokens_per_s: float
    kv_capacity_tokens: int | None
    """Tokens of KV cache the tightest stage's free memory holds; negative when it does not
    fit at all."""


def default_bounds(problem: Problem, engine: str) -> tuple[int, ...]:
    """The engine's own split of ``problem``'s layers over its K devices (DeepSpeed: its
    ``parameters`` balance over [embed, blocks..., head])."""
    names = list(problem.names)
    devices = min(problem.max_stages, len(block_positions(names)))
    if engine == "deepspeed":
        return parameter_split([int(w) for w in problem.weight_bytes], devices)
    return split_bounds(names, default_split(engine, len(block_positions(names)), devices))


def default_partition(problem: Problem, engine: str) -> Partition:
    """The engine's default split as an answer beside the methods': FEASIBLE with its
    bottleneck, or INFEASIBLE naming the stage that overflows (the engine would run out of
    memory there)."""
    bounds = default_bounds(problem, engine)
    label = f"{engine} default"
    for j, cost in enumerate(evaluate(problem, bounds)):
        if cost.memory_bytes > cost.capacity_bytes:
            return Partition((), Status.INFEASIBLE, None, lower_bound(problem), label,
                             diagnosis=f"{engine}'s own split: stage {j} needs "
                                       f"{cost.memory_bytes} bytes > capacity "
                                       f"{cost.capacity_bytes} bytes")
    costs = evaluate(problem, bounds)
    return Partition(bounds, Status.FEASIBLE, max(c.time_s for c in costs),
                     lower_bound(problem), label)


def _row(problem: Problem, bounds: tuple[int, ...], names: list[str], label: str,
         model: str, engine: str, tokens_per_pass: int) -> EngineRow:
    costs = evaluate(problem, bounds)
    blocks = block_positions(names)
    per_stage = [sum(1 for b in blocks if c.start <= b < c.end) for c in costs]
    bottleneck = max(c.time_s for c in costs)
    return EngineRow(model, engine, len(costs), label, ",".join(map(str, per_stage)),
                     all(c.memory_bytes <= c.capacity_bytes for c in costs),
                     max(c.memory_bytes for c in costs), bottleneck,
                     tokens_per_pass / bottleneck, smallest_kv_tokens(stage_kv_tokens(problem,
                                                                                       costs)))


def engine_rows(model: str, engine: str, devices: int, *, device: str = "h100-sxm",
                capacity: str = "hbm", workload: Workload | None = None,
                options: SolveOptions | None = None) -> list[EngineRow]:
    """The engine's default split and its two shaped optima (module docstring); a shaped
    optimum that does not exist (nothing fits, or no token of KV does) is left out."""
    workload = workload or Workload()
    spec = get_device(device)
    loaded = load_model(model, workload, device=device)
    capacity_bytes, _ = capacity_for(capacity, spec)
    base = problem_from_graph(loaded.graph, capacity_bytes, devices)
    names = list(base.names)
    rules = get_engine(engine)
    shaped = engine_problem(base, names, rules)
    micro = workload.micro_batch or workload.batch
    per_pass = micro * (1 if workload.phase == "decode" else workload.seq_len)
    blocks = len(block_positions(names))
    if blocks < devices:
        raise InvalidInputError(f"{model} has {blocks} blocks for {devices} devices",
                                field="devices")
    rows = [_row(shaped, default_bounds(shaped, engine), names, "default", model, engine,
                 per_pass)]
    for label, method in (("latency", solve), ("kv-capacity", solve_kv)):
        part = method(shaped, "auto", options)
        if part.status is not Status.INFEASIBLE:
            rows.append(_row(shaped, part.bounds, names, label, model, engine, per_pass))
    return rows


def engine_table(rows: list[EngineRow]) -> pd.DataFrame:
    """Rows as a table, each optimum's speed-up and KV gain over its engine's default split."""
    frame = pd.DataFrame([vars(r) for r in rows])
    keys = ["model", "engine", "devices"]
    default = frame.loc[frame["plan"] == "default", [*keys, "bottleneck_s", "kv_capacity_tokens"]]
    default = default.rename(columns={"bottleneck_s": "default_s",
                                      "kv_capacity_tokens": "default_kv"})
    joined = frame.merge(default, on=keys, how="left")
    frame["speedup_vs_default"] = (joined["default_s"] / joined["bottleneck_s"]).to_numpy()
    # a ratio to a default that holds no token (or does not fit) means nothing: NaN
    held = joined["default_kv"].astype(float).where(joined["default_kv"].astype(float) > 0)
    frame["kv_vs_default"] = (joined["kv_capacity_tokens"].astype(float) / held).to_numpy()
    return frame[ENGINE_COLUMNS]


TRAIN_COLUMNS = ["model", "engine", "devices", "plan", "precision", "recompute",
                 "blocks_per_stage", "fits", "max_stage_memory_bytes", "bottleneck_s", "step_s",
                 "tokens_per_s", "bubble_fraction", "mfu"]


@dataclass(frozen=True)
class TrainRow:
    model: str
    engine: str
    devices: int
    plan: str
    """default (the engine's even split) or optimum (the engine-shaped exact plan)."""
    precision: str
    recompute: str
    blocks_per_stage: str
    fits: bool
    max_stage_memory_bytes: int
    bottleneck_s: float
    step_s: float
    tokens_per_s: float
    bubble_fraction: float
    mfu: float
    stage_memory_bytes: tuple[int, ...]
    """Per stage, with its stashes at its position (1F1B: the first stage holds the most)."""


def train_rows(model: str, devices: int, workload: Workload, *, engine: str = "megatron",
               schedule: Schedule = "1f1b", microbatches: int | None = None,
               device: str = "h100-sxm", capacity: str = "hbm") -> list[TrainRow]:
    """A training step: the engine's default split (Megatron's even one) and the engine-shaped
    optimum (when one fits), each with its memory per stage, step under the schedule (plan/
    schedule.py) and MFU (3 x forward FLOPs per token, recompute excluded, over the devices'
    peak)."""
    if workload.phase != "train":
        raise InvalidInputError(f"expected a training workload, got {workload.phase!r}",
                                field="phase")
    spec = get_device(device)
    loaded = load_model(model, workload, device=device)
    capacity_bytes, _ = capacity_for(capacity, spec)
    m = microbatches or -(-workload.batch // workload.sequences)
    base = problem_from_graph(loaded.graph, capacity_bytes, devices).replace(
        training=training_for(loaded.graph, schedule, m))
    names = list(base.names)
    shaped = engine_problem(base, names, get_engine(engine))
    nodes = loaded.graph.graph.nodes
    flops = 3 * sum(float(nodes[n].get("flops", 0.0)) for n in loaded.graph.order())
    peak = spec.peak(workload.activation_dtype)
    blocks = block_positions(names)
    rows = []
    candidates = [("default", default_bounds(shaped, engine))]
    part = solve(shaped, "auto")
    if part.status is not Status.INFEASIBLE:
        candidates.append(("optimum", part.bounds))
    tr = shaped.training
    assert tr is not None
    for label, bounds in candidates:
        costs = evaluate(shaped, bounds)
        forward = [float(shaped.prefix_latency[c.end] - shaped.prefix_latency[c.start])
                   + c.transfer_in_s for c in costs]
        backward = [c.time_s - f for c, f in zip(costs, forward, strict=True)]
        sim = simulate_training(forward, backward, m, schedule,
                                tokens_per_microbatch=workload.sequences * workload.seq_len,
                                flops_per_microbatch=flops, peak_flops=peak)
        per_stage = [sum(1 for b in blocks if c.start <= b < c.end) for c in costs]
        rows.append(TrainRow(model, engine, devices, label, workload.precision,
                             workload.recompute, ",".join(map(str, per_stage)),
                             all(c.memory_bytes <= c.capacity_bytes for c in costs),
                             max(c.memory_bytes for c in costs), max(c.time_s for c in costs),
                             sim.step_s, float(sim.tokens_per_s or 0.0), sim.bubble_fraction,
                             float(sim.mfu or 0.0), tuple(c.memory_bytes for c in costs)))
    return rows
