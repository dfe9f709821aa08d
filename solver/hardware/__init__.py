"""Hardware: the device catalogue (every number with its source), workloads and per-layer
footprints, the cost model (a roofline per operation class, efficiencies and kernel overhead),
and clusters."""

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
from .cost import (
    LayerTerms,
    layer_terms,
    memory_time,
    overhead_time,
    roofline_latency,
    stage_fits_tier,
    terms_latency,
    weight_read_bytes,
)
from .factors import CostFactors
from .footprint import DTYPE_BYTES, KERNELS, LayerFootprint, Workload, footprints, kernels_of
from .training import TrainFootprint, TrainOptions, state_bytes_per_param, train_footprints

__all__ = [
    "DEVICES",
    "DTYPE_BYTES",
    "ENV_VAR",
    "KERNELS",
    "PAPER_CLUSTER",
    "Cluster",
    "ClusterNode",
    "CostFactors",
    "Device",
    "DeviceType",
    "LayerFootprint",
    "LayerTerms",
    "TrainFootprint",
    "TrainOptions",
    "Workload",
    "capacity_for",
    "cluster_from_dict",
    "footprints",
    "get_cluster",
    "get_device",
    "kernels_of",
    "layer_terms",
    "load_cluster",
    "load_devices",
    "memory_time",
    "overhead_time",
    "register_devices",
    "roofline_latency",
    "stage_fits_tier",
    "stage_transfer_s",
    "state_bytes_per_param",
    "terms_latency",
    "train_footprints",
    "weight_read_bytes",
]
