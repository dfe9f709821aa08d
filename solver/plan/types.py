"""Plan: the one deployment record every method produces and every consumer reads.

A plan round-trips through JSON (``schema_version`` 1.x); loading validates it against the JSON
Schema shipped in ``solver/data/plan.schema.json`` and checks that its numbers agree. Plans are
built from an answer by plan/build.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ..core.errors import InvalidInputError
from ..core.files import read_json
from ..core.status import Status
from ..core.training import MAX_MICROBATCHES, SCHEDULES

__all__ = [
    "SCHEMA_VERSION",
    "HardwareInfo",
    "ModelInfo",
    "Plan",
    "SolverInfo",
    "StagePlan",
    "load_plan",
    "plan_schema",
]

SCHEMA_VERSION = "1.4"
"""1.1: stages may carry device_type and node, hardware may carry the cluster. 1.2: the
engine the plan was shaped for. 1.3: KV capacity per stage and per plan, the objective's name.
1.4: training plans (each stage's forward, backward, outbound transfer and micro-batches in
flight; the schedule's predictions)."""


@lru_cache(maxsize=1)
def plan_schema() -> dict[str, Any]:
    text = resources.files("solver").joinpath("data/plan.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fingerprint: str
    num_layers: int
    source: str | None = None
    """The MODEL argument the plan was made from (zoo name, file path, module factory)."""
    granularity: str | None = None


@dataclass(frozen=True)
class HardwareInfo:
    device: str | None
    tier: str | None
    capacity_bytes: int
    devices: int
    memory_model: str
    link: dict[str, float] | None = None
    cluster: dict[str, Any] | None = None
    """The cluster the plan is placed on, as cluster JSON with every kind's capacity resolved,
    and its ``placement`` (ordered or free)."""

    def rank_kinds(self) -> list[tuple[str, int]]:
        """(device kind, node) of every rank of the cluster; [] without one."""
        if not self.cluster:
            return []
        nodes = self.cluster["nodes"]
        total = sum(int(c) for node in nodes for c in node["devices"].values())
        if total > 100_000:  # hardware.cluster's limit; a hand edit could ask for billions
            raise InvalidInputError(f"hardware.cluster: {total:,} devices, more than the 100,000 "
                                    "a cluster may have")
        return [(kind, g) for g, node in enumerate(nodes)
                for kind, count in node["devices"].items() for _ in range(int(count))]


@dataclass(frozen=True)
class SolverInfo:
    status: Status
    objective: float | None
    bound: float | None
    gap: float | None
    wall_s: float
    backend: str | None = None
    time_limit_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StagePlan:
    index: int
    device_rank: int
    layers: tuple[str, ...]
    memory_bytes: int
    headroom_bytes: int
    latency_s: float
    compute_s: float
    transfer_in_s: float
    tp_degree: int = 1
    """Devices the stage spans (tensor parallelism); memory_bytes is per device."""
    resident_layers: tuple[str, ...] | None = None
    """Tiered residency: the layers whose weights stay in the on-chip tier (None: all)."""
    device_type: str | None = None
    """On a cluster: the kind of the stage's devices."""
    node: int | None = None
    """On a cluster: the node of the stage's devices."""
    kv_bytes_per_token: int | None = None
    """KV-cache bytes one token of context adds to the stage (all its devices together); None
    when the model gives no KV figures."""
    kv_capacity_tokens: int | None = None
    """Tokens of KV cache the stage's free memory (headroom, per device) holds, the KV split
    over its tp_degree devices; None when it holds no KV."""
    forward_s: float | None = None
    """Training plans: the forward pass of one micro-batch (compute only); None otherwise."""
    backward_s: float | None = None
    """Training plans: the backward pass of one micro-batch, recompute included."""
    transfer_out_s: float | None = None
    """Training plans: the gradient of the stage's last activation across the cut after it
    (0 for the last stage), as the training problem charges it (solver/core/training.py)."""
    microbatches_in_flight: int | None = None
    """Training plans: the micro-batches whose stashes the stage holds at once (M under GPipe,
    min(P - j, M) under 1F1B)."""


@dataclass(frozen=True)
class Plan:
    model: ModelInfo
    workload: dict[str, Any]
    hardware: HardwareInfo
    method: str
    solver: SolverInfo
    stages: tuple[StagePlan, ...]
    objective: dict[str, Any]
    predicted: dict[str, Any]
    schema_version: str = SCHEMA_VERSION
    engine: dict[str, Any] | None = None
    """``solve --engine``: {name, memory_fraction, device_capacity_bytes}; the stages' capacity
    (hardware.capacity_bytes) is the model's share of the device."""

    def to_dict(self) -> dict[str, Any]:
        doc = self._doc()
        if self.engine is not None:
            doc["engine"] = dict(self.engine)
        return doc

    def _doc(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "model": vars(self.model).copy(),
            "workload": dict(self.workload),
            "hardware": vars(self.hardware).copy(),
            "method": self.method,
            "solver": {**vars(self.solver), "status": self.solver.status.value,
                       "info": dict(self.solver.info)},
            "stages": [{**vars(s), "layers": list(s.layers),
                        "resident_layers": None if s.resident_layers is None
                        else list(s.resident_layers)} for s in self.stages],
            "objective": dict(self.objective),
            "predicted": dict(self.predicted),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        try:
            Path(path).write_text(self.to_json(), encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(f"cannot write {path} ({exc.strerror or exc})",
                                    field="output") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "plan") -> Plan:
        """Validate against the schema, then build; errors name the source and the field."""
        try:
            jsonschema.validate(data, plan_schema())
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
            raise InvalidInputError(f"{source}: {where}: {exc.message}") from None
        major = data["schema_version"].split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise InvalidInputError(f"{source}: schema_version {data['schema_version']!r} is not "
                                    f"readable by this version (reads {SCHEMA_VERSION})")
        solver = dict(data["solver"])
        solver["status"] = Status(solver["status"])
        solver.setdefault("info", {})
        plan = cls(
            schema_version=data["schema_version"],
            model=ModelInfo(**data["model"]),
            workload=dict(data["workload"]),
            hardware=HardwareInfo(**data["hardware"]),
            method=data["method"],
            solver=SolverInfo(**solver),
            stages=tuple(StagePlan(**{**s, "layers": tuple(s["layers"]),
                                      "resident_layers": None if s.get("resident_layers") is None
                                      else tuple(s["resident_layers"])})
                         for s in data["stages"]),
            objective=dict(data["objective"]),
            predicted=dict(data["predicted"]),
            engine=None if data.get("engine") is None else dict(data["engine"]),
        )
        plan.check(source)
        return plan

    def check(self, source: str = "plan") -> None:
        """Consistency the schema cannot express: stage order, capacity, layer count."""
        for position, stage in enumerate(self.stages):
            if stage.index != position:
                raise InvalidInputError(f"{source}: stages/{position}/index: expected {position}, "
                                        f"got {stage.index}")
            capacity = self._capacity(stage, source)
            if stage.memory_bytes > capacity:
                raise InvalidInputError(
                    f"{source}: stages/{position}/memory_bytes: {stage.memory_bytes} exceeds "
                    f"the capacity {capacity} of its device")
        layers = [name for stage in self.stages for name in stage.layers]
        if len(layers) != self.model.num_layers or len(set(layers)) != len(layers):
            raise InvalidInputError(f"{source}: stages: list {len(layers)} layers "
                                    f"({len(set(layers))} distinct), model.num_layers is "
                                    f"{self.model.num_layers}")
        self._check_numbers(source)
        self._check_kv(source)
        self._check_training(source)
        used = sum(stage.tp_degree for stage in self.stages)
        if used > self.hardware.devices:
            raise InvalidInputError(f"{source}: stages: {len(self.stages)} stages on {used} "
                                    f"devices for hardware.devices {self.hardware.devices}")

    def _capacity(self, stage: StagePlan, source: str) -> int:
        """The capacity of the stage's device: its kind's on a cluster."""
        cluster = self.hardware.cluster
        if not cluster:
            return self.hardware.capacity_bytes
        kinds = cluster.get("device_types") or {}
        entry = kinds.get(stage.device_type) if isinstance(kinds, dict) else None
        capacity = entry.get("capacity_bytes") if isinstance(entry, dict) else None
        if isinstance(capacity, float) and capacity.is_integer():
            capacity = int(capacity)  # JSON 1e6: a whole number the schema takes as an integer
        if not isinstance(capacity, int):
            raise InvalidInputError(f"{source}: stages/{stage.index}/device_type: "
                                    f"{stage.device_type!r} is no device kind of "
                                    "hardware.cluster with a capacity")
        return capacity

    def _check_ranks(self, source: str) -> None:
        """Stages on devices that exist, one node and kind a stage, none twice; in order
        from rank 0 unless the cluster's placement is free."""
        ranks = self.hardware.rank_kinds()
        cluster = self.hardware.cluster or {}
        free = cluster.get("placement") == "free"
        taken: set[int] = set()
        rank = 0
        for st in self.stages:
            if not free and st.device_rank != rank:
                raise InvalidInputError(f"{source}: stages/{st.index}/device_rank: expected {rank} "
                                        f"(after the devices of the stages before), got "
                                        f"{st.device_rank}")
            rank += st.tp_degree
            block = set(range(st.device_rank, st.device_rank + st.tp_degree))
            if block & taken:
                raise InvalidInputError(f"{source}: stages/{st.index}/device_rank: device "
                                        f"{min(block & taken)} hosts two stages")
            taken |= block
            if not ranks:
                continue
            if max(block) >= len(ranks) or len({ranks[r] for r in block}) != 1:
                raise InvalidInputError(f"{source}: stages/{st.index}/device_rank: ranks "
                                        f"{st.device_rank}..{max(block)} are not devices of one "
                                        f"kind and node of the {len(ranks)} of hardware.cluster")
            kind, node = ranks[st.device_rank]
            if (st.device_type, st.node) != (kind, node):
                raise InvalidInputError(f"{source}: stages/{st.index}: device_type "
                                        f"{st.device_type!r} on node {st.node}, but rank "
                                        f"{st.device_rank} is a {kind!r} of node {node}")

    def _check_numbers(self, source: str) -> None:
        """Numbers a hand edit can make disagree: each is recomputed from the stages."""
        if self.solver.status is Status.INFEASIBLE:
            raise InvalidInputError(f"{source}: solver/status: 'infeasible' for a plan with stages")
        self._check_ranks(source)
        for st in self.stages:
            for name in ("latency_s", "compute_s", "transfer_in_s"):
                if not math.isfinite(getattr(st, name)):
                    raise InvalidInputError(f"{source}: stages/{st.index}/{name}: must be finite, "
                                            f"got {getattr(st, name)}")
            if st.headroom_bytes != self._capacity(st, source) - st.memory_bytes:
                raise InvalidInputError(f"{source}: stages/{st.index}/headroom_bytes: "
                                        f"{st.headroom_bytes} is not capacity - memory_bytes")
        times = [st.latency_s for st in self.stages]
        claimed = self.objective["max_stage_latency_s"]
        if not _close(claimed, max(times)):
            raise InvalidInputError(f"{source}: objective/max_stage_latency_s: {claimed} is not the "
                                    f"largest stage latency {max(times)}")
        for key, expected in (("num_stages", len(self.stages)),
                              ("bottleneck_stage", times.index(max(times)))):
            if key in self.objective and self.objective[key] != expected:
                raise InvalidInputError(f"{source}: objective/{key}: expected {expected}, got "
                                        f"{self.objective[key]}")
        wl = self.workload
        for key in ("batch", "micro_batch", "seq_len"):
            value = wl.get(key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"{source}: workload/{key}: must be a whole number >= 1, "
                                        f"got {value!r}")
        if isinstance(wl.get("batch"), int) and isinstance(wl.get("micro_batch"), int) and \
                wl["micro_batch"] > wl["batch"]:
            raise InvalidInputError(f"{source}: workload/micro_batch: {wl['micro_batch']} exceeds "
                                    f"batch {wl['batch']}")

    def _check_training(self, source: str) -> None:
        """A training plan's schedule and each stage's passes, as build_plan wrote them: the
        simulator reads them, so a hand edit that breaks them is refused here."""
        wl = self.workload
        fields = ("forward_s", "backward_s", "transfer_out_s", "microbatches_in_flight")
        if wl.get("phase") != "train":
            for st in self.stages:
                for name in fields:
                    if getattr(st, name) is not None:
                        raise InvalidInputError(f"{source}: stages/{st.index}/{name}: only a "
                                                "training plan (workload.phase train) has it")
            return
        schedule, m = wl.get("schedule"), wl.get("microbatches")
        if schedule not in SCHEDULES:
            raise InvalidInputError(f"{source}: workload/schedule: expected "
                                    f"{' or '.join(SCHEDULES)}, got {schedule!r}")
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_MICROBATCHES:
            raise InvalidInputError(f"{source}: workload/microbatches: expected a whole number "
                                    f"in 1..{MAX_MICROBATCHES:,}, got {m!r}")
        p = len(self.stages)
        for j, st in enumerate(self.stages):
            where = f"{source}: stages/{st.index}"
            values = {}
            for name in fields[:3]:
                value = getattr(st, name)
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not math.isfinite(value) or value < 0:
                    raise InvalidInputError(f"{where}/{name}: a training stage needs a time "
                                            f">= 0, got {value!r}")
                values[name] = float(value)
            expected = m if schedule == "gpipe" else min(p - j, m)
            if st.microbatches_in_flight != expected:
                raise InvalidInputError(f"{where}/microbatches_in_flight: {schedule} keeps "
                                        f"{expected} here, got {st.microbatches_in_flight!r}")
            total = values["forward_s"] + values["backward_s"] + st.transfer_in_s \
                + values["transfer_out_s"]
            if not _close(st.latency_s, total):
                raise InvalidInputError(f"{where}/latency_s: {st.latency_s} is not forward_s + "
                                        f"backward_s + transfer_in_s + transfer_out_s = {total}")
        mfu = self.predicted.get("mfu")
        if mfu is not None and not (isinstance(mfu, int | float) and 0 <= mfu <= 1):
            raise InvalidInputError(f"{source}: predicted/mfu: a utilisation in [0, 1], got "
                                    f"{mfu!r}")

    def _check_kv(self, source: str) -> None:
        """KV capacities a hand edit can make disagree: each stage's from its headroom, the
        plan's as the smallest stage's."""
        held = []
        for st in self.stages:
            kv, tokens = st.kv_bytes_per_token, st.kv_capacity_tokens
            expected = None if not kv else st.headroom_bytes * st.tp_degree // kv
            if kv is not None and tokens != expected:
                raise InvalidInputError(f"{source}: stages/{st.index}/kv_capacity_tokens: "
                                        f"{tokens} is not floor(headroom_bytes x tp_degree / "
                                        f"kv_bytes_per_token) = {expected}")
            if tokens is not None:
                held.append(tokens)
        if "kv_capacity_tokens" not in self.objective:
            return  # a plan written before the field
        claimed = self.objective["kv_capacity_tokens"]
        if claimed != (min(held) if held else None):
            raise InvalidInputError(f"{source}: objective/kv_capacity_tokens: {claimed} is not the "
                                    f"smallest stage's {min(held) if held else None}")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300)


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: expected a JSON object")
    return Plan.from_dict(data, source=str(path))
