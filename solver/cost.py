"""Latency of a layer by roofline: max(compute time, memory time).

compute = FLOPs / (peak FLOP/s of the compute dtype x efficiency);
memory  = bytes moved / HBM bandwidth.
"""

from __future__ import annotations

from .footprint import LayerFootprint, Workload
from .hardware import Device

__all__ = ["roofline_latency"]


def roofline_latency(fp: LayerFootprint, device: Device, workload: Workload) -> float:
    peak = device.peak_flops[workload.activation_dtype] * device.efficiency
    return max(fp.flops / peak, fp.bytes_moved / device.hbm_bytes_per_s)
