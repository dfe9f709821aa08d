"""Clusters: nodes of identical devices, a fast link inside a node and a slower one between.

Ranks fill node by node: ranks 0..d-1 are node 0, d..2d-1 node 1, and so on, so pipeline
stage j placed on rank j crosses nodes only between the last rank of one node and the first of
the next (7 -> 8 in a 2 x 8 cluster).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidInputError
from ..core.link import Link, check_number, check_whole
from .catalogue import DEVICES, Device, get_device

__all__ = [
    "INFINIBAND_NDR",
    "INFINIBAND_NDR_SOURCES",
    "PAPER_CLUSTER",
    "Cluster",
    "get_cluster",
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
class Cluster:
    device: Device
    nodes: int
    devices_per_node: int
    intra: Link
    """Between two devices of one node (NVLink/NVSwitch), one direction."""
    inter: Link
    """Between nodes (InfiniBand), one direction."""
    name: str = ""
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("nodes", "devices_per_node"):
            check_whole(getattr(self, attr), f"cluster.{attr}")

    @property
    def size(self) -> int:
        return self.nodes * self.devices_per_node

    def _check_rank(self, rank: int, what: str) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.size:
            raise InvalidInputError(f"{what}: must be a rank in 0..{self.size - 1} of cluster "
                                    f"{self.name or '?'}, got {rank!r}")

    def link_between(self, rank_a: int, rank_b: int) -> Link:
        """The link a transfer from rank_a to rank_b uses: intra within a node, else inter."""
        self._check_rank(rank_a, "rank_a")
        self._check_rank(rank_b, "rank_b")
        if rank_a == rank_b:
            raise InvalidInputError(f"link_between: ranks are the same ({rank_a}): no link")
        same = rank_a // self.devices_per_node == rank_b // self.devices_per_node
        return self.intra if same else self.inter

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device.name, "nodes": self.nodes,
                "devices_per_node": self.devices_per_node, "intra": self.intra.to_dict(),
                "inter": self.inter.to_dict(), "sources": dict(self.sources)}


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
    return Cluster(device, nodes, per_node, device.link, INFINIBAND_NDR, name=name,
                   sources={**sources, **INFINIBAND_NDR_SOURCES})


PAPER_CLUSTER = _standard(DEVICES["h100-sxm"], 2, 8, "2x8-h100-sxm")
"""The paper's cluster: 16 x H100 SXM5, two nodes of 8, NVLink/NVSwitch inside a node (NCCL
~370 GB/s, ~2 us measured), InfiniBand NDR between nodes (50 GB/s per direction)."""

_ALIASES = {"paper": "2x8-h100-sxm"}
_PATTERN = re.compile(r"^(\d+)x(\d+)-(.+)$")


def get_cluster(name: str) -> Cluster:
    """A named cluster: ``paper`` (= ``2x8-h100-sxm``), or ``NODESxPER-DEVICE`` for any device
    in the catalogue, e.g. ``4x8-a100-80gb`` (the device's link inside a node, IB NDR between)."""
    key = _ALIASES.get(name, name)
    if key == PAPER_CLUSTER.name:
        return PAPER_CLUSTER
    match = _PATTERN.match(key)
    if match is None:
        raise InvalidInputError(f"unknown cluster {name!r} (known: paper, 2x8-h100-sxm, or "
                                "NODESxPER-DEVICE such as 4x8-a100-80gb)", field="cluster")
    nodes, per_node = int(match.group(1)), int(match.group(2))
    try:
        device = get_device(match.group(3))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{name!r}: {exc.reason}", field="cluster") from None
    return _standard(device, nodes, per_node, key)
