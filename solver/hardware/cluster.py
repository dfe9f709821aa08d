"""Clusters: nodes of devices of one or more kinds, a link inside each node, one between nodes.

A cluster is an ordered list of nodes; each node holds devices of one or more kinds (in the
order given) and has a link between its devices; one inter-node link joins any two nodes. Ranks
are numbered node by node, and inside a node kind by kind. A device kind either carries its
``capacity_bytes`` or names a catalogue device (as its name, or with ``device``), whose tiers
give the capacity from ``--capacity`` and whose cost model gives the layer times.

Cluster JSON (README: "Clusters")::

    {"name": "lab",
     "device_types": {"big": {"capacity_bytes": 80000000000, "device": "h100-sxm"},
                      "small": {"capacity_bytes": 24000000000}},
     "nodes": [{"devices": {"big": 2, "small": 1},
                "link": {"bandwidth_bytes_per_s": 3e11, "latency_s": 2e-6}},
               {"devices": {"small": 2}, "link": {...}}],
     "inter_node_link": {"bandwidth_bytes_per_s": 5e10, "latency_s": 5e-6}}

Built in: ``paper`` (= ``2x8-h100-sxm``), and ``NODESxPER-DEVICE`` for any catalogue device
(its own link inside a node, InfiniBand NDR between nodes).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError
from ..core.files import check_name, display_path, read_json, shorten
from ..core.link import Link, check_fields, check_number, check_whole
from .catalogue import DEVICES, Device, get_device

__all__ = [
    "INFINIBAND_NDR",
    "INFINIBAND_NDR_SOURCES",
    "MAX_DEVICES",
    "PAPER_CLUSTER",
    "Cluster",
    "ClusterNode",
    "DeviceType",
    "cluster_from_dict",
    "get_cluster",
    "load_cluster",
    "stage_transfer_s",
]

INFINIBAND_NDR = Link(bandwidth_bytes_per_s=50e9, latency_s=5e-6)
INFINIBAND_NDR_SOURCES: dict[str, str] = {
    "inter.bandwidth_bytes_per_s": "[S] InfiniBand NDR port 400 Gb/s = 50 GB/s per direction, one "
                                   "port per GPU (jax-ml/scaling-book; hardware.md)",
    "inter.latency_s": "[P] planning default of ~5 us for an NDR send/recv; hardware.md gives no IB "
                       "latency, and its only inter-node measurement (4x100G EFA, "
                       "smol-training-playbook) is 40-53 us per sendrecv: 5 us is optimistic",
}


@dataclass(frozen=True)
class DeviceType:
    """A kind of device: its capacity, its catalogue device (for layer times), or both."""

    name: str
    capacity_bytes: int | None = None
    device: Device | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"capacity_bytes": self.capacity_bytes,
                "device": None if self.device is None else self.device.name}


@dataclass(frozen=True)
class ClusterNode:
    devices: tuple[tuple[str, int], ...]
    """(kind, count) in rank order."""
    link: Link


@dataclass(frozen=True)
class Cluster:
    name: str
    device_types: tuple[DeviceType, ...]
    nodes: tuple[ClusterNode, ...]
    inter_node_link: Link
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def ranks(self) -> list[tuple[str, int]]:
        """(kind, node) of every rank, in rank order."""
        return [(kind, g) for g, node in enumerate(self.nodes)
                for kind, count in node.devices for _ in range(count)]

    @property
    def size(self) -> int:
        return len(self.ranks)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.device_types)

    def device_type(self, name: str) -> DeviceType:
        return next(t for t in self.device_types if t.name == name)

    def _check_rank(self, rank: int, what: str) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.size:
            raise InvalidInputError(f"must be a rank in 0..{self.size - 1} of cluster "
                                    f"{self.name or '?'}, got {rank!r}", field=what)

    def link_between(self, rank_a: int, rank_b: int) -> Link:
        """The link a transfer from rank_a to rank_b uses: the node's within a node, else the
        inter-node link."""
        self._check_rank(rank_a, "rank_a")
        self._check_rank(rank_b, "rank_b")
        if rank_a == rank_b:
            raise InvalidInputError(f"ranks are the same ({rank_a}): no link", field="rank_b")
        ranks = self.ranks
        node_a, node_b = ranks[rank_a][1], ranks[rank_b][1]
        return self.nodes[node_a].link if node_a == node_b else self.inter_node_link

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name,
                "device_types": {t.name: t.to_dict() for t in self.device_types},
                "nodes": [{"devices": dict(node.devices), "link": node.link.to_dict()}
                          for node in self.nodes],
                "inter_node_link": self.inter_node_link.to_dict(),
                "sources": dict(self.sources)}


def stage_transfer_s(cluster: Cluster, stage_index: int, nbytes: float) -> float:
    """Seconds to bring ``nbytes`` into stage ``stage_index`` (on rank stage_index) from the
    previous stage; 0 for stage 0, which reads the model input locally."""
    cluster._check_rank(stage_index, "stage_index")
    check_number(nbytes, "nbytes")
    if stage_index == 0:
        return 0.0
    return cluster.link_between(stage_index - 1, stage_index).transfer_s(nbytes)


def _standard(device: Device, nodes: int, per_node: int, name: str) -> Cluster:
    """Nodes of ``device`` joined by the device's own link inside a node and IB NDR between."""
    sources = {f"intra.{k}": device.sources.get(f"link.{k}", "") for k in
               ("bandwidth_bytes_per_s", "latency_s")}
    return Cluster(name, (DeviceType(device.name, None, device),),
                   tuple(ClusterNode(((device.name, per_node),), device.link)
                         for _ in range(nodes)),
                   INFINIBAND_NDR, sources={**sources, **INFINIBAND_NDR_SOURCES})


PAPER_CLUSTER = _standard(DEVICES["h100-sxm"], 2, 8, "2x8-h100-sxm")
"""The paper's cluster: 16 x H100 SXM5, two nodes of 8, NVLink/NVSwitch inside a node (NCCL
~370 GB/s, ~2 us measured), InfiniBand NDR between nodes (50 GB/s per direction)."""

MAX_DEVICES = 100_000
"""Devices a cluster may have: a plan keeps one record per rank."""

_ALIASES = {"paper": "2x8-h100-sxm"}
_PATTERN = re.compile(r"^(\d+)x(\d+)-(.+)$")
_TOP = frozenset({"name", "device_types", "nodes", "inter_node_link", "sources"})


def _device_type(name: str, raw: Any) -> DeviceType:
    where = f"device_types.{name}"
    check_fields(raw, frozenset({"capacity_bytes", "device"}), where)
    capacity = None
    if raw.get("capacity_bytes") is not None:
        capacity = int(check_number(raw["capacity_bytes"], f"{where}.capacity_bytes",
                                    positive=True, integral=True))
    device_name = raw.get("device", name if name in DEVICES else None)
    device = None
    if device_name is not None:
        if not isinstance(device_name, str) or device_name not in DEVICES:
            raise InvalidInputError(f"unknown device {shorten(device_name)} (known: "
                                    f"{', '.join(DEVICES)})", field=f"{where}.device")
        device = DEVICES[device_name]
    if capacity is None and device is None:
        raise InvalidInputError("give capacity_bytes, or name a catalogue device (as the kind's "
                                "name or with device) whose tiers --capacity picks from",
                                field=where)
    return DeviceType(name, capacity, device)


def cluster_from_dict(doc: Any, default_name: str = "cluster") -> Cluster:
    """Validate a parsed cluster JSON; errors name the field and the value."""
    check_fields(doc, _TOP)
    raw_types = doc.get("device_types")
    if not isinstance(raw_types, dict) or not raw_types:
        raise InvalidInputError(f"expected an object of device kinds, got {shorten(raw_types)}",
                                field="device_types")
    types = tuple(_device_type(str(name), raw) for name, raw in raw_types.items())
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise InvalidInputError(f"expected a non-empty list of nodes, got {shorten(raw_nodes)}",
                                field="nodes")
    nodes = []
    for g, raw in enumerate(raw_nodes):
        where = f"nodes[{g}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("devices"), dict) \
                or not raw["devices"]:
            raise InvalidInputError("expected {'devices': {kind: count, ...}, 'link': {...}}, "
                                    f"got {shorten(raw, 80)}", field=where)
        check_fields(raw, frozenset({"devices", "link"}), where)
        devices = []
        for kind, count in raw["devices"].items():
            if kind not in raw_types:
                raise InvalidInputError(f"unknown device kind {shorten(kind)} (known: "
                                        f"{', '.join(raw_types)})", field=f"{where}.devices")
            devices.append((str(kind), check_whole(count, f"{where}.devices.{kind}", 0)))
        if sum(c for _, c in devices) == 0:
            raise InvalidInputError("a node needs at least one device", field=f"{where}.devices")
        nodes.append(ClusterNode(tuple(devices), Link.from_dict(raw.get("link"), f"{where}.link")))
    total = sum(c for node in nodes for _, c in node.devices)
    if total > MAX_DEVICES:
        raise InvalidInputError(f"{total:,} devices, more than the {MAX_DEVICES:,} a cluster may "
                                "have", field="nodes")
    inter = Link.from_dict(doc.get("inter_node_link"), "inter_node_link") \
        if "inter_node_link" in doc or len(nodes) > 1 else nodes[0].link
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"expected a non-empty string, got {shorten(name)}", field="name")
    sources = doc.get("sources") or {}
    if not isinstance(sources, dict):
        raise InvalidInputError(f"expected an object, got {shorten(sources)}", field="sources")
    return Cluster(name, types, tuple(nodes), inter, {str(k): str(v) for k, v in sources.items()})


def load_cluster(path: str | Path) -> Cluster:
    """A cluster JSON file; errors name the file, the field and the value."""
    p = Path(path)
    try:
        return cluster_from_dict(read_json(p, "cluster"), default_name=p.stem)
    except InvalidInputError as exc:
        if str(exc).startswith(display_path(p)):
            raise
        raise InvalidInputError(f"{display_path(p)}: {exc}", field="cluster") from None


def get_cluster(name: str) -> Cluster:
    """A cluster JSON file, or a built-in name: ``paper`` (= ``2x8-h100-sxm``), or
    ``NODESxPER-DEVICE`` for any device in the catalogue, e.g. ``4x8-a100-80gb``."""
    check_name(name, "cluster")
    if name.lower().endswith(".json") or os.path.isfile(name):
        return load_cluster(name)
    key = _ALIASES.get(name, name)
    if key == PAPER_CLUSTER.name:
        return PAPER_CLUSTER
    match = _PATTERN.match(key)
    if match is None:
        raise InvalidInputError(f"unknown cluster {shorten(name)} (known: paper, 2x8-h100-sxm, "
                                "NODESxPER-DEVICE such as 4x8-a100-80gb, or a cluster JSON file)",
                                field="cluster")
    nodes, per_node = int(match.group(1)), int(match.group(2))
    if nodes < 1 or per_node < 1 or nodes * per_node > MAX_DEVICES:
        raise InvalidInputError(f"{shorten(name)}: nodes and devices per node must be >= 1, at most "
                                f"{MAX_DEVICES:,} devices in all", field="cluster")
    try:
        device = get_device(match.group(3))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{shorten(name)}: {exc.reason}", field="cluster") from None
    return _standard(device, nodes, per_node, key)
