"""Building a Plan from an answer: stage tables from the problem's own formulas, the
objective, and the predictions of the GPipe simulator (plan/simulate.py), or for a training
plan of its schedule's (plan/schedule.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ..core.errors import InfeasibleError, InvalidInputError
from ..core.fleet import Fleet
from ..core.kv import LATENCY, OBJECTIVES, smallest_kv_tokens, stage_kv_tokens
from ..core.partition import Partition, evaluate
from ..core.problem import Problem
from ..core.status import Status
from ..frontend.chain import chain_to_dict
from ..frontend.graph import LayerGraph
from ..hardware.catalogue import get_device
from .schedule import TrainSim, simulate_training
from .simulate import simulate_plan
from .types import HardwareInfo, ModelInfo, Plan, SolverInfo, StagePlan

__all__ = ["build_plan", "cluster_record", "fingerprint", "train_simulation"]


def fingerprint(graph: LayerGraph, name: str | None = None) -> str:
    """sha256 of the model's structure: layer names and byte footprints in order, the model
    input and the link, not the latencies (a re-profiled or re-costed model is the same
    model). The runner refuses a plan whose model does not match. ``name`` stands in for the
    graph's own (a checkpoint's folder is not the name the plan was made under)."""
    doc = chain_to_dict(graph)
    if name is not None:
        doc["name"] = name
    for layer in doc["layers"]:
        layer.pop("latency_s", None)
        layer.pop("kv_bytes_per_token", None)  # derived data: plans made before it still match
        layer.pop("backward_latency_s", None)  # a time, as latency_s
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _tokens_per_microbatch(workload: dict[str, Any]) -> int | None:
    """Tokens one micro-batch yields per pass: the stage latencies are per micro-batch."""
    batch, seq = workload.get("micro_batch") or workload.get("batch"), workload.get("seq_len")
    if workload.get("throughput_unit") == "samples" and isinstance(batch, int):
        return batch  # images: the "tokens" of a vision model's throughput are samples
    if isinstance(batch, int) and isinstance(seq, int):
        return batch * (1 if workload.get("phase", "prefill") == "decode" else seq)
    return None


def build_plan(
    graph: LayerGraph,
    problem: Problem,
    partition: Partition,
    *,
    device: str | None = None,
    tier: str | None = None,
    time_limit_s: float | None = None,
    workload: dict[str, Any] | None = None,
    source: str | None = None,
    engine: dict[str, Any] | None = None,
    objective: str = LATENCY,
) -> Plan:
    """Turn a feasible Partition into a Plan (stage tables, objective, predictions);
    InfeasibleError, with the diagnosis, for an infeasible one. ``objective`` names what the
    partition was solved for (latency, or kv-capacity: algorithms/kv.py); every plan records
    its KV capacity, the tokens of KV cache its tightest stage's free memory holds."""
    if partition.status is Status.INFEASIBLE:
        raise InfeasibleError(partition.diagnosis or "no partition fits")
    if objective not in OBJECTIVES:
        raise InvalidInputError(f"expected {' or '.join(OBJECTIVES)}, got {objective!r}",
                                field="objective")
    resident = partition.resident
    costs = evaluate(problem, partition.bounds, tp_degrees=partition.tp_degrees,
                     resident=resident, ranks=partition.ranks)
    # KV capacity is a serving figure: a training step holds no KV cache
    has_kv = problem.kv_bytes_per_token is not None and problem.training is None
    kv_tokens = stage_kv_tokens(problem, costs) if has_kv else [None] * len(costs)
    fleet = problem.fleet
    tr = problem.training
    stages = []
    for j, cost in enumerate(costs):
        s, e, rank = cost.start, cost.end, cost.rank
        train: dict[str, Any] = {}
        if tr is not None:
            forward = float(problem.prefix_latency[e] - problem.prefix_latency[s])
            out = float(problem.transfer_s[e]) if e < problem.n else 0.0
            train = {"forward_s": forward,
                     "backward_s": float(tr.backward_latency_s[s:e].sum()),
                     "transfer_out_s": out,
                     "microbatches_in_flight": tr.in_flight(len(costs) - j)}
        stages.append(StagePlan(
            index=j, device_rank=rank, layers=problem.names[s:e], memory_bytes=cost.memory_bytes,
            headroom_bytes=cost.capacity_bytes - cost.memory_bytes, latency_s=cost.time_s,
            compute_s=cost.time_s - cost.transfer_in_s - train.get("transfer_out_s", 0.0),
            transfer_in_s=cost.transfer_in_s,
            tp_degree=cost.tp_degree,
            resident_layers=None if resident is None else
            tuple(problem.names[i] for i in range(s, e) if resident[i]),
            device_type=None if fleet is None else fleet.kinds[fleet.rank_kind[rank]],
            node=None if fleet is None else fleet.rank_node[rank],
            kv_bytes_per_token=problem.stage_kv_bytes(s, e) if has_kv else None,
            kv_capacity_tokens=kv_tokens[j],
            **train,
        ))
    times = [st.latency_s for st in stages]
    bottleneck = max(times)
    workload = dict(workload if workload is not None else graph.metadata.get("workload", {}))
    if tr is not None:
        workload.update(phase="train", schedule=tr.schedule, microbatches=tr.microbatches)
    tokens = _tokens_per_microbatch(workload)
    plan = Plan(
        model=ModelInfo(graph.name, fingerprint(graph), problem.n, source,
                        graph.metadata.get("granularity"),
                        graph.metadata.get("latency_source")),  # "profile": measured times
        workload=workload,
        hardware=HardwareInfo(device, tier, problem.capacity_bytes, problem.max_stages,
                              problem.memory_model.value,
                              None if problem.link is None else problem.link.to_dict(),
                              None if fleet is None else cluster_record(fleet)),
        method=partition.method,
        solver=SolverInfo(partition.status, partition.objective, partition.bound, partition.gap,
                          partition.wall_s, partition.backend, time_limit_s, _record(partition)),
        stages=tuple(stages),
        objective={
            "max_stage_latency_s": bottleneck,
            "sum_stage_latency_s": sum(times),
            "total_transfer_s": sum(st.transfer_in_s + (st.transfer_out_s or 0.0)
                                    for st in stages),
            "num_stages": len(stages),
            "bottleneck_stage": times.index(bottleneck),
            "name": objective,
            "kv_capacity_tokens": smallest_kv_tokens(kv_tokens),
        },
        predicted={
            # Steady state of a full pipeline: one micro-batch leaves every bottleneck interval.
            "microbatches_per_s": 1.0 / bottleneck if bottleneck > 0 else 0.0,
            "fill_latency_s": sum(times),
            "tokens_per_s": tokens / bottleneck if tokens and bottleneck > 0 else None,
        },
        engine=engine,
    )
    if tr is not None:
        return _with_training(plan, graph, device)
    return _with_simulation(plan)


def cluster_record(fleet: Fleet) -> dict[str, Any]:
    """The cluster as the plan records it: cluster JSON with each kind's capacity resolved, and
    the placement."""
    counts: list[dict[str, int]] = [{} for _ in fleet.node_links]
    for k, g in zip(fleet.rank_kind, fleet.rank_node, strict=True):
        counts[g][fleet.kinds[k]] = counts[g].get(fleet.kinds[k], 0) + 1
    nodes = [{"devices": c, "link": link.to_dict()}
             for c, link in zip(counts, fleet.node_links, strict=True)]
    return {"name": fleet.name, "placement": fleet.placement,
            "device_types": {kind: {"capacity_bytes": cap}
                             for kind, cap in zip(fleet.kinds, fleet.capacity_bytes, strict=True)},
            "nodes": nodes, "inter_node_link": fleet.inter_node_link.to_dict()}


def _record(partition: Partition) -> dict[str, Any]:
    """The solver record a plan keeps: how the method ran, and why auto chose it."""
    record = dict(partition.info)
    if partition.selection is not None:
        record.update(chosen_by="auto", why=partition.selection)
    return record


def _with_training(plan: Plan, graph: LayerGraph, device: str | None) -> Plan:
    """A training plan's predictions: one step under its schedule (plan/schedule.py), with the
    model FLOPs utilisation where the device's peak is known."""
    wl = plan.workload
    flops = sum(float(graph.graph.nodes[n].get("flops", 0.0)) for n in graph.order())
    peak = None
    if device is not None and flops > 0:
        peak = get_device(device).peak(str(wl.get("activation_dtype", "bf16")))
    sim = train_simulation(plan, flops_per_microbatch=3 * flops if flops > 0 else None,
                           peak_flops=peak)
    bottleneck = plan.objective["max_stage_latency_s"]
    predicted = {"microbatches_per_s": 1.0 / bottleneck if bottleneck > 0 else 0.0,
                 "step_s": sim.step_s, "microbatches": sim.microbatches,
                 "schedule": sim.schedule, "bubble_fraction": sim.bubble_fraction,
                 "tokens_per_s": sim.tokens_per_s, "mfu": sim.mfu}
    return dataclasses.replace(plan, predicted=predicted)


def train_simulation(plan: Plan, *, flops_per_microbatch: float | None = None,
                     peak_flops: float | None = None) -> TrainSim:
    """Simulate a training plan's step: stage j's forward is its forward pass and inbound
    transfer, its backward the backward pass and the gradient transfer it is charged."""
    forward = [(st.forward_s or 0.0) + st.transfer_in_s for st in plan.stages]
    backward = [(st.backward_s or 0.0) + (st.transfer_out_s or 0.0) for st in plan.stages]
    wl = plan.workload
    return simulate_training(forward, backward, wl["microbatches"], wl["schedule"],
                             tokens_per_microbatch=_tokens_per_microbatch(wl),
                             flops_per_microbatch=flops_per_microbatch, peak_flops=peak_flops)


def _with_simulation(plan: Plan) -> Plan:
    """Add the simulator's view of one batch: fill and drain included."""
    if plan.objective["max_stage_latency_s"] <= 0:
        return plan
    sim = simulate_plan(plan)
    predicted = {**plan.predicted, "microbatches": sim.microbatches,
                 "batch_makespan_s": sim.makespan_s, "batch_tokens_per_s": sim.tokens_per_s,
                 "bubble_fraction": sim.bubble_fraction, "tpot_paper_s": sim.tpot_paper_s,
                 "tpot_per_sequence_s": sim.tpot_per_sequence_s}
    return dataclasses.replace(plan, predicted=predicted)
