"""Plans are checked, not trusted: the model a plan names is rebuilt and every stage's numbers
recomputed by the problem's own formulas (core/partition.py ``evaluate``), so a hand edit that
moves a layer, changes a figure or names a layer the model does not have is refused before a
plan is shown, simulated, exported or run.

What is rebuilt is what ``cachepart solve`` built: the model from ``model.source`` (a zoo name,
a spec YAML, a Hugging Face config.json or checkpoint directory, a chain JSON) under the plan's
workload, granularity, device and tier; its cluster from ``hardware.cluster``; tensor
parallelism from the stages' degrees; tiered residency from their resident layers; a training
plan's schedule and micro-batches. Bytes must agree exactly, times to a relative 1e-6.

A plan whose model cannot be rebuilt (no source, a source file that is gone or no longer
builds, a torch module factory, whose sample input the plan does not record) keeps the checks
loading made (layer count and uniqueness, the numbers' consistency) and is not refused for it;
neither are times the plan says were measured (``model.latency_source`` "profile"), nor, on a
cluster, the times of a device kind whose catalogue device or tier the plan does not record,
nor those of tensor-parallel stages of a chain JSON without a link (solve used --device's).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError
from ..core.partition import StageCost, evaluate
from ..core.problem import Problem
from .types import COST_MODEL_SINCE, Plan, StagePlan

__all__ = ["REL_TOL", "VerifyResult", "verify_plan"]

REL_TOL = 1e-6
"""Times agree when they differ by at most this share of the larger (bytes agree exactly)."""

_MEASURED = ("profile",)
"""``model.latency_source`` values whose times the cost model cannot redo."""


@dataclass(frozen=True)
class VerifyResult:
    """What verify_plan held to the model (it raises on a disagreement)."""

    rebuilt: bool
    """Whether the model was rebuilt and the stages' numbers recomputed."""
    source_kind: str | None
    """zoo, spec, hf-config, hf-checkpoint or chain; None when not rebuilt."""
    checked: tuple[str, ...]
    """The fields compared: layers, fingerprint, memory_bytes, latency_s..."""
    not_checked: tuple[str, ...]
    """One line for each thing left unchecked, and why."""
    wall_s: float


def _before_calibration(plan: Plan) -> str | None:
    """Why the plan's times may differ from today's model, when its schema predates the
    calibrated cost model (COST_MODEL_SINCE); else None."""
    try:
        older = tuple(map(int, plan.schema_version.split("."))) < \
            tuple(map(int, COST_MODEL_SINCE.split(".")))
    except ValueError:
        return None
    return (f"the plan (schema {plan.schema_version}) was timed by the cost model before "
            f"calibration, schema {COST_MODEL_SINCE}") if older else None


class _Fail(Exception):
    """A check that failed: the field's path and the reason, worded by verify_plan."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


def verify_plan(plan: Plan, where: str = "plan") -> VerifyResult:
    """Rebuild the plan's model and hold every stage to it: its layers (the model's, in order,
    each once), the model's fingerprint, each stage's memory, times, passes and KV bytes, the
    link. InvalidInputError, one line naming ``where``, the stage and the field, on the first
    disagreement (``stages/1/memory_bytes: recorded 123, the model gives 456``)."""
    start = time.perf_counter()
    try:
        rebuilt = _rebuild(plan)
        if isinstance(rebuilt, str):
            return VerifyResult(False, None, (), (rebuilt,), time.perf_counter() - start)
        checked, skipped = _check(plan, rebuilt)
    except _Fail as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    return VerifyResult(True, rebuilt.kind, checked, skipped, time.perf_counter() - start)


# ----- rebuilding the model ---------------------------------------------------------------------
@dataclass
class _Model:
    kind: str
    graph: Any
    problem: Problem
    timed: list[bool]
    """Per stage: whether its times can be recomputed."""
    tp_link_known: bool = True


def _is_factory(source: str) -> bool:
    head, sep, tail = source.rpartition(":")
    return bool(sep) and tail.isidentifier() and not Path(source).exists() and bool(head)


def _is_chain(source: str) -> bool:
    """A chain JSON, as load_model tells one from a Hugging Face config.json."""
    path = Path(source)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "layers" in doc


def _rebuild(plan: Plan) -> _Model | str:
    """The plan's model and problem, or why they cannot be rebuilt."""
    from models.zoo import zoo_names

    from ..hardware.catalogue import DEVICES
    from ..hardware.footprint import Workload

    source = plan.model.source
    if not source:
        return "the model: the plan names no model.source to rebuild it from"
    if _is_factory(source):
        return (f"the model: {source!r} is a torch module factory, whose sample input the plan "
                "does not record")
    if source not in zoo_names() and not Path(source).exists():
        return f"the model: {source!r} is gone"
    device = plan.hardware.device or "h100-sxm"
    if device not in DEVICES:
        return f"the model: device {device!r} is not in the catalogue here"
    workload = Workload()  # a chain JSON carries its own sizes: its workload is a record
    if not _is_chain(source):
        fields = Workload.__dataclass_fields__
        try:
            workload = Workload(**{k: v for k, v in plan.workload.items() if k in fields})
        except TypeError as exc:  # a field given a value of the wrong kind
            raise _Fail("workload", str(exc)) from None
        except InvalidInputError as exc:
            raise _Fail(f"workload/{exc.field}" if exc.field else "workload",
                        exc.reason) from None
    granularity: Any = plan.model.granularity or "block"
    try:
        loaded = _load(source, workload, granularity, device, plan.hardware.tier)
    except InvalidInputError as exc:  # the file is there, but no longer this kind of model
        return f"the model: {source!r} no longer builds ({exc})"
    return _problem(plan, loaded, workload, granularity)


def _load(source: str, workload: Any, granularity: Any, device: str, tier: str | None) -> Any:
    from ..frontend.sources import load_model

    return load_model(source, workload, granularity=granularity, device=device, tier=tier)


def _problem(plan: Plan, loaded: Any, workload: Any, granularity: Any) -> _Model:
    """The problem the plan was solved on, with the extensions its stages use."""
    from ..frontend.lower import (
        problem_from_graph,
        residency_for,
        tensor_parallel_for,
        training_for,
    )
    from ..hardware.catalogue import get_device

    graph, hw = loaded.graph, plan.hardware
    timed = [plan.model.latency_source not in _MEASURED] * len(plan.stages)
    fleet = None
    if hw.cluster:
        fleet, known = _fleet(plan, loaded, workload, granularity)
        timed = [t and (st.device_type in known) for t, st in zip(timed, plan.stages,
                                                                   strict=True)]
    problem = problem_from_graph(graph, fleet.capacity_bytes[fleet.rank_kind[0]]
                                 if fleet is not None else hw.capacity_bytes,
                                 hw.devices, hw.memory_model, fleet=fleet)
    model = _Model(loaded.kind, graph, problem, timed)
    if plan.workload.get("phase") == "train":
        problem = problem.replace(training=training_for(
            graph, plan.workload["schedule"], plan.workload["microbatches"]))
    degrees = sorted({st.tp_degree for st in plan.stages} | {1})
    if degrees != [1]:
        if fleet is not None:
            link, per_node = fleet.node_links[0], max(fleet.rank_node.count(g)
                                                      for g in range(fleet.nodes))
        else:
            link, per_node = graph.link, max(degrees)
            if loaded.kind != "chain":
                link = get_device(hw.device or "h100-sxm").link
            elif link is None:  # solve took --device's link, which a chain's plan does not keep
                link, model.tp_link_known = get_device("h100-sxm").link, False
        problem = problem.replace(tensor_parallel=tensor_parallel_for(
            graph, degrees, max(per_node, max(degrees)), link))
    if any(st.resident_layers is not None for st in plan.stages):
        try:
            problem = problem.replace(residency=residency_for(graph))
        except InvalidInputError as exc:
            j = next(st.index for st in plan.stages if st.resident_layers is not None)
            raise _Fail(f"stages/{j}/resident_layers", exc.reason) from None
    model.problem = problem
    return model


def _fleet(plan: Plan, loaded: Any, workload: Any, granularity: Any) -> tuple[Any, set[str]]:
    """The cluster extension from the plan's cluster record, and the device kinds whose times
    are known: every kind for a chain JSON (its own times), else rank 0's kind (the plan's
    device and tier) and the kinds whose catalogue device and tier the record pins down."""
    import numpy as np

    from ..frontend.lower import fleet_for, kind_latencies, overheads_of
    from ..hardware.cluster import cluster_from_dict

    record = plan.hardware.cluster or {}
    kinds_raw = record["device_types"]
    doc = {"name": record["name"], "inter_node_link": _link(record["inter_node_link"]),
           "nodes": [{"devices": node["devices"], "link": _link(node["link"])}
                     for node in record["nodes"]],
           "device_types": {k: {f: v[f] for f in ("capacity_bytes", "device") if f in v}
                            for k, v in kinds_raw.items()}}
    try:
        cluster = cluster_from_dict(doc)
    except InvalidInputError as exc:
        raise _Fail("hardware/cluster", str(exc)) from None
    capacities = {k: int(v["capacity_bytes"]) for k, v in kinds_raw.items()}
    graph = loaded.graph
    if loaded.kind == "chain":
        return fleet_for(cluster, kind_latencies(graph, cluster.kinds), capacities,
                         record["placement"]), set(cluster.kinds)
    first = cluster.ranks[0][0]
    n = len(graph.order())
    latencies = {first: np.array([layer["latency_s"] for layer in graph.layers()])}
    fixed = {first: overheads_of(graph)}
    known = {first}
    for kind in cluster.device_types:
        if kind.name == first:
            continue
        tier = _kind_tier(kind, capacities[kind.name], plan.hardware.tier)
        if kind.device is None or tier is False:
            latencies[kind.name] = fixed[kind.name] = np.zeros(n)
            continue
        other = _load(plan.model.source or "", workload, granularity, kind.device.name,
                      tier if isinstance(tier, str) else None)
        latencies[kind.name] = np.array([layer["latency_s"] for layer in other.graph.layers()])
        fixed[kind.name] = overheads_of(other.graph)
        known.add(kind.name)
    return fleet_for(cluster, latencies, capacities, record["placement"], fixed), known


def _link(raw: Any) -> Any:
    """A link record's two numbers (a newer plan's other fields are not this version's)."""
    if not isinstance(raw, dict):
        return raw
    return {k: raw[k] for k in ("bandwidth_bytes_per_s", "latency_s") if k in raw}


def _kind_tier(kind: Any, capacity: int, tier: str | None) -> str | bool | None:
    """The tier a cluster kind's times were taken at (solve: the --capacity tier for a kind
    without its own capacity, else none); False when the record cannot tell."""
    device = kind.device
    if device is None:
        return False
    if tier is not None:
        return tier if device.tiers.get(tier) == capacity else None
    on_chip = {c for t, c in device.tiers.items() if t != device.main_memory}
    return False if capacity in on_chip else None


# ----- the checks -------------------------------------------------------------------------------
def _check(plan: Plan, model: _Model) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from ..plan.build import fingerprint

    problem = model.problem
    names = list(problem.names)
    label = plan.model.name
    _check_layers(plan, names, label)
    found = fingerprint(model.graph)
    if found != plan.model.fingerprint:
        stale = _before_calibration(plan)
        why = (f"{stale}, or the model changed: solve it again" if stale else
               "the model or the device catalogue changed since the plan was made, or the plan "
               "was edited: re-solve it")
        raise _Fail("model/fingerprint", f"recorded {plan.model.fingerprint}, "
                    f"{plan.model.source!r} rebuilt with the plan's workload gives {found} "
                    f"({why})")
    link = None if problem.link is None else problem.link.to_dict()
    recorded = _link(plan.hardware.link)
    if not plan.hardware.cluster and "hardware/link" not in plan.derived and recorded != link:
        raise _Fail("hardware/link", f"recorded {recorded}, the model gives {link}")
    _check_capacity(plan)
    bounds = [0]
    for st in plan.stages:
        bounds.append(bounds[-1] + len(st.layers))
    resident = None
    if any(st.resident_layers is not None for st in plan.stages):  # None: every layer's
        resident = [st.resident_layers is None or name in st.resident_layers
                    for st in plan.stages for name in st.layers]
    costs = evaluate(problem, bounds, tp_degrees=[st.tp_degree for st in plan.stages],
                     resident=resident,
                     ranks=[st.device_rank for st in plan.stages] if problem.fleet else None)
    skipped = [reason for reason in (_why_untimed(plan, model),) if reason]
    fields: set[str] = {"layers", "fingerprint", "memory_bytes", "transfer_in_s"}
    for st, cost in zip(plan.stages, costs, strict=True):
        timed = model.timed[st.index] and (model.tp_link_known or st.tp_degree == 1)
        fields |= _check_stage(plan, st, cost, problem, timed)
    return tuple(sorted(fields)), tuple(skipped)


def _check_layers(plan: Plan, names: list[str], label: str) -> None:
    """Every stage's layers are the model's, in order, each once."""
    known = set(names)
    for st in plan.stages:
        for name in st.layers:
            if name not in known:
                raise _Fail(f"stages/{st.index}/layers", f"{name!r} is not a layer of {label}")
    if plan.model.num_layers != len(names):
        raise _Fail("model/num_layers", f"recorded {plan.model.num_layers}, {label} has "
                    f"{len(names)} layers")
    position = 0
    for st in plan.stages:
        for name in st.layers:
            if position == len(names):
                raise _Fail(f"stages/{st.index}/layers",
                            f"{name!r} after the last of {label}'s layers")
            if name != names[position]:
                raise _Fail(f"stages/{st.index}/layers", f"{name!r} where {label}'s layers in "
                            f"order give {names[position]!r}")
            position += 1
    if position < len(names):
        raise _Fail("stages", f"{names[position]!r} of {label} is in no stage")


def _check_capacity(plan: Plan) -> None:
    """The capacity the stages were fitted to is the device's tier (the engine's device's,
    which it then takes its share of)."""
    from ..hardware.catalogue import get_device

    hw = plan.hardware
    if hw.cluster or hw.tier is None or hw.device is None:
        return
    expected = get_device(hw.device).tiers.get(hw.tier)
    if expected is None:
        return
    if plan.engine is not None:
        recorded, path = plan.engine.get("device_capacity_bytes"), "engine/device_capacity_bytes"
    else:
        recorded, path = hw.capacity_bytes, "hardware/capacity_bytes"
    if recorded != expected:
        raise _Fail(path, f"recorded {recorded}, {hw.device}'s {hw.tier} holds {expected}")


def _why_untimed(plan: Plan, model: _Model) -> str | None:
    if plan.model.latency_source in _MEASURED:
        return f"times: measured ({plan.model.latency_source}), not the cost model's"
    kinds = sorted({st.device_type or "?" for st in plan.stages if not model.timed[st.index]})
    if kinds:
        return (f"times: of device kind {', '.join(kinds)}, whose device or tier the plan's "
                "cluster record does not give")
    if not model.tp_link_known and any(st.tp_degree > 1 for st in plan.stages):
        return "times: of tensor-parallel stages of a chain JSON without a link"
    return None


def _check_stage(plan: Plan, st: StagePlan, cost: StageCost, problem: Problem,
                 timed: bool) -> set[str]:
    """One stage against its evaluation: bytes exactly, times to REL_TOL."""
    derived = set(plan.derived)
    where = f"stages/{st.index}"

    def same_bytes(name: str, recorded: int | None, expected: int | None) -> None:
        if f"{where}/{name}" not in derived and (recorded or 0) != (expected or 0):
            raise _Fail(f"{where}/{name}", f"recorded {recorded}, the model gives {expected}")

    def same_time(name: str, recorded: float | None, expected: float) -> None:
        if f"{where}/{name}" in derived:
            return
        scale = max(abs(recorded or 0.0), abs(expected), REL_TOL * abs(st.latency_s))
        if recorded is None or not math.isfinite(recorded) or \
                abs(recorded - expected) > REL_TOL * scale:
            hint = "" if name == "transfer_in_s" else \
                " (the cost model's; a plan timed by --profile records model.latency_source " \
                "'profile')"
            if (stale := _before_calibration(plan)) is not None:
                hint = f" ({stale}; solve it again)"
            raise _Fail(f"{where}/{name}", f"recorded {recorded}, the model gives {expected}{hint}")

    same_bytes("memory_bytes", st.memory_bytes, cost.memory_bytes)
    has_kv = problem.kv_bytes_per_token is not None and problem.training is None
    same_bytes("kv_bytes_per_token", st.kv_bytes_per_token,
               problem.stage_kv_bytes(cost.start, cost.end) if has_kv else None)
    same_time("transfer_in_s", st.transfer_in_s, cost.transfer_in_s)
    fields = {"kv_bytes_per_token"}
    if not timed:
        return fields
    out = 0.0
    tr = problem.training
    if tr is not None:
        s, e = cost.start, cost.end
        out = float(problem.transfer_s[e]) if e < problem.n else 0.0
        same_time("forward_s", st.forward_s,
                  float(problem.prefix_latency[e] - problem.prefix_latency[s]))
        same_time("backward_s", st.backward_s, float(tr.backward_latency_s[s:e].sum()))
        same_time("transfer_out_s", st.transfer_out_s, out)
        fields |= {"forward_s", "backward_s", "transfer_out_s"}
    same_time("latency_s", st.latency_s, cost.time_s)
    same_time("compute_s", st.compute_s, cost.time_s - cost.transfer_in_s - out)
    return fields | {"latency_s", "compute_s"}
