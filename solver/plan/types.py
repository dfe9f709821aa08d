"""Plan: the one deployment record every method produces and every consumer reads.

A plan round-trips through JSON (``schema_version`` 1.x); loading validates it against the JSON
Schema shipped in ``solver/data/plan.schema.json`` and checks that its numbers agree. Plans are
built from an answer by plan/build.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ..core.errors import InvalidInputError
from ..core.files import read_json, write_text_whole
from ..core.status import Status
from ..core.training import MAX_MICROBATCHES, SCHEDULES

__all__ = [
    "COST_MODEL_SINCE",
    "SCHEMA_VERSION",
    "HardwareInfo",
    "ModelInfo",
    "Plan",
    "SolverInfo",
    "StagePlan",
    "load_plan",
    "plan_schema",
]

SCHEMA_VERSION = "1.6"
"""1.1: stages may carry device_type and node, hardware may carry the cluster. 1.2: the
engine the plan was shaped for. 1.3: KV capacity per stage and per plan, the objective's name.
1.4: training plans (each stage's forward, backward, outbound transfer and micro-batches in
flight; the schedule's predictions). 1.5: model.latency_source ("profile": measured times,
which verify_plan does not redo). 1.6: the same fields, timed by the calibrated cost model
(efficiencies per operation class and dtype, kernel overhead, two all-reduces a block, the head
on the last position in prefill); a plan of 1.5 or before loads, but its times are the earlier
model's, which verify_plan says."""

COST_MODEL_SINCE = "1.6"
"""The schema version from which plans carry the calibrated cost model's times."""


@lru_cache(maxsize=1)
def plan_schema() -> dict[str, Any]:
    text = resources.files("solver").joinpath("data/plan.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Any:
    """The schema's validator, the schema itself checked once (jsonschema.validate checks it
    on every call: most of a plan's loading time)."""
    schema = plan_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fingerprint: str
    num_layers: int
    source: str | None = None
    """The MODEL argument the plan was made from (zoo name, file path, module factory)."""
    granularity: str | None = None
    latency_source: str | None = None
    """Where the stage times came from: None or "cost-model" (the cost model, or a chain JSON's
    own times), "profile" (measured: ``solve --profile``), which verify_plan cannot redo."""


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
    derived: tuple[str, ...] = field(default=(), compare=False)
    """The fields the JSON left out ("stages/1/transfer_in_s"), which loading derived from the
    others or defaulted: not what the plan recorded, so verify_plan does not hold them to the
    model (to_dict writes them like the rest)."""

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
            write_text_whole(path, self.to_json())  # Ctrl-C never leaves half a plan
        except OSError as exc:
            raise InvalidInputError(f"cannot write {path} ({exc.strerror or exc})",
                                    field="output") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "plan") -> Plan:
        """Validate against the schema, then build; errors name the source and the field.

        Whatever the schema accepts is read: fields this version does not know are ignored,
        whole numbers written as 3.0 are read as 3, and the stage numbers the schema lets a
        plan leave out are derived (headroom from the capacity, compute and inbound transfer
        from the latency, a cluster stage's device kind and node from its rank), as are the
        objective's totals; ``derived`` lists what was filled in."""
        exc = jsonschema.exceptions.best_match(_validator().iter_errors(data))
        if exc is not None:  # the error jsonschema.validate raises
            where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
            raise InvalidInputError(f"{source}: {where}: {exc.message}") from None
        major = data["schema_version"].split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise InvalidInputError(f"{source}: schema_version {data['schema_version']!r} is not "
                                    f"readable by this version (reads {SCHEMA_VERSION})")
        data = _whole_numbers(data, plan_schema())
        solver = _known(SolverInfo, data["solver"])
        solver["status"] = Status(solver["status"])
        solver["info"] = dict(solver.get("info") or {})
        hardware = HardwareInfo(**_known(HardwareInfo, data["hardware"]))
        derived = [f"hardware/{name}" for name in ("link", "cluster")
                   if name not in data["hardware"]]
        stages = tuple(_stage(raw, j, hardware, derived, source)
                       for j, raw in enumerate(data["stages"]))
        plan = cls(
            schema_version=data["schema_version"],
            model=ModelInfo(**_known(ModelInfo, data["model"])),
            workload=dict(data["workload"]),
            hardware=hardware,
            method=data["method"],
            solver=SolverInfo(**solver),
            stages=stages,
            objective=_objective(data["objective"], stages, derived),
            predicted=dict(data["predicted"]),
            engine=None if data.get("engine") is None else dict(data["engine"]),
            derived=tuple(derived),
        )
        plan.check(source)
        return plan._with_training_predictions(derived)

    def _with_training_predictions(self, derived: list[str]) -> Plan:
        """A training plan whose predictions give its step but not the schedule's other
        figures: those are simulated again from its stages (plan/build.py)."""
        pred = self.predicted
        keys = ("microbatches", "schedule", "bubble_fraction")
        if "step_s" not in pred or all(key in pred for key in keys):
            return self
        from .build import train_simulation  # build imports this module

        sim = train_simulation(self)
        filled = {key: value for key, value in (("microbatches", sim.microbatches),
                                                ("schedule", sim.schedule),
                                                ("bubble_fraction", sim.bubble_fraction))
                  if key not in pred}
        return dataclasses.replace(self, predicted={**pred, **filled},
                                   derived=(*derived, *(f"predicted/{k}" for k in filled)))

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
        return _kind_capacity(self.hardware, stage.device_type, stage.index, source)

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
            for name in ("compute_s", "transfer_in_s"):
                if getattr(st, name) < 0:  # the schema's minimum, for a derived value too
                    raise InvalidInputError(f"{source}: stages/{st.index}/{name}: must be >= 0, "
                                            f"got {getattr(st, name)}")
            total = st.compute_s + st.transfer_in_s + (st.transfer_out_s or 0.0)
            if not _close(st.latency_s, total):
                raise InvalidInputError(f"{source}: stages/{st.index}/latency_s: {st.latency_s} is "
                                        f"not compute_s + transfer_in_s"
                                        f"{' + transfer_out_s' if st.transfer_out_s else ''} = "
                                        f"{total}")
            outside = [n for n in st.resident_layers or () if n not in st.layers]
            if outside:
                raise InvalidInputError(f"{source}: stages/{st.index}/resident_layers: "
                                        f"{outside[0]!r} is not a layer of the stage")
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
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
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
            if "step_s" in self.predicted:
                raise InvalidInputError(f"{source}: predicted/step_s: only a training plan "
                                        "(workload.phase train) has it")
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
            if tokens != expected:  # tokens without KV bytes a token too
                raise InvalidInputError(f"{source}: stages/{st.index}/kv_capacity_tokens: "
                                        f"{tokens} is not floor(headroom_bytes x tp_degree / "
                                        f"kv_bytes_per_token) = {expected}")
            if tokens is not None:
                held.append(tokens)
        if "kv_capacity_tokens" not in self.objective:
            return  # a plan written before the field (from_dict derives it)
        claimed = self.objective["kv_capacity_tokens"]
        if claimed != (min(held) if held else None):
            raise InvalidInputError(f"{source}: objective/kv_capacity_tokens: {claimed} is not the "
                                    f"smallest stage's {min(held) if held else None}")


def _kind_capacity(hardware: HardwareInfo, device_type: str | None, index: int,
                   source: str) -> int:
    """The capacity of a stage's device: hardware.capacity_bytes, or on a cluster its kind's."""
    cluster = hardware.cluster
    if not cluster:
        return hardware.capacity_bytes
    kinds = cluster.get("device_types") or {}
    entry = kinds.get(device_type) if isinstance(kinds, dict) else None
    capacity = entry.get("capacity_bytes") if isinstance(entry, dict) else None
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        raise InvalidInputError(f"{source}: stages/{index}/device_type: {device_type!r} is no "
                                "device kind of hardware.cluster with a capacity")
    return capacity


def _whole_numbers(doc: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A copy of ``doc`` with every number the schema types as an integer (and JSON wrote as
    3.0, which the schema accepts) made a Python int."""
    root = root if root is not None else schema
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    for option in schema.get("oneOf", ()):
        if option.get("type") != "null" or doc is None:
            schema = {**option, **{k: v for k, v in schema.items() if k != "oneOf"}}
            return _whole_numbers(doc, schema, root)
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(doc, float) and "integer" in kinds and "number" not in kinds \
            and doc.is_integer():
        return int(doc)
    if isinstance(doc, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: _whole_numbers(v, props.get(k) or (extra if isinstance(extra, dict) else {}),
                                  root) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_whole_numbers(v, schema.get("items", {}), root) for v in doc]
    return doc


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``raw`` the dataclass ``cls`` has: a newer plan's others are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _stage(raw: dict[str, Any], j: int, hardware: HardwareInfo, derived: list[str],
           source: str) -> StagePlan:
    """One stage as the schema allows it, its missing numbers derived: on a cluster the
    device kind and node from the rank, the headroom from the capacity, compute and inbound
    transfer from the latency (a training stage's from its passes; without either, no
    transfer), the KV tokens from the headroom; the others take their defaults. ``derived``
    gets every field left out."""
    s = _known(StagePlan, raw)
    derived += [f"stages/{j}/{f.name}" for f in dataclasses.fields(StagePlan)
                if f.name not in s and f.name not in ("headroom_bytes", "compute_s",
                                                      "transfer_in_s", "device_type", "node",
                                                      "kv_capacity_tokens")]
    s["layers"] = tuple(s["layers"])
    if s.get("resident_layers") is not None:
        s["resident_layers"] = tuple(s["resident_layers"])

    def fill(name: str, value: Any) -> None:
        s[name] = value
        derived.append(f"stages/{j}/{name}")

    ranks = hardware.rank_kinds()
    rank = s["device_rank"]
    for name, value in (("device_type", 0), ("node", 1)):
        if name not in s and ranks and rank < len(ranks):
            fill(name, ranks[rank][value])
    if "headroom_bytes" not in s:
        fill("headroom_bytes", _kind_capacity(hardware, s.get("device_type"), j, source)
             - s["memory_bytes"])
    latency, out = s["latency_s"], s.get("transfer_out_s") or 0.0
    passes = [s.get("forward_s"), s.get("backward_s")]
    if "transfer_in_s" not in s:
        if "compute_s" in s:
            transfer = latency - s["compute_s"] - out
        elif all(isinstance(p, int | float) for p in passes):
            transfer = latency - sum(passes) - out  # type: ignore[arg-type]
        else:
            transfer = 0.0
        fill("transfer_in_s", max(0.0, transfer) if transfer > -1e-9 * latency else transfer)
    if "compute_s" not in s:
        fill("compute_s", latency - s["transfer_in_s"] - out)
    if "kv_capacity_tokens" not in s and s.get("kv_bytes_per_token"):
        fill("kv_capacity_tokens",
             s["headroom_bytes"] * s.get("tp_degree", 1) // s["kv_bytes_per_token"])
    return StagePlan(**s)


def _objective(raw: dict[str, Any], stages: tuple[StagePlan, ...],
               derived: list[str]) -> dict[str, Any]:
    """The objective with the totals a plan may leave out derived from its stages."""
    objective = dict(raw)
    times = [st.latency_s for st in stages]
    held = [st.kv_capacity_tokens for st in stages if st.kv_capacity_tokens is not None]
    values: dict[str, Any] = {
        "sum_stage_latency_s": sum(times),
        "total_transfer_s": sum(st.transfer_in_s + (st.transfer_out_s or 0.0) for st in stages),
        "num_stages": len(stages),
        "bottleneck_stage": times.index(max(times)),
        "kv_capacity_tokens": min(held) if held else None,
    }
    for key, value in values.items():
        if key not in objective and (key != "kv_capacity_tokens" or held):
            objective[key] = value
            derived.append(f"objective/{key}")
    return objective


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300)


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: expected a JSON object")
    return Plan.from_dict(data, source=str(path))
