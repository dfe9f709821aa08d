"""Hardware: the device catalogue (every number with its source), workloads and per-layer
footprints, the roofline cost model, and clusters."""

from __future__ import annotations

from .catalogue import (
    DEVICES,
    ENV_VAR,
    Device,
    capacity_for,
    get_device,
    load_devices,
    register_devices,
)
from .cluster import (
    PAPER_CLUSTER,
    Cluster,
    ClusterNode,
    DeviceType,
    cluster_from_dict,
    get_cluster,
    load_cluster,
    stage_transfer_s,
)
from .cost import memory_time, roofline_latency, stage_fits_tier, weight_read_bytes
from .footprint import DTYPE_BYTES, LayerFootprint, Workload, footprints
from .training import TrainFootprint, TrainOptions, state_bytes_per_param, train_footprints

__all__ = [
    "DEVICES",
    "DTYPE_BYTES",
    "ENV_VAR",
    "PAPER_CLUSTER",
    "Cluster",
    "ClusterNode",
    "Device",
    "DeviceType",
    "LayerFootprint",
    "TrainFootprint",
    "TrainOptions",
    "Workload",
    "capacity_for",
    "cluster_from_dict",
    "footprints",
    "get_cluster",
    "get_device",
    "load_cluster",
    "load_devices",
    "memory_time",
    "register_devices",
    "roofline_latency",
    "stage_fits_tier",
    "stage_transfer_s",
    "state_bytes_per_param",
    "train_footprints",
    "weight_read_bytes",
]
