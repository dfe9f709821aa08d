"""Latency of a layer by roofline: max(compute time, memory time).

compute = FLOPs / (peak FLOP/s of the compute dtype x efficiency);
memory  = bytes moved / bandwidth of the memory they are read from.

With no tier (the default, and what the planner used before tiers existed) every byte moves at
the main memory's bandwidth (HBM on GPUs). With a tier, the bytes split in two:
- weight bytes read, at the tier's bandwidth (the weights live there);
- the rest (layer input and output, KV cache), at the tier's bandwidth too by default, because
  the partitioner's capacity counts a stage's activations and buffers along with its weights: a
  plan against the l2 tier assumes all of them fit in L2. Pass ``activations_in_tier=False`` when
  only the weights are pinned (a CUDA persisting window over the weights): the rest then moves
  at the main memory's bandwidth.
The two streams are added, not overlapped: on a GPU all HBM traffic passes through L2, so they
share a path (conservative).

A footprint records bytes moved, not how they split; the weight share is recovered as
bytes moved - input - output - KV cache, where the input is ``input_bytes`` when given, else
taken equal to the layer's output (true for the blocks of a transformer or an MLP).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..core.errors import InvalidInputError
from .catalogue import Device
from .footprint import LayerFootprint, Workload

__all__ = [
    "compute_time",
    "memory_time",
    "roofline_latency",
    "stage_fits_tier",
    "stage_tier_bytes",
    "weight_read_bytes",
]


def compute_time(fp: LayerFootprint, device: Device, workload: Workload) -> float:
    """FLOPs over the derated peak of the workload's compute (activation) dtype."""
    return fp.flops / (device.peak(workload.activation_dtype) * device.efficiency)


def weight_read_bytes(fp: LayerFootprint, input_bytes: int | None = None) -> int:
    """The weight bytes among ``fp.bytes_moved`` (see the module notes)."""
    inbound = fp.activation_bytes if input_bytes is None else input_bytes
    weights = fp.bytes_moved - inbound - fp.activation_bytes - fp.kv_cache_bytes
    return max(0, min(fp.weight_bytes, weights))


def memory_time(fp: LayerFootprint, device: Device, tier: str | None = None, *,
                activations_in_tier: bool = True, input_bytes: int | None = None) -> float:
    """Seconds to move the layer's bytes, given where its weights (and activations) live."""
    main_bw = device.bandwidth(None)
    if tier is None or tier == device.main_memory:
        return fp.bytes_moved / main_bw
    tier_bw = device.bandwidth(tier)
    weights = weight_read_bytes(fp, input_bytes)
    rest = fp.bytes_moved - weights
    return weights / tier_bw + rest / (tier_bw if activations_in_tier else main_bw)


def roofline_latency(fp: LayerFootprint, device: Device, workload: Workload,
                     tier: str | None = None, *, activations_in_tier: bool = True,
                     input_bytes: int | None = None) -> float:
    """max(compute time, memory time). ``tier`` None: every byte at main-memory bandwidth."""
    return max(compute_time(fp, device, workload),
               memory_time(fp, device, tier, activations_in_tier=activations_in_tier,
                           input_bytes=input_bytes))


def stage_tier_bytes(fps: Iterable[LayerFootprint], *, weights_only: bool = False) -> int:
    """Bytes a stage keeps in its tier: weights + activations + buffers (the additive memory
    model), or the weights alone when only they are pinned."""
    total = 0
    for fp in fps:
        total += fp.weight_bytes if weights_only else \
            fp.weight_bytes + fp.activation_bytes + fp.buffer_bytes
    return total


def stage_fits_tier(fps: Iterable[LayerFootprint], device: Device, tier: str, *,
                    weights_only: bool = False) -> bool:
    """Whether a stage's layers fit ``tier`` of ``device`` (see ``stage_tier_bytes``)."""
    if tier not in device.tiers:
        raise InvalidInputError(f"device {device.name}: unknown tier {tier!r} "
                                f"(tiers: {', '.join(device.tiers)})")
    return stage_tier_bytes(fps, weights_only=weights_only) <= device.tiers[tier]
